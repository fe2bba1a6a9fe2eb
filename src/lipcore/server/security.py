"""What stands between the network and the server's routes (docs/server.md, "Security").

* :class:`ClientTokens`: short-lived, scoped client tokens signed with the master key (HMAC,
  no server state): one session or one avatar, with an expiry. Browsers and apps hold these,
  never the key.
* :class:`SecurityMiddleware` (pure ASGI, outermost): the ``Host`` and ``Origin`` allow-lists
  (DNS rebinding, cross-site requests), the key check for uploads *before* their body is read,
  a stall bound on request bodies, and the browser security headers.
* :func:`install_error_handlers`: every request error in the ``{error, detail}`` shape, short,
  without echoing the input, and never a 5xx for something a client sent.
* :func:`guarded_http_protocol` / :func:`uvicorn_options`: the connection-level bounds for
  uvicorn (a header timeout, a connection cap, a per-address cap against slowloris).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import resource
import secrets
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from lipcore.errors import LipcoreError
from lipcore.server.errors import UnauthorizedError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lipcore.server.settings import ServerSettings

__all__ = [
    "ClientTokens",
    "ForbiddenError",
    "Grant",
    "SecurityMiddleware",
    "guarded_http_protocol",
    "install_error_handlers",
    "uvicorn_options",
]

logger = logging.getLogger("lipcore.server")

Scope = Literal["master", "session", "avatar"]
_TOKEN_PREFIX = "lct1."


class ForbiddenError(LipcoreError):
    """A valid client token used outside its scope."""

    code = "forbidden"
    http_status = 403


def short(text: object, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters: error details never echo large input."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


_LONG_WORD = re.compile(r"\S{81,}")


def short_detail(text: str, limit: int = 500) -> str:
    """An error detail fit to send: any run of more than 80 non-space characters (an echoed
    id, voice or file name) is cut, and the whole to ``limit`` characters."""
    return short(_LONG_WORD.sub(lambda m: m.group(0)[:40] + "…", text), limit)


# --------------------------------------------------------------------------- client tokens


@dataclass(frozen=True)
class Grant:
    """What a request may do: everything (the master key, or no key configured), or what one
    client token covers (``scope`` ``"session"`` or ``"avatar"`` and that ``id``)."""

    scope: Scope
    id: str | None = None
    expires_at: int | None = None

    @property
    def master(self) -> bool:
        return self.scope == "master"

    def allows_avatar(self, avatar_id: str, session_avatar: str | None = None) -> bool:
        """Whether the grant may see ``avatar_id`` (a session token: its session's avatar,
        passed as ``session_avatar``)."""
        if self.master:
            return True
        if self.scope == "avatar":
            return self.id == avatar_id
        return session_avatar is not None and session_avatar == avatar_id

    def allows_session(self, session_id: str, avatar_id: str) -> bool:
        """Whether the grant may drive the session ``session_id`` (on ``avatar_id``)."""
        if self.master:
            return True
        if self.scope == "session":
            return self.id == session_id
        return self.scope == "avatar" and self.id == avatar_id


MASTER = Grant("master")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ClientTokens:
    """Mint and verify client tokens: ``lct1.<payload>.<mac>``, the payload a small JSON
    object ``{"s": scope, "id": ..., "exp": unix seconds}``, the MAC an HMAC-SHA256 under a key
    derived from the master key (so a token never reveals the key and outlives no key
    rotation). Without a master key (a loopback server) a random per-process key signs: tokens
    then end with the process."""

    def __init__(self, master_key: str | None) -> None:
        base = master_key.encode() if master_key else secrets.token_bytes(32)
        self._key = hmac.new(base, b"lipcore client token v1", hashlib.sha256).digest()

    def mint(self, scope: Literal["session", "avatar"], ident: str, ttl_s: int) -> Grant:
        """A grant for ``scope``/``ident`` that expires ``ttl_s`` seconds from now."""
        return Grant(scope, ident, int(time.time()) + max(1, int(ttl_s)))

    def encode(self, grant: Grant) -> str:
        payload = _b64(json.dumps({"s": grant.scope, "id": grant.id, "exp": grant.expires_at},
                                  separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"{_TOKEN_PREFIX}{payload}.{mac}"

    @staticmethod
    def looks_like_token(text: str) -> bool:
        return text.startswith(_TOKEN_PREFIX)

    def verify(self, token: str) -> Grant:
        """The grant of a valid, unexpired token, else :class:`UnauthorizedError`."""
        try:
            payload, mac = token[len(_TOKEN_PREFIX):].split(".")
            want = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(_unb64(mac), want):
                raise ValueError("bad signature")
            data = json.loads(_unb64(payload))
            scope, ident, exp = data["s"], data["id"], int(data["exp"])
            if scope not in ("session", "avatar") or not isinstance(ident, str):
                raise ValueError("bad scope")
        except (ValueError, KeyError, TypeError):
            raise UnauthorizedError("the client token is not valid (damaged, or signed by "
                                    "another server or key); mint a new one") from None
        if exp < time.time():
            raise UnauthorizedError("the client token has expired; mint a new one") from None
        return Grant(scope, ident, exp)


def presented_credential(headers: list[tuple[bytes, bytes]] | Any) -> str | None:
    """The key or token a request presents (``X-API-Key`` or ``Authorization: Bearer``)."""
    api_key = auth = None
    for name, value in headers:
        if name == b"x-api-key":
            api_key = value.decode("latin-1")
        elif name == b"authorization":
            auth = value.decode("latin-1")
    if api_key is not None:
        return api_key
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def authenticate(master_key: bytes | None, tokens: ClientTokens, presented: str | None) -> Grant:
    """The grant of a request's credential: the master key, a client token, or (no key
    configured and nothing presented) everything. Raises :class:`UnauthorizedError`."""
    if presented and ClientTokens.looks_like_token(presented):
        return tokens.verify(presented)
    if master_key is None:
        return MASTER
    # Constant-time: the comparison's timing says nothing about the key.
    if hmac.compare_digest((presented or "").encode(), master_key):
        return MASTER
    raise UnauthorizedError(
        "missing or wrong API key or client token: send it in the X-API-Key header "
        "(or Authorization: Bearer <key or token>)"
    )


# --------------------------------------------------------------------------- hosts and origins


def _host_only(netloc: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host: str, settings: ServerSettings) -> bool:
    """Whether a request for ``host`` (a ``Host`` header value) is answered. IP literals and
    ``localhost`` names always are: DNS rebinding needs a name the attacker controls."""
    name = _host_only(host).rstrip(".")
    allowed = {h.lower().rstrip(".") for h in settings.allowed_hosts}
    if "*" in allowed or _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
        return True
    if settings.public_url:
        allowed.add(_host_only(urlsplit(settings.public_url).netloc))
    if name in allowed:
        return True
    return any(h.startswith(".") and (name.endswith(h) or name == h[1:]) for h in allowed)


def origin_allowed(origin: str, host: str, settings: ServerSettings) -> bool:
    """Whether a browser request from ``origin`` is accepted: the server's own origin (the
    page it serves), ``public_url``'s, or one in ``allowed_origins``."""
    allowed = {o.rstrip("/").lower() for o in settings.allowed_origins}
    origin = origin.strip().rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    if origin == "null" or "://" not in origin:
        return False
    netloc = urlsplit(origin).netloc
    if settings.public_url and netloc == urlsplit(settings.public_url).netloc.lower():
        return True
    return netloc == host.strip().lower()


