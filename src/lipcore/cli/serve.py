"""``lipcore serve``: the realtime server on uvicorn (websockets implementation)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from lipcore.cli._common import console, user_errors
from lipcore.errors import LipcoreError


class ServerConfigError(LipcoreError):
    """The server's own configuration cannot work (checked at start)."""

    code = "server_config"


@user_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Anything but "
                             "loopback requires an API key."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where avatars persist "
                                         "(default: $LIPCORE_DATA_DIR or the user data dir)."),
    api_key_env: str = typer.Option("LIPCORE_API_KEY", "--api-key-env",
                                    help="Name of the environment variable holding the API key "
                                    "(the key itself never goes on the command line)."),
    tts: str | None = typer.Option(None, "--tts", help="Default TTS source (default: espeak)."),
    public_url: str | None = typer.Option(None, "--public-url",
                                          help="URL clients reach the server at (behind a "
                                          "proxy); used in ws_url and asset URLs."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="A host name clients "
                                           "use to reach the server (repeatable; IP addresses and "
                                           "localhost always work; '*' allows any)."),
    allowed_origin: list[str] = typer.Option([], "--allowed-origin", help="A web origin "
                                             "(https://app.example.com) whose pages may call the "
                                             "server (repeatable)."),
    forwarded_allow_ip: list[str] = typer.Option([], "--forwarded-allow-ip", help="Address of "
                                                 "a reverse proxy whose X-Forwarded-Host/-Proto/"
                                                 "-Prefix are trusted (repeatable)."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds a client "
                                         "has to send its request headers."),
    keepalive_timeout: float = typer.Option(5.0, "--keepalive-timeout",
                                            help="Idle keep-alive connections close after this."),
    max_connections: int = typer.Option(4096, "--max-connections",
                                        help="Open connections at most (all clients)."),
    max_connections_per_ip: int = typer.Option(256, "--max-connections-per-ip",
                                               help="HTTP connections from one address at most "
                                               "(0: no bound, e.g. behind a reverse proxy)."),
    worker_id: str | None = typer.Option(None, "--worker-id", envvar="LIPCORE_WORKER_ID",
                                         help="This worker's id behind a load balancer: put "
                                         "into session ids and URLs (/w/<id>/...); SIGTERM "
                                         "then drains first (docs/deploy.md)."),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", help="SIGTERM with a worker "
                                        "id: seconds utterances in flight may still run."),
    avatar_storage: str | None = typer.Option(None, "--avatar-storage",
                                              envvar="LIPCORE_AVATAR_STORAGE",
                                              help="Shared avatar storage, e.g. "
                                              "s3://bucket/prefix (default: the data dir)."),
    redis_url_env: str = typer.Option("LIPCORE_REDIS_URL", "--redis-url-env",
                                      help="Environment variable holding the Redis URL that "
                                      "aggregates usage and limits across workers (unset: "
                                      "per process)."),
    key_max_sessions: int | None = typer.Option(None, "--key-max-sessions",
                                                help="Live sessions one API key may hold (on "
                                                "all workers when Redis is set)."),
    metering_ttl: float = typer.Option(15.0, "--metering-ttl", help="With Redis: seconds "
                                       "after which a vanished worker's sessions stop "
                                       "counting against their key."),
    json_logs: bool = typer.Option(False, "--json-logs", help="Log JSON lines."),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Run the realtime server: REST + one WebSocket per session (docs/server.md)."""
    from lipcore.engine import Engine, EngineSettings
    from lipcore.server import ServerSettings, create_app
    from lipcore.server.app import tune_gc
    from lipcore.server.cluster import check_worker_id, run_server
    from lipcore.server.logs import configure_logging
    from lipcore.server.security import uvicorn_options
    from lipcore.server.settings import check_bind, default_data_dir

    api_key = os.environ.get(api_key_env) or None
    if worker_id:
        try:
            check_worker_id(worker_id)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--worker-id") from None
    check_bind(host, api_key)
    configure_logging(json_lines=json_logs, level=log_level, secrets=[api_key] if api_key else [])
    engine = Engine(settings=EngineSettings(default_tts=tts) if tts else None)
    settings = ServerSettings(data_dir=data_dir or default_data_dir(), api_key=api_key,
                              public_url=public_url, allowed_hosts=tuple(allowed_host),
                              allowed_origins=tuple(allowed_origin),
                              forwarded_allow_ips=tuple(forwarded_allow_ip),
                              header_timeout_s=header_timeout,
                              keepalive_timeout_s=keepalive_timeout,
                              max_connections=max_connections,
                              max_connections_per_ip=max_connections_per_ip,
                              worker_id=worker_id or None,
                              drain_timeout_s=drain_timeout, avatar_storage=avatar_storage,
                              redis_url=os.environ.get(redis_url_env) or None,
                              key_max_sessions=key_max_sessions,
                              metering_ttl_s=metering_ttl)
    check_backends(engine)
    _raise_fd_limit()
    app = create_app(engine, settings)
    tune_gc()  # short collector pauses: the start-up heap is never scanned again
    auth = "API key required" if api_key else "no API key (loopback only)"
    worker = f"worker {worker_id}; " if worker_id else ""
    console.print(f"lipcore server on http://{host}:{port}  ({worker}{auth}; data in "
                  f"{settings.data_dir})", highlight=False)
    # No per-message deflate: PCM audio hardly compresses and deflate costs CPU per frame.
    # Messages over 1 MiB close the socket (1009) before they are buffered; smaller ones over
    # max_message_bytes get an error event (docs/protocol.md).
    # The connection bounds (header timeout, connection caps, keep-alive) are uvicorn options
    # (lipcore.server.security.uvicorn_options); X-Forwarded-* are read by the app itself,
    # only from --forwarded-allow-ip peers.
    # With a worker id the first SIGTERM drains before uvicorn's shutdown (lipcore.server.cluster).
    run_server(app, cluster=app.state.lipcore.cluster if worker_id else None, host=host,
               port=port, ws="websockets", log_config=None, log_level=log_level.lower(),
               ws_per_message_deflate=False,
               ws_max_size=max(settings.max_message_bytes, 1 << 20),
               **uvicorn_options(settings))


def _raise_fd_limit() -> None:
    """Raise the soft open-file limit to the hard one: every connection is a file, and the
    connection cap is clamped below the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def check_backends(engine: Any) -> None:
    """At start: every installed lip-sync back end is created (bad settings fail here, with the
    valid values) and asked whether it can run. One that the operator configured (a model path
    set) but that cannot run stops the start with its reason; one merely not configured is a
    warning (its avatars are listed as unusable and uploads do not offer it)."""
    from lipcore.errors import LipcoreError
    from lipcore.server.app import backend_availability

    for entry in backend_availability(engine):
        if entry["available"]:
            continue
        try:
            configured = bool(getattr(engine.lipsync_backend(entry["type"]), "configured", False))
        except LipcoreError:  # could not even be created: its settings are wrong
            configured = True
        if configured:
            raise ServerConfigError(
                f"lip-sync back end {entry['type']!r} is configured but cannot run: "
                f"{entry['reason']}"
            )
        console.print(f"[yellow]note[/]: {escape(entry['type'])} avatars cannot run here: "
                      f"{escape(str(entry['reason']))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
