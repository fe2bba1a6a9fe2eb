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
from lipcore.errors import InputError, LimitError, LipcoreError
from lipcore.interfaces import AudioMouthRenderer
from lipcore.models import (
    AvatarizeResponse,
    LipsyncAssets,
    OkResponse,
    SessionCreate,
    SessionCreated,
    SpeakRequest,
)
from lipcore.server.avatars import AvatarRecord, AvatarStore
from lipcore.server.cluster import Cluster, ClusterRouter
from lipcore.server.errors import (
    AvatarNotFoundError,
    AvatarUnusableError,
    BackendUnavailableError,
)
from lipcore.server.metering import Metering, key_id_of
from lipcore.server.metrics import Usage
from lipcore.server.security import (
    ClientTokens,
    ForbiddenError,
    Grant,
    SecurityMiddleware,
    authenticate,
    install_error_handlers,
    presented_credential,
    short_detail,
)
from lipcore.server.sessions import Session, SessionManager
from lipcore.server.settings import ServerSettings, check_data_dir

__all__ = ["backend_availability", "create_app", "tune_gc"]

logger = logging.getLogger("lipcore.server")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"


# --------------------------------------------------------------------------- response models


class LipsyncAssetsOut(LipsyncAssets):
    files: dict[str, str] = Field(default_factory=dict,
                                  description="every asset of the avatar: key → URL")


class AvatarOut(AvatarizeResponse):
    lipsync_assets: LipsyncAssetsOut
    name: str | None = Field(None, description="display name (given at upload, else the "
                                                "photo's file name, else the id)")
    thumbnail_url: str | None = Field(None, description="a square face thumbnail (JPEG)")
    preview_url: str | None = None
    idle: dict[str, float] | None = None
    photo: dict[str, int] | None = None
    created_at: str | None = None
    usable: bool = Field(default=True, description="whether a session can be opened with it")
    reason: str | None = Field(default=None, description="why not, when it is not usable")


class AvatarListOut(BaseModel):
    avatars: list[AvatarOut]


class BackendOut(BaseModel):
    type: str
    available: bool
    reason: str | None = None


class BackendListOut(BaseModel):
    backends: list[BackendOut]
    default: str = Field(description="the back end an upload without `backend` gets")


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
    code: {"model": ErrorBody} for code in (401, 404, 409, 410, 413, 422, 429, 502, 503)
}


# --------------------------------------------------------------------------- app state


