"""A complete Pipecat bot with a lipcore avatar, no cloud service needed.

    python examples/pipecat_bot.py --data-dir ~/.lipcore --port 8765
    # open http://127.0.0.1:8765/ : lipcore's own web client, now a Pipecat client

The pipeline::

    FastAPIWebsocketTransport.input()   lipcore web client → text (LipcoreFrameSerializer)
    ScriptedLLM                         stands in for an LLM: answers every user message
    LipcoreTTSService                   espeak-ng offline: audio + word times + visemes
    FastAPIWebsocketTransport.output()  → audio and viseme events, protocol v1

lipcore's own server (``lipcore.server.create_app``) is mounted behind it for the rest: the web
client's files, the avatar list and assets. Only ``POST /session-2d`` and the WebSocket are the
bot's. See examples/README.md for swapping in real STT and LLM services.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from lipcore_pipecat import LipcoreFrameSerializer, LipcoreTTSService
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner
from pydantic import BaseModel

import lipcore
from lipcore.errors import LipcoreError
from lipcore.server.app import create_app
from lipcore.server.avatars import AvatarStore
from lipcore.server.settings import ServerSettings

SAMPLE_RATE = 24000  # the pipeline's output rate: espeak's 22 050 Hz is resampled to it


class ScriptedLLM(FrameProcessor):
    """Stands in for an LLM (and its context aggregator): every user message (typed text from
    the client, or a final transcription from an STT service) gets an answer, streamed as an
    LLM streams it, a few words per text frame. ``reply`` makes the answer."""

    def __init__(self, reply: Callable[[str], str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reply = reply or (lambda text: f"You said: {text}")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        text: str | None = None
        if isinstance(frame, LLMMessagesAppendFrame):
            text = " ".join(str(m.get("content", "")) for m in frame.messages
                            if isinstance(m, dict) and m.get("role") == "user")
        elif isinstance(frame, TranscriptionFrame):
            text = frame.text
        if text is None or not text.strip():
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        words = self._reply(text.strip()).split(" ")
        for i in range(0, len(words), 3):
            await self.push_frame(LLMTextFrame(" ".join(words[i:i + 3]) + " "))
        await self.push_frame(LLMFullResponseEndFrame())


class SessionCreate(BaseModel):
    avatar_id: str
    voice_id: str = "en-us"
    tts: str | None = None


def create_bot_app(
    data_dir: Path,
    *,
    engine: lipcore.Engine | None = None,
    reply: Callable[[str], str] | None = None,
    greeting: str | None = "Hello! Type something and I will answer.",
) -> FastAPI:
    """The bot as an ASGI app: lipcore's server for files and avatars, a Pipecat pipeline per
    client WebSocket."""
    engine = engine or lipcore.Engine()
    settings = ServerSettings(data_dir=data_dir)
    avatars = AvatarStore(settings, engine)
    sessions: dict[str, dict[str, Any]] = {}
    app = FastAPI(title="lipcore Pipecat bot")

    @app.exception_handler(LipcoreError)
    async def _lipcore_error(_request: Request, exc: LipcoreError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": str(exc)},
                            status_code=getattr(exc, "http_status", 500))

    @app.post("/session-2d")
    async def create_session(request: Request, body: SessionCreate) -> dict[str, str]:
        rec = avatars.get(body.avatar_id)  # LipcoreError (404) if unknown: as lipcore's server
        base = str(request.base_url).rstrip("/")
        lipsync = rec.describe(
            lambda rel: f"{base}/avatars/{rec.avatar_id}/files/{rel}")["lipsync_assets"]
        sid = secrets.token_urlsafe(12)
        sessions[sid] = {"lipsync": lipsync, "voice": body.voice_id, "tts": body.tts}
        return {"session_id": sid, "ws_url": f"{base.replace('http', 'ws', 1)}/pipecat/{sid}"}

    @app.websocket("/pipecat/{sid}")
    async def pipecat_ws(websocket: WebSocket, sid: str) -> None:
        session = sessions.pop(sid, None)
        await websocket.accept()
        if session is None:
            await websocket.close(4404, "unknown session")
            return
        await run_bot(websocket, session, engine=engine, reply=reply, greeting=greeting,
                      sid=sid, visemes=websocket.query_params.get("visemes", "inline"))

    app.mount("/", create_app(engine, settings))
    return app


async def run_bot(websocket: WebSocket, session: dict[str, Any], *, engine: lipcore.Engine,
                  reply: Callable[[str], str] | None, greeting: str | None, sid: str,
                  visemes: str) -> None:
    """One client's pipeline, until the client goes."""
    if visemes not in ("inline", "batched"):
        await websocket.close(4400, f"visemes={visemes} is not served here")
        return
    serializer = LipcoreFrameSerializer(
        session_id=sid, lipsync=session["lipsync"], visemes=visemes, sample_rate=SAMPLE_RATE,
        fps=engine.settings.fps, lead_ms=engine.settings.lead_ms)
    transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
        audio_in_enabled=False, audio_out_enabled=True, audio_out_sample_rate=SAMPLE_RATE,
        serializer=serializer))
    tts = LipcoreTTSService(engine=engine, voice=session["voice"], tts=session["tts"])
    pipeline = Pipeline([transport.input(), ScriptedLLM(reply), tts, transport.output()])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_out_sample_rate=SAMPLE_RATE),
                            idle_timeout_secs=None, enable_rtvi=False)

    @transport.event_handler("on_client_connected")  # type: ignore[untyped-decorator]
    async def _connected(_transport: Any, _ws: Any) -> None:
        await worker.queue_frame(serializer.hello_frame())
        if greeting:
            await worker.queue_frame(TTSSpeakFrame(greeting))

    @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
    async def _gone(_transport: Any, _ws: Any) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path("~/.lipcore").expanduser(),
                   help="lipcore's data directory (avatars/ in it; build one with "
                        "`lipcore avatarize PHOTO`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    uvicorn.run(create_bot_app(args.data_dir), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