# --------------------------------------------------------------------------- the middleware

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_ALWAYS_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


async def send_error(send: Any, status: int, code: str, detail: str, *,
                     close: bool = False) -> None:
    """Answer an HTTP request with ``{error, detail}`` from ASGI middleware."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *_ALWAYS_HEADERS]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyStalled(Exception):
    pass


class SecurityMiddleware:
    """The outermost ASGI layer of :func:`lipcore.server.create_app` (see the module text).

    ``authenticate_upload(headers)`` raises :class:`UnauthorizedError` for an upload without
    the master key; it runs before a byte of the body is read, so an unauthenticated client
    can make the server neither read nor spool its upload."""

    def __init__(self, app: Any, settings: ServerSettings, check_master: Any) -> None:
        self.app = app
        self.settings = settings
        self.check_master = check_master

    @staticmethod
    def _header(scope: Any, name: bytes) -> str | None:
        for key, value in scope.get("headers", ()):
            if key == name:
                return str(value.decode("latin-1"))
        return None

    def _trusted_proxy(self, scope: Any) -> bool:
        client = scope.get("client")
        allowed = self.settings.forwarded_allow_ips
        return bool(client) and ("*" in allowed or client[0] in allowed)

    async def _deny(self, scope: Any, send: Any, status: int, code: str, detail: str) -> None:
        logger.warning("request refused", extra={"error": code, "path": short(scope.get("path"))})
        if scope["type"] == "websocket":
            # Before accept: the server answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": code})
            return
        await send_error(send, status, code, detail, close=True)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = self._header(scope, b"host") or ""
        if self._trusted_proxy(scope):
            host = (self._header(scope, b"x-forwarded-host") or host).split(",")[0].strip()
        if host and not host_allowed(host, self.settings):
            await self._deny(scope, send, 400 if scope["type"] == "http" else 403,
                             "host_not_allowed",
                             f"this server does not answer for the host {short(host, 60)!r}; "
                             "the operator can add it with --allowed-host")
            return
        origin = self._header(scope, b"origin")
        if origin is not None and not origin_allowed(origin, host, self.settings):
            await self._deny(scope, send, 403, "origin_not_allowed",
                             f"requests from the web origin {short(origin, 60)!r} are not "
                             "accepted; the operator can add it with --allowed-origin")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and str(scope.get("path", "")).rstrip("/").endswith(
                "/avatarize-2d"):
            try:
                self.check_master(presented_credential(scope.get("headers", ())))
            except LipcoreError as exc:
                # connection: close, so the server does not read (or wait for) the body.
                await send_error(send, getattr(exc, "http_status", 401), exc.code, str(exc),
                                 close=True)
                return
        await self._call_bounded(scope, receive, self._with_headers(send))

    async def _call_bounded(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the app with a stall bound on the request body: a body that trickles in (slow
        POST) holds a worker slot, so one that stalls ``body_idle_timeout_s`` between chunks
        is answered 408 and the connection closed."""
        timeout = self.settings.body_idle_timeout_s
        stalled = False
        started = False

        async def bounded() -> Any:
            nonlocal stalled
            try:
                return await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                stalled = True
                raise _BodyStalled from None

        async def guarded(message: Any) -> None:
            nonlocal started
            if stalled:  # the app's own answer to the aborted body is replaced
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded, guarded)
        except Exception:
            if not stalled:
                raise
        if stalled:
            logger.warning("request body stalled", extra={"timeout_s": timeout})
            if not started:
                await send_error(send, 408, "request_timeout",
                                 f"the request body stalled for {timeout:g} s", close=True)

    @staticmethod
    def _with_headers(send: Any) -> Any:
        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _ALWAYS_HEADERS if k not in names]
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html") and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", _CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


