"""``lipcore serve``: the realtime server on uvicorn (websockets implementation)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lipcore.cli._common import console, user_errors


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
                              public_url=public_url, worker_id=worker_id or None,
                              drain_timeout_s=drain_timeout, avatar_storage=avatar_storage,
                              redis_url=os.environ.get(redis_url_env) or None,
                              key_max_sessions=key_max_sessions,
                              metering_ttl_s=metering_ttl)
    app = create_app(engine, settings)
    tune_gc()  # short collector pauses: the start-up heap is never scanned again
    auth = "API key required" if api_key else "no API key (loopback only)"
    worker = f"worker {worker_id}; " if worker_id else ""
    console.print(f"lipcore server on http://{host}:{port}  ({worker}{auth}; data in "
                  f"{settings.data_dir})", highlight=False)
    # No per-message deflate: PCM audio hardly compresses and deflate costs CPU per frame.
    # Messages over 1 MiB close the socket (1009) before they are buffered; smaller ones over
    # max_message_bytes get an error event (docs/protocol.md).
    # With a worker id the first SIGTERM drains before uvicorn's shutdown (lipcore.server.cluster).
    run_server(app, cluster=app.state.lipcore.cluster if worker_id else None, host=host,
               port=port, ws="websockets", log_config=None, log_level=log_level.lower(),
               ws_per_message_deflate=False,
               ws_max_size=max(settings.max_message_bytes, 1 << 20))


def register(app: typer.Typer) -> None:
    app.command()(serve)
