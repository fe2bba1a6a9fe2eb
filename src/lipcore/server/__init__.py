"""The lipcore realtime server: REST per the contracts, one WebSocket per session.

    from lipcore.server import ServerSettings, create_app
    app = create_app(engine, ServerSettings(api_key="..."))   # an ASGI app; mount it anywhere

Wire protocol: ``docs/protocol.md`` (:mod:`lipcore.server.protocol`). Running, embedding,
security model and limits: ``docs/server.md``.
"""

from __future__ import annotations

from lipcore.server.app import create_app
from lipcore.server.protocol import PROTOCOL_VERSION
from lipcore.server.settings import ServerSettings

__all__ = ["PROTOCOL_VERSION", "ServerSettings", "create_app"]
