"""The ASGI application: REST per the contracts, one WebSocket per session, asset serving."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

import lipcore
from lipcore.errors import LimitError, LipcoreError
from lipcore.models import (
    AvatarizeResponse,
    LipsyncAssets,
    OkResponse,
    SessionCreate,
    SessionCreated,
    SpeakRequest,
)
from lipcore.server.avatars import AvatarRecord, AvatarStore
from lipcore.server.errors import UnauthorizedError
from lipcore.server.sessions import Session, SessionManager, Usage
from lipcore.server.settings import ServerSettings

__all__ = ["create_app", "tune_gc"]

logger = logging.getLogger("lipcore.server")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"


# --------------------------------------------------------------------------- response models


class LipsyncAssetsOut(LipsyncAssets):
    files: dict[str, str] = Field(default_factory=dict,
                                  description="every asset of the avatar: key → URL")


class AvatarOut(AvatarizeResponse):
    lipsync_assets: LipsyncAssetsOut
    preview_url: str | None = None
    idle: dict[str, float] | None = None
    photo: dict[str, int] | None = None
    created_at: str | None = None


class AvatarListOut(BaseModel):
    avatars: list[AvatarOut]


class VoiceOut(BaseModel):
    id: str
    name: str
    language: str


class VoiceListOut(BaseModel):
    tts: str
    voices: list[VoiceOut]


class UsageOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str
    tts_characters: int
    audio_seconds: float
    utterances: int
    stopped: int
    errors: int
    dropped_viseme_messages: int


class SessionStatus(BaseModel):
    session_id: str
    avatar_id: str
    voice_id: str
    connected: bool
    speaking: bool
    queued_utterances: int
    last_close: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="stable error code")
    detail: str = Field(description="what went wrong and what to do")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 404, 409, 410, 413, 422, 429, 502)
}


# --------------------------------------------------------------------------- app state


class _State:
    def __init__(self, engine: lipcore.Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.avatars = AvatarStore(settings, engine)
        self.sessions = SessionManager(settings, engine)
        self.started = time.time()
        self._key = settings.api_key.encode() if settings.api_key else None

    def check_key(self, presented: str | None) -> None:
        if self._key is None:
            return
        # Constant-time comparison; an empty/missing key compares against a dummy of equal
        # length so the timing says nothing about the key either.
        given = (presented or "").encode()
        ok = hmac.compare_digest(given, self._key)
        if not ok:
            raise UnauthorizedError(
                "missing or wrong API key: send it in the X-API-Key header "
                "(or Authorization: Bearer <key>)"
            )


class _BodyLimit:
    """ASGI middleware: refuse a request body over its bound with 413 *before* reading it
    (``Content-Length``) or as soon as a streamed body passes it, instead of letting the form
    parser spool a huge upload to disk first. ``POST /avatarize-2d`` may carry
    ``max_upload_bytes`` (plus multipart framing); every other body ``max_request_bytes``."""

    _SLACK = 64 * 1024  # multipart boundaries, headers and the small form fields

    class _TooLarge(Exception):
        pass

    def __init__(self, app: Any, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, path: str) -> tuple[int, str]:
        if path.rstrip("/").endswith("/speak_audio"):  # a recording to speak (issue 14)
            return (self.settings.max_upload_bytes + self._SLACK,
                    f"the audio is larger than the {self.settings.max_upload_bytes} byte limit; "
                    "send a shorter or compressed recording")
        if path.rstrip("/").endswith("/avatarize-2d"):
            return (self.settings.max_upload_bytes + self._SLACK,
                    f"the upload is larger than the {self.settings.max_upload_bytes} byte limit; "
                    "send a smaller photo (2048 px on the long side is plenty)")
        return (self.settings.max_request_bytes,
                f"the request body is larger than the {self.settings.max_request_bytes} byte "
                "limit")

    async def _refuse(self, send: Any, detail: str) -> None:
        body = json.dumps({"error": "limit_exceeded", "detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, detail = self._limit(str(scope.get("path", "")))
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(send, detail)
                return
        seen = 0
        exceeded = False

        async def limited_receive() -> Any:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise self._TooLarge
            return message

        async def guarded_send(message: Any) -> None:
            if not exceeded:  # the app's own answer to the aborted body is replaced
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(send, detail)


def _state(request: Request) -> _State:
    st: _State = request.app.state.lipcore
    return st


def _base_url(request: Request | WebSocket, settings: ServerSettings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    # root_path carries the mount prefix when a host app mounts us (base_url would not).
    scheme = {"ws": "http", "wss": "https"}.get(request.url.scheme, request.url.scheme)
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{scheme}://{request.url.netloc}{root}"


def _asset_url(request: Request | WebSocket, st: _State, avatar_id: str, rel: str) -> str:
    return f"{_base_url(request, st.settings)}/avatars/{avatar_id}/files/{rel}"


def _ws_url(request: Request, st: _State, session: Session) -> str:
    base = _base_url(request, st.settings)
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return f"{base}/ws/{session.session_id}?{urlencode({'token': session.token})}"


def _describe_avatar(request: Request | WebSocket, st: _State, rec: AvatarRecord) -> dict[str, Any]:
    return rec.describe(lambda rel: _asset_url(request, st, rec.avatar_id, rel))


async def require_key(request: Request) -> None:
    """REST auth: the configured API key in ``X-API-Key`` or ``Authorization: Bearer``."""
    st = _state(request)
    presented = request.headers.get("x-api-key")
    if presented is None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
    st.check_key(presented)


Auth = Depends(require_key)


# --------------------------------------------------------------------------- routes


async def _audio_driven_renderer(st: _State, rec: Any) -> Any:
    """For an avatar whose back end renders the mouth from audio (variant C): its renderer,
    opened in a worker thread (the model loads there); ``None`` for viseme-driven avatars."""
    backend = st.engine.lipsync_backend(rec.lipsync_type, avatar=rec.avatar_id)
    if getattr(backend, "driven_by", "visemes") == "visemes":
        return None

    def open_renderer() -> Any:
        from lipcore.avatar.store import load_avatar

        return backend.open_renderer(load_avatar(rec.directory))

    return await asyncio.to_thread(open_renderer)


def _routes() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness and a few counters (no secrets)."""
        st = _state(request)
        return {
            "ok": True,
            "version": lipcore.__version__,
            "sessions": len(st.sessions.sessions),
            "connected": sum(1 for s in st.sessions.sessions.values() if s.connected),
            "uptime_s": round(time.time() - st.started, 1),
        }

    @router.get("/metrics", tags=["operations"], dependencies=[Auth])
    async def metrics(request: Request) -> dict[str, Any]:
        """Server-added latency (TTS chunk in → audio frame written to the socket) and event
        lag (chunk due on the TTS's schedule → frame written), in ms, for sources that stamp
        their chunks (``lipcore.testing.ReplayTTSSource``), and session counts."""
        st = _state(request)
        return {"latency": st.sessions.latency.summary(), "lag": st.sessions.lag.summary(),
                "sessions": len(st.sessions.sessions)}

    @router.post("/avatarize-2d", tags=["avatars"], dependencies=[Auth],
                 response_model=AvatarOut, responses=_ERRORS)
    async def avatarize(
        request: Request,
        hero_image: Annotated[UploadFile, File(description="the photo (JPEG/PNG/WebP)")],
        backend: Annotated[str | None, Form(description="sprites | mesh | onnx")] = None,
    ) -> dict[str, Any]:
        """Build an avatar from one photo: idle loop + lipsync assets. Takes a while (seconds
        to a minute); builds run in worker threads with bounded concurrency."""
        st = _state(request)
        limit = st.settings.max_upload_bytes
        data = await hero_image.read(limit + 1)
        if len(data) > limit:
            raise LimitError(
                f"hero_image is larger than the {limit} byte upload limit; send a smaller photo "
                "(2048 px on the long side is plenty)"
            )
        rec = await st.avatars.build(data, backend=backend)
        return _describe_avatar(request, st, rec)

    @router.get("/avatars", tags=["avatars"], dependencies=[Auth],
                response_model=AvatarListOut, responses=_ERRORS)
    async def list_avatars(request: Request) -> dict[str, Any]:
        """The avatars this server has (newest first, at most 1000), with their URLs. Behind
        the API key when one is set: the ids are the capability to their asset files."""
        st = _state(request)
        out = []
        for avatar_id in st.avatars.list_ids():
            with contextlib.suppress(LipcoreError):  # removed or damaged meanwhile: skip it
                out.append(_describe_avatar(request, st, st.avatars.get(avatar_id)))
        return {"avatars": out}

    @router.get("/voices", tags=["sessions"], dependencies=[Auth],
                response_model=VoiceListOut, responses=_ERRORS)
    async def list_voices(request: Request, tts: str | None = None) -> dict[str, Any]:
        """The voices of a TTS source (default: the engine's default source); a session's
        ``voice_id`` is one of these ids or a language code."""
        st = _state(request)
        source = st.engine.tts(tts)
        voices = await source.voices()
        return {
            "tts": source.name,
            "voices": [
                {"id": v.id, "name": v.name, "language": v.language} for v in voices
            ],
        }

    @router.get("/avatars/{avatar_id}", tags=["avatars"], dependencies=[Auth],
                response_model=AvatarOut, responses=_ERRORS)
    async def get_avatar(request: Request, avatar_id: str) -> dict[str, Any]:
        """An avatar's URLs and facts (avatars persist on disk across restarts)."""
        st = _state(request)
        return _describe_avatar(request, st, st.avatars.get(avatar_id))

    @router.get("/avatars/{avatar_id}/files/{path:path}", tags=["avatars"],
                name="avatar_file", responses=_ERRORS)
    async def avatar_file(request: Request, avatar_id: str, path: str) -> Response:
        """An asset file. No API key needed (browsers load these in <video>/<img>): the
        unguessable avatar id is the capability. ETag + long caching (assets never change
        under an id); HTTP range requests (206) for the video."""
        st = _state(request)
        file = st.avatars.get(avatar_id).file(path)
        stat = file.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        headers = {"cache-control": "public, max-age=31536000, immutable", "etag": etag,
                   "last-modified": formatdate(stat.st_mtime, usegmt=True)}
        inm = request.headers.get("if-none-match")
        if inm and etag in [t.strip() for t in inm.split(",")]:
            return Response(status_code=304, headers=headers)
        return FileResponse(file, headers=headers, stat_result=stat)

    @router.post("/session-2d", tags=["sessions"], dependencies=[Auth],
                 response_model=SessionCreated, responses=_ERRORS)
    async def create_session(request: Request, body: SessionCreate) -> SessionCreated:
        """Open a live session; connect a WebSocket to ``ws_url`` (it carries the session's own
        token: hand it only to that session's client)."""
        st = _state(request)
        rec = st.avatars.get(body.avatar_id)
        lipsync = _describe_avatar(request, st, rec)["lipsync_assets"]
        patcher = await _audio_driven_renderer(st, rec)
        session = await st.sessions.create(avatar_id=rec.avatar_id, voice_id=body.voice_id,
                                           tts=body.tts, lipsync=lipsync)
        session.patcher = patcher
        return SessionCreated(session_id=session.session_id,
                              ws_url=_ws_url(request, st, session))

    @router.post("/session-2d/{session_id}/speak", tags=["sessions"], dependencies=[Auth],
                 response_model=OkResponse, responses=_ERRORS)
    async def speak(request: Request, session_id: str, body: SpeakRequest) -> OkResponse:
        """Queue text (or with ``barge_in`` replace what plays). 413 if too long, 429 if the
        queue is full, 409 if no client is connected."""
        session = _state(request).sessions.get(session_id)
        await session.speak(body.text, barge_in=body.barge_in)
        return OkResponse()

    @router.post("/session-2d/{session_id}/speak_audio", tags=["sessions"],
                 dependencies=[Auth], response_model=OkResponse, responses=_ERRORS)
    async def speak_audio(
        request: Request,
        session_id: str,
        audio: Annotated[UploadFile, File(description="speech: WAV, MP3, OGG, M4A, FLAC…")],
        text: Annotated[str | None, Form(description="its words, if known")] = None,
        language: Annotated[str | None, Form(description="the text's language")] = None,
        barge_in: Annotated[bool, Form()] = False,
    ) -> OkResponse:
        """Speak a recording: queued like text (or with ``barge_in`` replacing what plays);
        the client gets its audio at the session's rate with visemes estimated from it (the
        text, if given, aligned to it). 422 if it is not decodable audio, 413 if too large."""
        from lipcore.audio_input import decode_audio_bytes

        st = _state(request)
        session = st.sessions.get(session_id)
        limit = st.settings.max_upload_bytes
        data = await audio.read(limit + 1)
        if len(data) > limit:
            raise LimitError(f"the audio is larger than the {limit} byte upload limit")
        pcm = await asyncio.to_thread(
            decode_audio_bytes, data, session.sample_rate, name=audio.filename or "audio"
        )
        await session.speak_audio(pcm, text=text, language=language, barge_in=barge_in)
        return OkResponse()

    @router.post("/session-2d/{session_id}/stop", tags=["sessions"], dependencies=[Auth],
                 response_model=OkResponse, responses=_ERRORS)
    async def stop(request: Request, session_id: str) -> OkResponse:
        """Barge-in: cancel the utterance at once and drop the queue."""
        session = _state(request).sessions.get(session_id)
        await session.stop(reason="client")
        return OkResponse()

    @router.get("/session-2d/{session_id}", tags=["sessions"], dependencies=[Auth],
                response_model=SessionStatus, responses=_ERRORS)
    async def session_status(request: Request, session_id: str) -> dict[str, Any]:
        """Whether a client is connected, speaking, queue length, the last close reason."""
        return _state(request).sessions.get(session_id).status()

    @router.get("/session-2d/{session_id}/usage", tags=["sessions"], dependencies=[Auth],
                response_model=UsageOut, responses=_ERRORS)
    async def usage(request: Request, session_id: str) -> dict[str, Any]:
        """TTS characters, audio seconds and utterances used by the session so far."""
        u: Usage = _state(request).sessions.get(session_id).usage
        return {"session_id": session_id, "tts_characters": u.tts_characters,
                "audio_seconds": round(u.audio_seconds, 3), "utterances": u.utterances,
                "stopped": u.stopped, "errors": u.errors,
                "dropped_viseme_messages": u.dropped_viseme_messages}

    @router.delete("/session-2d/{session_id}", tags=["sessions"], dependencies=[Auth],
                   response_model=OkResponse, responses=_ERRORS)
    async def delete_session(request: Request, session_id: str) -> OkResponse:
        """Close the session and its connection (code 1000)."""
        await _state(request).sessions.close(session_id, code=1000, reason="session deleted")
        return OkResponse()

    @router.websocket("/ws/{session_id}", name="session_ws")
    async def session_ws(websocket: WebSocket, session_id: str) -> None:
        st: _State = websocket.app.state.lipcore
        transport = st.engine.registry.create("transports", st.settings.transport,
                                              websocket=websocket)
        await websocket.accept()
        token = websocket.query_params.get("token", "")
        try:
            session = st.sessions.get(session_id)
        except LipcoreError as exc:
            code = 4410 if getattr(exc, "http_status", 404) == 410 else 4404
            await transport.close(code, str(exc)[:120])
            return
        if not hmac.compare_digest(token.encode(), session.token.encode()):
            logger.warning("websocket with a wrong token refused",
                           extra={"session_id": session_id})
            await transport.close(4401, "missing or wrong session token")
            return
        mode = websocket.query_params.get("visemes")
        viseme_mode: Literal["batched", "single", "inline"] | None = (
            mode if mode in ("batched", "single", "inline") else None  # type: ignore[assignment]
        )
        rec = st.avatars.get(session.avatar_id)
        await session.serve(transport, viseme_mode=viseme_mode,
                            lipsync=_describe_avatar(websocket, st, rec)["lipsync_assets"])

    return router


