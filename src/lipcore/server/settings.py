"""Server settings: every limit the server enforces, in one place (``docs/server.md``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import platformdirs

__all__ = ["ServerSettings", "check_data_dir", "default_data_dir", "key_weakness"]


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
    #: Where builds run: a fresh worker process each ("process": the event loop keeps its
    #: latency, memory returns after each build; the worker uses the default plugins) or a
    #: thread of the server ("thread": uses the server's own engine object).
    build_isolation: Literal["process", "thread"] = "process"
    #: How much lower a build worker's CPU priority is than the server's (``nice``): on a
    #: machine with fewer free cores than builds, the event loop still gets the CPU first.
    build_nice: int = 10
    max_pending_builds: int = 4
    # sessions
    max_sessions: int = 1000
    max_text_chars: int = 5000
    max_stream_chars: int = 20_000
    max_queued_utterances: int = 8
    session_idle_timeout_s: float = 600.0
    reconnect_grace_s: float = 30.0
    stream_idle_timeout_s: float = 30.0
    max_stream_audio_s: float = 600.0  # one streamed recording (audio_start … audio_end)
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
    # hardening (docs/server.md "Security"): who may talk to the server, and how long a
    # connection may hold a slot before it has said what it wants
    #: Host names (``Host`` header, without port) the server answers. IP literals, ``localhost``
    #: and ``*.localhost`` are always allowed (a DNS-rebinding page cannot produce them), as is
    #: the host of ``public_url``; ``"*"`` allows any (only behind a proxy that checks Host).
    allowed_hosts: tuple[str, ...] = ()
    #: Origins (``scheme://host[:port]``) whose browser requests are accepted besides the
    #: server's own origin; ``"*"`` accepts any.
    allowed_origins: tuple[str, ...] = ()
    #: Peer addresses whose ``X-Forwarded-Host``/``X-Forwarded-Proto``/``X-Forwarded-Prefix``
    #: are believed when building issued URLs (a reverse proxy on this machine: 127.0.0.1).
    forwarded_allow_ips: tuple[str, ...] = ()
    #: Client tokens (``POST /tokens``): the longest and the default lifetime.
    client_token_max_ttl_s: int = 24 * 3600
    client_token_default_ttl_s: int = 3600
    #: A request line and headers must arrive within this (slowloris).
    header_timeout_s: float = 10.0
    #: An idle keep-alive connection is closed after this.
    keepalive_timeout_s: float = 5.0
    #: A request body that stalls this long between chunks is answered 408.
    body_idle_timeout_s: float = 30.0
    #: Open connections (HTTP and WebSocket) at most; more are closed at once. Clamped below
    #: the process's open-file limit at start.
    max_connections: int = 4096
    #: Connections still in their HTTP phase from one peer address at most (0: no bound;
    #: behind a reverse proxy every connection comes from the proxy).
    max_connections_per_ip: int = 256
    #: Serve the OpenAPI document (``/openapi.json``, behind the key) — no Swagger UI page.
    openapi: bool = True
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

    if api_key and not is_loopback(host):
        weakness = key_weakness(api_key)
        if weakness:
            raise InsecureBindError(
                f"refusing to listen on {host!r} with a weak API key: {weakness}. Make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    if not api_key and not is_loopback(host):
        raise InsecureBindError(
            f"refusing to listen on {host!r} without an API key: anyone who can reach this "
            "address could build avatars and spend your TTS budget. Set a key in an environment "
            "variable (e.g. export LIPCORE_API_KEY=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')) and pass --api-key-env LIPCORE_API_KEY, "
            "or bind to 127.0.0.1"
        )


#: The shortest API key accepted for a non-loopback bind (a token_urlsafe(32) key has 43).
MIN_KEY_CHARS = 16


def key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak to guard a server others can reach, or ``None``: at least
    :data:`MIN_KEY_CHARS` characters, no surrounding whitespace, and not one repeated pattern
    (at least 8 distinct characters). The key's value never appears in the answer."""
    if key != key.strip():
        return "it starts or ends with whitespace (a copy-paste accident?)"
    if len(key) < MIN_KEY_CHARS:
        return f"it has {len(key)} characters; at least {MIN_KEY_CHARS} are needed"
    if len(set(key)) < 8:
        return "it uses fewer than 8 distinct characters"
    return None


def check_data_dir(data_dir: Path) -> None:
    """Refuse to start on a data directory avatars cannot be written to (raises
    ``DataDirError``, HTTP-less: the server never starts): it must be a directory (created
    when missing) in which a file can be created."""
    import tempfile

    from lipcore.errors import LipcoreError

    class DataDirError(LipcoreError):
        code = "bad_data_dir"

    root = Path(data_dir)
    if root.exists() and not root.is_dir():
        raise DataDirError(f"the data directory {str(root)!r} is a file, not a directory; "
                           "pass --data-dir (or LIPCORE_DATA_DIR) naming a directory")
    try:
        (root / "avatars").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root / "avatars", prefix=".write-check-"):
            pass
    except OSError as exc:
        raise DataDirError(
            f"the data directory {str(root)!r} is not writable ({exc.strerror or exc}); avatars "
            "could not be built. Fix its permissions or pass another --data-dir"
        ) from None