class _State:
    def __init__(self, engine: lipcore.Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.avatars = AvatarStore(settings, engine)
        self.sessions = SessionManager(settings, engine)
        self.cluster = Cluster(settings.worker_id, self, drain_timeout_s=settings.drain_timeout_s)
        self.sessions.id_prefix = self.cluster.session_id_prefix
        self.metering = Metering(self.sessions, redis_url=settings.redis_url,
                                 key_max_sessions=settings.key_max_sessions,
                                 interval_s=settings.metering_interval_s,
                                 ttl_s=settings.metering_ttl_s, worker=settings.worker_id)
        self.started = time.time()
        self._key = settings.api_key.encode() if settings.api_key else None
        self.tokens = ClientTokens(settings.api_key)

    def grant(self, presented: str | None) -> Grant:
        """What the presented key or client token may do (:class:`UnauthorizedError` if it is
        neither)."""
        return authenticate(self._key, self.tokens, presented)

    def check_key(self, presented: str | None) -> None:
        """The master key (or no key configured) is needed: a client token is refused."""
        if not self.grant(presented).master:
            raise ForbiddenError("this call needs the API key; a client token cannot make it")


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


class InvalidTokenRequestError(InputError):
    code = "bad_token_request"


def _state(request: Request) -> _State:
    st: _State = request.app.state.lipcore
    return st


def _base_url(request: Request | WebSocket, settings: ServerSettings) -> str:
    if settings.public_url:  # plus the worker's /w/<id> (lipcore.server.cluster)
        return settings.public_url.rstrip("/") + str(request.scope.get("lipcore.worker", ""))
    # root_path carries the mount prefix when a host app mounts us (base_url would not).
    scheme = {"ws": "http", "wss": "https"}.get(request.url.scheme, request.url.scheme)
    root = str(request.scope.get("root_path", "")).rstrip("/")
    netloc = request.url.netloc  # the Host header, already checked against allowed_hosts
    client = request.scope.get("client")
    trusted = settings.forwarded_allow_ips
    if client and ("*" in trusted or client[0] in trusted):
        # A reverse proxy we trust says where the client reached us.
        h = request.headers
        netloc = h.get("x-forwarded-host", netloc).split(",")[0].strip() or netloc
        proto = h.get("x-forwarded-proto", scheme).split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else scheme
        prefix = h.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
        if prefix.startswith("/") and "//" not in prefix:
            root = prefix + root
    return f"{scheme}://{netloc}{root}"


def _asset_url(request: Request | WebSocket, st: _State, rec: AvatarRecord, rel: str) -> str:
    # The avatar's version is part of the path: a rebuilt avatar gets new URLs, so assets can
    # be cached as immutable, and relative references between assets keep the version.
    return f"{_base_url(request, st.settings)}/avatars/{rec.avatar_id}/v/{rec.version}/files/{rel}"


def _plugin_static_url(request: Request | WebSocket, st: _State, kind: str, rel: str) -> str:
    return f"{_base_url(request, st.settings)}/plugins/{kind}/static/{rel}"


def _ws_url(request: Request, st: _State, session: Session) -> str:
    base = _base_url(request, st.settings)
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return f"{base}/ws/{session.session_id}?{urlencode({'token': session.token})}"


def _describe_avatar(request: Request | WebSocket, st: _State, rec: AvatarRecord) -> dict[str, Any]:
    return rec.describe(lambda rel: _asset_url(request, st, rec, rel),
                        lambda rel: _plugin_static_url(request, st, rec.lipsync_type, rel))


def _file_response(request: Request, file: Path, *, immutable: bool) -> Response:
    """A static file with ETag, 304 on a match and HTTP ranges; cached for good only when its
    URL can never name other content."""
    stat = file.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
    headers = {"cache-control": cache, "etag": etag,
               "last-modified": formatdate(stat.st_mtime, usegmt=True)}
    inm = request.headers.get("if-none-match")
    if inm and etag in [t.strip() for t in inm.split(",")]:
        return Response(status_code=304, headers=headers)
    return FileResponse(file, headers=headers, stat_result=stat)


#: Routes a client token may call (within its scope); every other route needs the key.
_TOKEN_ROUTES = {"list_avatars", "get_avatar", "list_voices", "create_session", "speak", "stop",
                 "session_status", "usage", "delete_session"}


async def require_key(request: Request) -> None:
    """REST auth: the configured API key, or a client token for the routes and the session or
    avatar it covers, in ``X-API-Key`` or ``Authorization: Bearer``. The grant is left in
    ``request.state.grant``."""
    st = _state(request)
    grant = st.grant(presented_credential(request.scope.get("headers", ())))
    request.state.grant = grant
    if grant.master:
        return
    route = request.scope.get("route")
    if getattr(route, "name", None) not in _TOKEN_ROUTES:
        raise ForbiddenError("this call needs the API key; a client token cannot make it")
    params = request.path_params
    if "session_id" in params:
        session = st.sessions.get(params["session_id"])  # 404/410 as without a token
        if not grant.allows_session(session.session_id, session.avatar_id):
            raise ForbiddenError("this client token is for another session")
    elif "avatar_id" in params and not grant.allows_avatar(params["avatar_id"],
                                                           _token_session_avatar(st, grant)):
        raise ForbiddenError("this client token is for another avatar")


def _token_session_avatar(st: _State, grant: Grant) -> str | None:
    """The avatar of a session-scoped grant's session (``None`` if gone or not that scope)."""
    if grant.scope != "session" or grant.id is None:
        return None
    try:
        return st.sessions.get(grant.id).avatar_id
    except LipcoreError:
        return None


def _grant(request: Request) -> Grant:
    grant: Grant = getattr(request.state, "grant", None) or Grant("master")
    return grant


class TokenCreate(BaseModel):
    """``POST /tokens``: exactly one of ``session_id`` and ``avatar_id``."""

    model_config = ConfigDict(extra="forbid")
    session_id: str | None = Field(default=None, max_length=200)
    avatar_id: str | None = Field(default=None, max_length=200)
    ttl_s: int | None = Field(default=None, ge=1, description="lifetime (default 1 h)")


class TokenOut(BaseModel):
    token: str
    scope: Literal["session", "avatar"]
    id: str
    expires_at: int = Field(description="unix seconds")


Auth = Depends(require_key)


# --------------------------------------------------------------------------- routes


async def _audio_driven_renderer(rec: AvatarRecord) -> AudioMouthRenderer | None:
    """For an avatar whose back end renders the mouth from audio (variant C): its renderer,
    opened in a worker thread (the model loads there); ``None`` for viseme-driven avatars."""
    backend = rec.backend
    if backend is None or backend.driven_by != "audio":
        return None
    renderer = await asyncio.to_thread(backend.open_renderer, rec.avatar)
    if not isinstance(renderer, AudioMouthRenderer):
        raise LipcoreError(
            f"the {rec.lipsync_type!r} back end says it is driven by audio, but its renderer "
            f"({type(renderer).__name__}) is no lipcore.interfaces.AudioMouthRenderer"
        )
    return renderer


def backend_availability(engine: lipcore.Engine) -> list[dict[str, Any]]:
    """``[{type, available, reason}]`` for every installed lip-sync back end. A back end that
    cannot even be created (bad settings) is unavailable with its error as the reason."""
    out = []
    for name in engine.registry.names("lipsync_backends"):
        try:
            reason = engine.lipsync_backend(name).availability()
        except LipcoreError as exc:
            reason = str(exc)
        out.append({"type": name, "available": reason is None, "reason": reason})
    return out


# Every route is a module-level handler on this router; create_app includes it. Handlers
# reach the server's state through the request (app.state.lipcore), never a closure.
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
        **st.cluster.health(),
    }