def tune_gc() -> None:
    """Make garbage-collector pauses short for a long-running server: freeze every object
    alive now (imported modules, the app, the engine) out of the collector's reach, so a full
    collection scans only what sessions allocate. Call it once, after start-up work and
    before serving (``lipcore serve`` does; a host service may too). Without it a full
    collection walks the whole heap and stops the event loop for ~100 ms, which every
    session feels as a lag spike. Full collections are also made rarer."""
    import gc

    gc.collect()
    gc.freeze()
    # Full collections walk every live object (all sessions' state); a busy server pays that as
    # a loop stall that grows with its session count (70-200 ms at 200-450 sessions), so they
    # are made 1000x rarer (several minutes apart under load; cyclic garbage of closed sessions
    # waits that long: RSS stayed flat over minutes at 450 speaking sessions).
    # Young collections: with CPython's default (700, 10) the young generations of a server
    # with 400-500 speaking sessions fill with thousands of objects
    # that live for one TTS wait (suspended coroutines, futures, timer handles) and each
    # collection stopped the loop for 20-45 ms, the worst of the server's event lags. Small,
    # frequent ones (100, 5) pause 1-2 ms (young) and under 10 ms (middle) for about the same
    # total work (docs/benchmarks.md, server).
    gc.set_threshold(100, 5, 10_000)


def create_app(
    engine: lipcore.Engine | None = None, settings: ServerSettings | None = None
) -> FastAPI:
    """The lipcore server as an ASGI app.

    Run it alone (``lipcore serve``) or mount it into a host service::

        host = FastAPI()
        host.mount("/avatar", create_app(engine, ServerSettings(api_key=...)))

    URLs it hands out (``ws_url``, asset URLs) include the mount prefix.
    """
    engine = engine or lipcore.Engine()
    settings = settings or ServerSettings()
    state = _State(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.sessions.close_all()

    app = FastAPI(
        title="lipcore",
        version=lipcore.__version__,
        description="One still photo → a live, photo-real 2D talking avatar. "
        "WebSocket protocol: docs/protocol.md.",
        lifespan=lifespan,
    )
    app.state.lipcore = state

    @app.exception_handler(LipcoreError)
    async def _lipcore_error(request: Request, exc: LipcoreError) -> JSONResponse:
        status = getattr(exc, "http_status", 500)
        if status >= 500:
            logger.error("request failed: %s", exc)
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=status,
                            headers=headers)

    app.include_router(_routes())
    app.add_middleware(_BodyLimit, settings=settings)
    if settings.serve_web and (WEB_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
