"""Server settings: every limit the server enforces, in one place (``docs/server.md``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import platformdirs

__all__ = ["ServerSettings", "default_data_dir"]


def default_data_dir() -> Path:
    """``$LIPCORE_DATA_DIR``, else the user data directory (``platformdirs``)."""
    env = os.environ.get("LIPCORE_DATA_DIR")
    return Path(env) if env else platformdirs.user_data_path("lipcore") / "server"


@dataclass(frozen=True)
class ServerSettings:
    """Configuration of :func:`lipcore.server.create_app`.

    ``api_key``: when set, every REST call (but ``/healthz`` and avatar asset files, which are
    capability URLs with unguessable ids) needs it in ``X-API-Key`` or ``Authorization: Bearer``.
    ``public_url``: the URL clients reach the server at (behind a proxy), used to build
    ``ws_url`` and asset URLs; by default they are built from the request.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    api_key: str | None = field(default=None, repr=False)
    public_url: str | None = None
    # avatars
    default_backend: str = "sprites"
    idle_seconds: float = 4.0
    idle_fps: float = 25.0
    max_upload_bytes: int = 20_000_000
    max_request_bytes: int = 1_000_000  # any other request body (JSON)
    max_image_pixels: int = 40_000_000
    max_image_side: int = 2048
    build_concurrency: int = 1
    max_pending_builds: int = 4
    # sessions
    max_sessions: int = 1000
    max_text_chars: int = 5000
    max_stream_chars: int = 20_000
    max_queued_utterances: int = 8
    session_idle_timeout_s: float = 600.0
    reconnect_grace_s: float = 30.0
    stream_idle_timeout_s: float = 30.0
    stop_ramp_ms: float = 150.0
    viseme_events: Literal["batched", "single", "inline"] = "batched"
    # connections
    transport: str = "websocket"
    send_queue_max_messages: int = 512
    send_queue_max_bytes: int = 1_000_000
    send_timeout_s: float = 5.0
    max_message_bytes: int = 65_536
    max_invalid_messages: int = 20
    janitor_interval_s: float = 0.5
    # web client
    serve_web: bool = True
    # several workers behind one balancer (docs/deploy.md, lipcore.server.cluster)
    worker_id: str | None = None  # put into session ids and every URL handed out: /w/<id>/...
    drain_timeout_s: float = 30.0  # SIGTERM: how long utterances in flight may still run
    redis_url: str | None = field(default=None, repr=False)  # usage and limits across workers
    avatar_storage: str | None = None  # e.g. "s3://bucket/prefix"; None: data_dir only
    key_max_sessions: int | None = None  # live sessions per API key (all workers with Redis)
    metering_interval_s: float = 2.0  # Redis: how often usage is added and sessions renewed
    metering_ttl_s: float = 15.0  # Redis: a killed worker's sessions stop counting after this


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine only."""
    import ipaddress

    if host.strip().lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name that may resolve anywhere


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without an API key (raises ``InsecureBindError``)."""
    from lipcore.errors import LipcoreError

    class InsecureBindError(LipcoreError):
        code = "insecure_bind"

    if not api_key and not is_loopback(host):
        raise InsecureBindError(
            f"refusing to listen on {host!r} without an API key: anyone who can reach this "
            "address could build avatars and spend your TTS budget. Set a key in an environment "
            "variable (e.g. export LIPCORE_API_KEY=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')) and pass --api-key-env LIPCORE_API_KEY, "
            "or bind to 127.0.0.1"
        )
