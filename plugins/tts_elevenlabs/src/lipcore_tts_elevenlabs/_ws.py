"""One WebSocket to the vendor, shared by the utterances (contexts) that run on it.

A reader task routes incoming frames to the context they name; a writer task owns every send,
so that a barge-in can queue ``close_context`` without awaiting anything (a cancelled task may
not be allowed to await); a keep-alive task feeds contexts that wait for text and closes the
socket after it sat unused for ``idle_close_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lipcore_tts_elevenlabs._errors_map import from_exception, from_http
from lipcore_tts_elevenlabs.errors import redact

logger = logging.getLogger("lipcore_tts_elevenlabs")


class _RedactingFilter(logging.Filter):
    """The websockets library logs handshake headers at DEBUG; mask the key there."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            clean = redact(msg, *self.secrets)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


_ws_logger = logging.getLogger("lipcore_tts_elevenlabs.websockets")
_ws_filter = _RedactingFilter()
_ws_logger.addFilter(_ws_filter)

Mode = Literal["multi", "single"]
_ids = itertools.count(1)


class Closed:
    """Put into every context queue when the socket ends."""

    __slots__ = ("code", "error_frame", "reason")

    def __init__(self, code: int | None, reason: str, error_frame: dict[str, Any] | None) -> None:
        self.code = code
        self.reason = reason
        self.error_frame = error_frame


class Context:
    """One utterance on a socket: its frames arrive in ``queue``."""

    def __init__(self, cid: str | None) -> None:
        self.id = cid
        self.queue: asyncio.Queue[dict[str, Any] | Closed] = asyncio.Queue()
        self.last_sent = time.monotonic()
        self.awaiting_text = True  # keep-alives while the text source is still open
        self.done = False