@router.get("/metrics", tags=["operations"], dependencies=[Auth])
async def metrics(request: Request) -> dict[str, Any]:
    """Server-added latency (TTS chunk in → audio frame written to the socket) and event
    lag (chunk due on the TTS's schedule → frame written), in ms, for sources that stamp
    their chunks (``lipcore.testing.ReplayTTSSource``), and session counts."""
    st = _state(request)
    return {"latency": st.sessions.latency.summary(), "lag": st.sessions.lag.summary(),
            "sessions": len(st.sessions.sessions)}

@router.post("/tokens", tags=["auth"], dependencies=[Auth], response_model=TokenOut,
             responses=_ERRORS)
async def create_token(request: Request, body: TokenCreate) -> dict[str, Any]:
    """Mint a short-lived client token for one session or one avatar (needs the key).
    Hand it to a browser or app instead of the key: it lists only its avatar, opens and
    drives sessions only on it (avatar scope) or drives only its session (session scope),
    and cannot build avatars, mint tokens or read metrics."""
    st = _state(request)
    if (body.session_id is None) == (body.avatar_id is None):
        raise InvalidTokenRequestError("give exactly one of session_id and avatar_id")
    ttl = body.ttl_s or st.settings.client_token_default_ttl_s
    if ttl > st.settings.client_token_max_ttl_s:
        raise InvalidTokenRequestError(
            f"ttl_s is over the {st.settings.client_token_max_ttl_s} s limit")
    if body.session_id is not None:
        grant = st.tokens.mint("session", st.sessions.get(body.session_id).session_id, ttl)
    else:
        grant = st.tokens.mint("avatar", st.avatars.get(str(body.avatar_id)).avatar_id, ttl)
    return {"token": st.tokens.encode(grant), "scope": grant.scope, "id": grant.id,
            "expires_at": grant.expires_at}

@router.post("/avatarize-2d", tags=["avatars"], dependencies=[Auth],
             response_model=AvatarOut, responses=_ERRORS)
