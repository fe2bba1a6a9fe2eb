"""lipcore realtime server."""