class VendorSocket:
    """A ``stream-input`` (mode ``single``) or ``multi-stream-input`` (mode ``multi``) socket."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        mode: Mode,
        keepalive_s: float,
        idle_close_s: float,
        release_timeout_s: float,
        max_contexts: int,
        on_change: Callable[[], None] | None = None,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.stats = stats if stats is not None else {}
        self.url = url
        self._key = api_key
        self.mode = mode
        self.keepalive_s = keepalive_s
        self.idle_close_s = idle_close_s
        self.release_timeout_s = release_timeout_s
        self.max_contexts = max_contexts
        self.on_change = on_change
        self.serial = next(_ids)
        self.ws: ClientConnection | None = None
        self.contexts: dict[str | None, Context] = {}
        self._closing: dict[str, float] = {}  # barged-in context id → deadline of its slot
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.dead = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.error_frame: dict[str, Any] | None = None
        self.last_used = time.monotonic()
        self.dropped_frames = 0
        self.claimed = False  # single mode: a stream-input socket serves one utterance
        self.opened_at = time.monotonic()

    # -- life cycle ----------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        _ws_filter.secrets.add(self._key)
        try:
            self.ws = await asyncio.wait_for(
                connect(
                    self.url,
                    additional_headers={"xi-api-key": self._key},
                    open_timeout=None,
                    max_size=2**24,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    logger=_ws_logger,
                ),
                timeout,
            )
        except InvalidStatus as exc:
            resp = exc.response
            raise from_http(resp.status_code, bytes(resp.body or b""), secret=self._key) from None
        except Exception as exc:
            raise from_exception(
                exc, "opening the ElevenLabs WebSocket", secret=self._key
            ) from None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._reader(), name=f"elevenlabs-reader-{self.serial}"),
            loop.create_task(self._writer(), name=f"elevenlabs-writer-{self.serial}"),
            loop.create_task(self._keepalive(), name=f"elevenlabs-keepalive-{self.serial}"),
        ]

    async def aclose(self) -> None:
        """Close politely (``close_socket`` first on multi) and stop the tasks."""
        if self.ws is not None and not self.dead:
            if self.mode == "multi":
                self.send_nowait({"close_socket": True})
            self._out.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._tasks[1]), 1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2.0)
        self._mark_dead(self.close_code or 1000, self.close_reason or "closed by lipcore")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def abort(self) -> None:
        """Drop the socket at once (it misbehaved); no await needed."""
        self._mark_dead(None, "aborted by lipcore")
        if self.ws is not None:
            self.ws.transport.abort()
        for task in self._tasks:
            task.cancel()

    # -- contexts ------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Slots in use: open contexts plus barged-in ones whose final frame is still due."""
        now = time.monotonic()
        for cid, deadline in list(self._closing.items()):
            if now >= deadline:
                del self._closing[cid]
        return len(self.contexts) + len(self._closing)

    def can_take(self) -> bool:
        if self.dead:
            return False
        if self.mode == "single":
            return not self.claimed
        return self.busy < self.max_contexts

    def open_context(self, cid: str | None, init: dict[str, Any]) -> Context:
        ctx = Context(cid)
        self.contexts[cid] = ctx
        self.last_used = time.monotonic()
        self.send(ctx, init)
        return ctx

    def claim(self) -> Context:
        """single mode: take the pre-opened (already initialised) context of this socket."""
        self.claimed = True
        return self.contexts[None]

    def send(self, ctx: Context, message: dict[str, Any]) -> None:
        ctx.last_sent = time.monotonic()
        self.last_used = ctx.last_sent
        self.send_nowait(message)

    def send_nowait(self, message: dict[str, Any]) -> None:
        if not self.dead:
            self._out.put_nowait(json.dumps(message, ensure_ascii=False))

    def finish_context(self, ctx: Context) -> None:
        """The context ended with its final frame: free its slot."""
        ctx.done = True
        self.contexts.pop(ctx.id, None)
        self.last_used = time.monotonic()
        self._changed()

    def abandon_context(self, ctx: Context) -> None:
        """Barge-in: ``close_context`` now, drop its late frames, hold the slot until its final
        frame (or ``release_timeout_s``) so the vendor's 5-context limit is never exceeded."""
        ctx.done = True
        self.contexts.pop(ctx.id, None)
        self.last_used = time.monotonic()
        if self.mode == "single":
            # stream-input has no cancel message: closing the socket is the barge-in.
            self.abort()
        elif not self.dead and ctx.id is not None:
            self.send_nowait({"context_id": ctx.id, "close_context": True})
            self._closing[ctx.id] = time.monotonic() + self.release_timeout_s
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- tasks ---------------------------------------------------------------------------

    def _mark_dead(self, code: int | None, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        self.close_code = code
        self.close_reason = reason
        marker = Closed(code, reason, self.error_frame)
        for ctx in self.contexts.values():
            ctx.queue.put_nowait(marker)
        self._changed()

    async def _reader(self) -> None:
        assert self.ws is not None
        code: int | None = None
        reason = ""
        try:
            async for raw in self.ws:
                self._route(raw)
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                code, reason = exc.rcvd.code, exc.rcvd.reason
        except Exception as exc:
            reason = f"{type(exc).__name__}"
        else:
            code, reason = self.ws.close_code, self.ws.close_reason or ""
        finally:
            self._mark_dead(code, reason)

    def _route(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            logger.debug("ElevenLabs sent a frame that is not JSON; ignored")
            return
        if not isinstance(msg, dict):
            return
        if self.mode == "single":
            cid: str | None = None
        else:
            cid = msg.get("contextId") or msg.get("context_id")
        ctx = self.contexts.get(cid)
        is_final = bool(msg.get("isFinal") or msg.get("is_final"))
        if ctx is None:
            if cid in self._closing:
                self.dropped_frames += 1  # a late frame of a barged-in context
                self.stats["dropped_late_frames"] = self.stats.get("dropped_late_frames", 0) + 1
                if is_final:
                    del self._closing[cid]
                    self._changed()
                return
            if "error" in msg or ("message" in msg and "audio" not in msg):
                # A socket-wide error frame: the close that follows says the rest.
                self.error_frame = msg
                for other in self.contexts.values():
                    other.queue.put_nowait(msg)
                return
            self.dropped_frames += 1
            return
        ctx.queue.put_nowait(msg)

    async def _writer(self) -> None:
        assert self.ws is not None
        try:
            while True:
                item = await self._out.get()
                if item is None:
                    return
                await self.ws.send(item)
        except ConnectionClosed:
            return  # the reader reports the close
        except Exception as exc:
            logger.debug("ElevenLabs writer stopped: %s", type(exc).__name__)
            self.abort()

    async def _keepalive(self) -> None:
        tick = max(0.05, min(1.0, self.keepalive_s / 4))
        while not self.dead:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for ctx in list(self.contexts.values()):
                if ctx.awaiting_text and now - ctx.last_sent >= self.keepalive_s:
                    # multi: "" keeps a context alive (it does not end it); single: " ".
                    if self.mode == "multi":
                        self.send(ctx, {"text": "", "context_id": ctx.id})
                    else:
                        self.send(ctx, {"text": " "})
            unclaimed = self.mode == "single" and not self.claimed
            idle = (not self.contexts and not self._closing) or unclaimed
            since = self.opened_at if unclaimed else self.last_used
            if idle and now - since >= self.idle_close_s:
                logger.debug(
                    "closing ElevenLabs socket %d: unused for %.0f s",
                    self.serial,
                    self.idle_close_s,
                )
                asyncio.get_running_loop().create_task(self.aclose())
                return