async def avatarize(
    request: Request,
    hero_image: Annotated[UploadFile, File(description="the photo (JPEG/PNG/WebP)")],
    backend: Annotated[str | None, Form(
        description="the lipsync back end: sprites, mesh, onnx or a plugin's kind "
        "(an alias resolves to it)")] = None,
    name: Annotated[str | None, Form(description="display name (default: the file's "
                                                 "name)")] = None,
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
    if not (name and name.strip()) and hero_image.filename:
        name = Path(hero_image.filename).stem
    rec = await st.avatars.build(data, backend=backend, name=name)
    return _describe_avatar(request, st, rec)

@router.get("/avatars", tags=["avatars"], dependencies=[Auth],
            response_model=AvatarListOut, responses=_ERRORS)
async def list_avatars(request: Request) -> dict[str, Any]:
    """The avatars this server has (newest first, at most 1000), with their URLs. Behind
    the API key when one is set: the ids are the capability to their asset files."""
    st = _state(request)
    # One broken avatar never breaks the listing: the store skips it with a log line, and
    # one whose back end is missing or cannot run here is listed with usable: false.
    grant = _grant(request)
    records = await st.avatars.arecords()
    if not grant.master:  # a client token sees its own avatar only
        own = _token_session_avatar(st, grant)
        records = [rec for rec in records if grant.allows_avatar(rec.avatar_id, own)]
    return {"avatars": [_describe_avatar(request, st, rec) for rec in records]}

@router.get("/backends", tags=["avatars"], dependencies=[Auth],
            response_model=BackendListOut, responses=_ERRORS)
async def list_backends(request: Request) -> dict[str, Any]:
    """The lip-sync back ends installed, and whether this server can run each as
    configured (``reason``: one sentence why not). Clients offer only available ones."""
    st = _state(request)
    return {"backends": await asyncio.to_thread(backend_availability, st.engine),
            "default": st.settings.default_backend}

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
    await st.avatars.ensure(avatar_id)  # shared storage: into this worker's cache
    return _describe_avatar(request, st, st.avatars.get(avatar_id))

@router.get("/avatars/{avatar_id}/files/{path:path}", tags=["avatars"],
            name="avatar_file", responses=_ERRORS)
async def avatar_file(request: Request, avatar_id: str, path: str) -> Response:
    """An asset file. No API key needed (browsers load these in <video>/<img>): the
    unguessable avatar id is the capability. ETag + long caching (assets never change
    under an id); HTTP range requests (206) for the video."""
    st = _state(request)
    await st.avatars.ensure(avatar_id)  # shared storage: into this worker's cache
    # Unversioned: the avatar may be rebuilt under this URL, so clients revalidate.
    return _file_response(request, st.avatars.get(avatar_id).file(path), immutable=False)

@router.get("/avatars/{avatar_id}/v/{version}/files/{path:path}", tags=["avatars"],
            name="avatar_file_versioned", responses=_ERRORS)
async def avatar_file_versioned(request: Request, avatar_id: str, version: str,
                                path: str) -> Response:
    """An asset file of one version of an avatar (the URLs the avatar's description hands
    out). Cached for good while that version is current; once the avatar was rebuilt the
    file is the new one's and is revalidated."""
    st = _state(request)
    await st.avatars.ensure(avatar_id)
    rec = st.avatars.get(avatar_id)
    return _file_response(request, rec.file(path), immutable=version == rec.version)

@router.get("/plugins/{kind}/static/{path:path}", tags=["avatars"],
            name="plugin_static", responses=_ERRORS)
async def plugin_static(request: Request, kind: str, path: str) -> Response:
    """A file a lipsync back end ships to clients (its web renderer module and what it
    loads), from the back end's ``static_dir()``. No API key: it is plugin code, not data."""
    st = _state(request)
    try:
        backend = st.engine.lipsync_backend(kind)
    except LipcoreError:
        raise AvatarNotFoundError(f"no lipsync back end {kind!r} is installed") from None
    root = backend.static_dir()
    file = (root / path).resolve() if root is not None else None
    if root is None or file is None or not file.is_relative_to(root.resolve()) \
            or not file.is_file():
        raise AvatarNotFoundError(f"the {kind!r} back end serves no file {path!r}")
    response = _file_response(request, file, immutable=False)
    if file.suffix in (".js", ".mjs"):
        response.headers["content-type"] = "text/javascript; charset=utf-8"
    return response

@router.post("/session-2d", tags=["sessions"], dependencies=[Auth],
             response_model=SessionCreated, responses=_ERRORS)
async def create_session(request: Request, body: SessionCreate) -> SessionCreated:
    """Open a live session; connect a WebSocket to ``ws_url`` (it carries the session's own
    token: hand it only to that session's client)."""
    st = _state(request)
    await st.avatars.ensure(body.avatar_id)
    rec = st.avatars.get(body.avatar_id)
    if not _grant(request).allows_avatar(rec.avatar_id):
        raise ForbiddenError("this client token is for another avatar")
    if rec.reason is not None:
        if rec.backend is not None:
            # Installed but unable to run as configured (e.g. no model): a fault of the
            # server, not of the client's request; no session is left behind.
            raise BackendUnavailableError(
                f"this server cannot run avatar {rec.avatar_id!r} ({rec.lipsync_type}): "
                f"{rec.reason}")
        raise AvatarUnusableError(f"avatar {rec.avatar_id!r} cannot be used: {rec.reason}")
    lipsync = _describe_avatar(request, st, rec)["lipsync_assets"]
    patcher = await _audio_driven_renderer(rec)
    session = await st.sessions.create(avatar_id=rec.avatar_id, voice_id=body.voice_id,
                                       tts=body.tts, lipsync=lipsync)
    session.patcher = patcher
    try:  # counted against its key (on every worker, with Redis)
        await st.metering.opened(key_id_of(request.headers), session.session_id)
    except LipcoreError:
        await st.sessions.close(session.session_id, code=1000, reason="key session limit")
        raise
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
    from lipcore.speech.audio_input import decode_audio_bytes

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

@router.get("/usage", tags=["operations"], dependencies=[Auth], responses=_ERRORS)
async def key_usage(request: Request) -> dict[str, Any]:
    """Usage of the calling key: TTS characters, audio seconds, utterances, sessions opened,
    live sessions; across all workers when the server shares Redis (``scope``)."""
    return await _state(request).metering.usage(key_id_of(request.headers))

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
    # Refuse to start on a data directory builds could not write to (rather than answer every
    # build with a 500), and clear what killed builds left behind.
    check_data_dir(settings.data_dir)
    state = _State(engine, settings)
    state.avatars.remove_stale_builds()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.sessions.close_all()
        await state.metering.close()
        state.avatars.close()

    app = FastAPI(
        title="lipcore",
        version=lipcore.__version__,
        description="One still photo → a live, photo-real 2D talking avatar. "
        "WebSocket protocol: docs/protocol.md.",
        lifespan=lifespan,
        # No Swagger UI (it loads scripts from a CDN) and no open schema: /openapi.json is a
        # route behind the key below.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.lipcore = state
    install_error_handlers(app)

    @app.exception_handler(LipcoreError)
    async def _lipcore_error(request: Request, exc: LipcoreError) -> JSONResponse:
        status = getattr(exc, "http_status", 500)
        if status >= 500:
            logger.error("request failed: %s", exc)
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        detail = short_detail(exc.public_message or str(exc))  # never echoes large input
        return JSONResponse({"error": exc.code, "detail": detail},
                            status_code=status,
                            headers=headers)

    app.include_router(router)
    if settings.openapi:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Auth])
        async def openapi_document(request: Request) -> JSONResponse:
            _state(request).check_key(presented_credential(request.scope.get("headers", ())))
            return JSONResponse(app.openapi())

    app.add_middleware(_BodyLimit, settings=settings)
    if settings.worker_id:  # routed workers: /w/<id>/ paths, wrong-worker answers, drain
        app.add_middleware(ClusterRouter, cluster=state.cluster)
    # Outermost: Host/Origin, the upload key check before any body is read, security headers.
    app.add_middleware(SecurityMiddleware, settings=settings, check_master=state.check_key)
    if settings.serve_web and (WEB_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