# --------------------------------------------------------------------------- error handlers


def _describe_validation(errors: Sequence[Any]) -> str:
    """Where and what, for each invalid field, never the rejected value itself."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{short(loc, 40)}: {short(err.get('msg', 'invalid'), 100)}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Every error a request can meet answers ``{error, detail}``: validation (422, without
    the input: a ``NaN`` in it once made the error itself unserialisable), unknown routes and
    methods (404/405), and anything unforeseen (500 ``internal``, logged without the request)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return JSONResponse({"error": "invalid_request", "detail": _describe_validation(errors)},
                            status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 400)
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = getattr(exc, "detail", "") or ""
        return JSONResponse({"error": codes.get(status, "bad_request"),
                             "detail": short(detail, 200)},
                            status_code=status, headers=getattr(exc, "headers", None))

    async def unforeseen(request: Request, exc: Exception) -> JSONResponse:
        logger.error("request failed: %s", type(exc).__name__,
                     extra={"path": short(request.url.path)})
        return JSONResponse({"error": "internal", "detail": "internal error; see the server log"},
                            status_code=500)

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unforeseen)


# --------------------------------------------------------------------------- connections


class _Peers:
    """Connections still in their HTTP phase, per peer address (weak: a lost or upgraded
    connection stops counting by itself)."""

    def __init__(self) -> None:
        self.by_ip: dict[str, weakref.WeakSet[Any]] = {}

    def count(self, ip: str) -> int:
        live = self.by_ip.get(ip)
        if not live:
            return 0
        for proto in list(live):
            transport = getattr(proto, "transport", None)
            if transport is None or transport.is_closing() or transport.get_protocol() is not proto:
                live.discard(proto)
        return len(live)

    def add(self, ip: str, proto: Any) -> None:
        self.by_ip.setdefault(ip, weakref.WeakSet()).add(proto)

    def discard(self, ip: str, proto: Any) -> None:
        live = self.by_ip.get(ip)
        if live is not None:
            live.discard(proto)
            if not live:
                del self.by_ip[ip]


def effective_max_connections(settings: ServerSettings) -> int:
    """``max_connections``, clamped below the open-file limit (leaving room for files, the
    data directory and the TTS's own sockets): past that, ``accept`` itself fails and the
    server stops answering anyone."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(16, min(settings.max_connections, soft - 128))


def guarded_http_protocol(settings: ServerSettings, base: type | None = None) -> type:
    """A uvicorn HTTP protocol class (httptools when installed, else h11) that closes a
    connection which has not finished its request line and headers within
    ``header_timeout_s`` (408), and refuses connections over ``max_connections`` in all or over
    ``max_connections_per_ip`` from one address (closed at once). Pass it as
    ``uvicorn.Config(http=...)``; :func:`uvicorn_options` does."""
    if base is None:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            base = HttpToolsProtocol
        except ImportError:  # pragma: no cover - httptools is a uvicorn[standard] extra
            from uvicorn.protocols.http.h11_impl import H11Protocol

            base = H11Protocol
    peers = _Peers()
    header_timeout = settings.header_timeout_s
    per_ip = settings.max_connections_per_ip
    total = effective_max_connections(settings)
    max_head = 64 * 1024  # request line + headers; browsers send a few KB
    too_big_body = json.dumps({"error": "headers_too_large",
                               "detail": f"the request headers are over {max_head} bytes"}).encode()
    too_big_response = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                        b"content-type: application/json\r\nconnection: close\r\n"
                        b"content-length: " + str(len(too_big_body)).encode() + b"\r\n\r\n"
                        + too_big_body)
    timeout_body = json.dumps({"error": "request_timeout",
                               "detail": "the request line and headers took too long"}).encode()
    timeout_response = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                        b"connection: close\r\ncontent-length: "
                        + str(len(timeout_body)).encode() + b"\r\n\r\n" + timeout_body)

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        _guard_timer: asyncio.TimerHandle | None = None
        _guard_cycle: Any = None
        _guard_ip: str = ""
        _guard_head = 0  # bytes received while a request's headers are incomplete

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            client = getattr(self, "client", None)
            self._guard_ip = str(client[0]) if client else ""
            if len(self.connections) > total or (per_ip and
                                                 peers.count(self._guard_ip) >= per_ip):
                # Closed before a byte is read: an attacker's flood costs one accept each.
                transport.abort()
                return
            peers.add(self._guard_ip, self)
            self._guard_cycle = self.cycle
            self._guard_timer = self.loop.call_later(header_timeout, self._guard_expired)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                self._guard_stop()
                peers.discard(self._guard_ip, self)
                return
            if self.cycle is not self._guard_cycle:  # a request's headers are complete
                self._guard_cycle = self.cycle
                self._guard_stop()
                return
            if self._guard_timer is None and (self.cycle is None or
                                              self.cycle.response_complete):
                # The next request on a kept-alive connection began: it gets the same bound.
                self._guard_head = 0
                self._guard_timer = self.loop.call_later(header_timeout, self._guard_expired)
            if self._guard_timer is not None:
                # Headers still incomplete after this data: bound what they may cost (uvicorn
                # keeps them all). Body bytes never count: they only come after the headers.
                self._guard_head += len(data)
                if self._guard_head > max_head and not self.transport.is_closing():
                    self._guard_stop()
                    self.transport.write(too_big_response)
                    self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._guard_stop()
            peers.discard(self._guard_ip, self)
            super().connection_lost(exc)

        def _guard_stop(self) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None

        def _guard_expired(self) -> None:
            self._guard_timer = None
            if self.cycle is self._guard_cycle and not self.transport.is_closing():
                if self.transport.get_protocol() is self:
                    self.transport.write(timeout_response)
                self.transport.close()

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """The ``uvicorn.Config``/``uvicorn.run`` keyword arguments that apply ``settings``'
    connection bounds: the guarded protocol, the keep-alive timeout, h11's header size."""
    return {
        "http": guarded_http_protocol(settings),
        "timeout_keep_alive": max(1, round(settings.keepalive_timeout_s)),
        "h11_max_incomplete_event_size": 64 * 1024,
    }
