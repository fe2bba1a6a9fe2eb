"""Live sessions: one avatar, one TTS voice, one client connection at a time.

The session logic speaks to :class:`lipcore.interfaces.Transport` only (the transport plugin
wraps the socket). Per connection a bounded :class:`~lipcore.server.outbox.Outbox` feeds one
writer task; per session one speaker task runs the queued turns (utterances) one after the
other. Its neighbours: ``outbox`` (the send queue), ``metrics`` (latency, lag, usage),
``feeds`` (streamed text and audio a turn is spoken from), ``protocol`` (every message's
shape).

Barge-in guarantee: :meth:`Session.stop` cancels the running turn's TTS, waits for it to end,
drops everything of it (and of earlier utterances) still in the outbox, and only then queues
the ``stop`` event. Since a turn writes to the outbox only while it runs, nothing of the stopped
utterance can follow the ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from lipcore.engine import clean_text
from lipcore.errors import InputError, LimitError, LipcoreError
from lipcore.interfaces import AudioMouthRenderer, MouthPatchStream, Transport, Voice
from lipcore.server.errors import (
    NotConnectedError,
    QueueFullError,
    SessionGoneError,
    SessionNotFoundError,
    TooManySessionsError,
)
from lipcore.server.feeds import AudioFeed, TextFeed
from lipcore.server.metrics import LatencyStats, Usage
from lipcore.server.outbox import Outbox, OutMessage
from lipcore.server.protocol import (
    AudioEnd,
    AudioStart,
    Ping,
    Speak,
    StopReason,
    StopRequest,
    TextDelta,
    TextEnd,
    encode_viseme,
    encode_visemes,
    error_event,
    hello_event,
    pack_audio_visemes,
    pack_frame,
    parse_client_message,
    pong_event,
    stop_event,
    utterance_end_event,
    utterance_start_event,
)
from lipcore.server.settings import ServerSettings

if TYPE_CHECKING:
    from lipcore.patches import MouthPatch

# LatencyStats, Outbox and Usage moved to their own modules; still importable from here.
__all__ = ["LatencyStats", "Outbox", "Session", "SessionManager", "Usage"]

logger = logging.getLogger("lipcore.server.sessions")

VisemeMode = Literal["batched", "single", "inline"]


#: The close code of every connection when the server stops (lifespan shutdown, or uvicorn's
#: own shutdown on SIGTERM/SIGINT, which sends 1012 "service restart" itself): the same code
#: whichever path closes first (docs/protocol.md, "Close codes").
SHUTDOWN_CLOSE_CODE = 1012


def _now_ms() -> float:
    return time.time() * 1000.0


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class _Turn:
    text: str | None = None
    stream: TextFeed | None = None
    barge_in: bool = False
    utterance: int = 0
    sent_pts_ms: float = 0.0
    task: asyncio.Task[None] | None = None
    utt: Any = None  # lipcore.engine.Utterance once prepared
    # A recording to speak instead of text: (s16le PCM at the session's rate, its text or None,
    # its language or None); the mouth comes from the engine's audio viseme estimator.
    audio: tuple[bytes, str | None, str | None] | None = None
    # A recording streamed by the client while it is spoken (audio_start … audio_end).
    feed: AudioFeed | None = None


# --------------------------------------------------------------------------- session


@dataclass
class Session:
    """One live session. Create through :meth:`SessionManager.create`."""

    manager: SessionManager
    session_id: str
    token: str = field(repr=False)
    avatar_id: str
    voice_id: str
    tts: str | None
    lipsync: dict[str, Any]
    sample_rate: int
    usage: Usage = field(default_factory=Usage)
    created: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    disconnected_at: float | None = None
    closed: bool = False
    connected_once: bool = False
    last_close: dict[str, Any] | None = None
    viseme_mode: VisemeMode = "batched"
    #: the voice the TTS source resolved when the session was created (once per session)
    voice: Voice | None = None

    def __post_init__(self) -> None:
        self.settings = self.manager.settings
        self.engine = self.manager.engine
        self.transport: Transport | None = None
        self.outbox: Outbox | None = None
        self._writer: asyncio.Task[None] | None = None
        self._turns: deque[_Turn] = deque()
        self._turn_ready = asyncio.Event()
        self._current: _Turn | None = None
        self._finished: _Turn | None = None  # the turn that ran last (a stop may name it)
        self._stream_turn: TextFeed | None = None
        self._feed: AudioFeed | None = None  # the open streamed recording, if any
        # A stop ended the open recording: its remaining frames are dropped until audio_end.
        self._feed_dropped = False
        self._speaker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._utterance_counter = 0
        self._invalid = 0
        self._detaching: asyncio.Task[None] | None = None
        # Variant C: the avatar's audio-driven renderer; each utterance's audio also becomes
        # mouth patches (binary frames of kind 2) rendered in a worker thread.
        self.patcher: AudioMouthRenderer | None = None

    # -- helpers ---------------------------------------------------------------------------

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def _send(self, msg: dict[str, Any], *, utterance: int = 0, viseme: bool = False) -> None:
        if self.outbox is not None:
            self.outbox.put(OutMessage(_dumps(msg), None, utterance, viseme))

    def _send_text(self, text: str, *, utterance: int, viseme: bool) -> None:
        if self.outbox is not None:
            self.outbox.put(OutMessage(text, None, utterance, viseme))

    def _send_audio(self, data: bytes, *, utterance: int, pts_ms: float,
                    t_chunk: float | None, t_due: float | None = None,
                    visemes: str | None = None) -> None:
        if self.outbox is None:
            return
        if visemes is None:
            frame = pack_frame(data, utterance=utterance, pts_ms=pts_ms)
        else:
            frame = pack_audio_visemes(visemes, data, utterance=utterance, pts_ms=pts_ms)
        self.outbox.put(OutMessage(None, frame, utterance, False, t_chunk, t_due,
                              inline=visemes is not None, pts_ms=pts_ms))

    def _send_patches(self, patches: Sequence[MouthPatch], *, utterance: int) -> None:
        """Mouth patches (variant C) as binary frames; stale ones may be dropped like visemes."""
        if self.outbox is None:
            return
        for p in patches:
            self.outbox.put(OutMessage(None, p.encode(utterance=utterance), utterance, True))

    def status(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "avatar_id": self.avatar_id,
            "voice_id": self.voice_id,
            "connected": self.connected,
            "speaking": self._current is not None,
            "queued_utterances": len(self._turns),
            "last_close": self.last_close,
        }

    # -- speech ----------------------------------------------------------------------------

    def _enqueue(self, turn: _Turn) -> None:
        if len(self._turns) >= self.settings.max_queued_utterances:
            raise QueueFullError(
                f"{len(self._turns)} utterances are already queued in session "
                f"{self.session_id} (limit {self.settings.max_queued_utterances}); wait for them, "
                "or speak with barge_in to replace them"
            )
        self._turns.append(turn)
        self._turn_ready.set()
        self._ensure_speaker()

    def _ensure_speaker(self) -> None:
        if self._speaker is None or self._speaker.done():
            self._speaker = asyncio.create_task(
                self._speak_loop(), name=f"speaker-{self.session_id}"
            )

    async def speak(self, text: str, *, barge_in: bool = False) -> None:
        """Queue ``text`` (or, with ``barge_in``, replace what plays). Validates at once:
        empty or too long text raises here, not later on the socket."""
        if self.closed:
            raise SessionGoneError(f"session {self.session_id} is closed")
        if not self.connected:
            raise NotConnectedError(
                f"session {self.session_id} has no client connected; open its ws_url first"
            )
        cleaned = clean_text(text, max_chars=self.settings.max_text_chars)
        self.touch()
        async with self._lock:
            if barge_in:
                await self._stop_locked(reason="barge_in", notify=True)
            self._enqueue(_Turn(text=cleaned, barge_in=barge_in))

    async def speak_audio(
        self,
        pcm: bytes,
        *,
        text: str | None = None,
        language: str | None = None,
        barge_in: bool = False,
    ) -> None:
        """Queue a recording (mono ``s16le`` at this session's sample rate) like a text: the
        client gets it as the utterance's audio with visemes estimated from it (``text``, if
        known, aligned to it). Same queue, same barge-in as :meth:`speak`."""
        if self.closed:
            raise SessionGoneError(f"session {self.session_id} is closed")
        if not self.connected:
            raise NotConnectedError(
                f"session {self.session_id} has no client connected; open its ws_url first"
            )
        if not pcm or len(pcm) % 2:
            raise InputError("the audio is empty or not s16le (an odd number of bytes)")
        if text is not None:
            text = clean_text(text, max_chars=self.settings.max_text_chars)
        self.touch()
        async with self._lock:
            if barge_in:
                await self._stop_locked(reason="barge_in", notify=True)
            self._enqueue(_Turn(text=text, barge_in=barge_in, audio=(pcm, text, language)))

    async def audio_start(self, *, text: str | None = None, language: str | None = None,
                          barge_in: bool = False) -> None:
        """Open a streamed recording: PCM (mono ``s16le`` at this session's sample rate) comes
        in binary frames until :meth:`audio_end`, and is spoken as it arrives, queued like a
        ``speak`` and stopped like one. Its mouth comes from the streaming audio estimator."""
        if not self.connected:
            raise NotConnectedError(f"session {self.session_id} has no client connected")
        if self._feed is not None and not barge_in:  # a barge-in replaces the open one
            raise InputError("a streamed recording is already open: send audio_end first, "
                             "or audio_start with barge_in to replace it")
        if text is not None:
            text = clean_text(text, max_chars=self.settings.max_text_chars)
        self.touch()
        feed = AudioFeed(
            max_bytes=int(self.settings.max_stream_audio_s * self.sample_rate) * 2,
            idle_timeout_s=self.settings.stream_idle_timeout_s, text=text, language=language)
        async with self._lock:
            if barge_in:
                await self._stop_locked(reason="barge_in", notify=True)
            self._enqueue(_Turn(text=text, barge_in=barge_in, feed=feed))
            self._feed = feed
            self._feed_dropped = False

    def audio_data(self, data: bytes) -> None:
        """One binary frame of the open streamed recording."""
        self.touch()
        if self._feed is None:
            if self._feed_dropped:
                return  # stopped: the rest of that recording is dropped quietly
            raise InputError("binary frames are PCM of a streamed recording: send audio_start "
                             "first")
        if len(data) % 2:
            raise InputError("PCM frames are s16le: an even number of bytes")
        try:
            self._feed.push(data)
        except LimitError:
            self._feed = None
            self._feed_dropped = True
            raise

    def audio_end(self) -> None:
        self.touch()
        if self._feed is not None:
            self._feed.end()
            self._feed = None
        self._feed_dropped = False

    def text_delta(self, delta: str) -> None:
        if not self.connected:
            raise NotConnectedError(f"session {self.session_id} has no client connected")
        self.touch()
        if self._stream_turn is None:
            stream = TextFeed(max_chars=self.settings.max_stream_chars,
                                 idle_timeout_s=self.settings.stream_idle_timeout_s)
            self._enqueue(_Turn(stream=stream))
            self._stream_turn = stream
        self._stream_turn.push(delta)
        self.usage.tts_characters += len(delta)

    def text_end(self) -> None:
        self.touch()
        if self._stream_turn is not None:
            self._stream_turn.end()
            self._stream_turn = None

    async def stop(self, *, reason: StopReason = "client") -> None:
        """Barge-in: cancel the running utterance at once, drop the queue, send ``stop``."""
        self.touch()
        async with self._lock:
            await self._stop_locked(reason=reason, notify=True)

    async def _stop_locked(self, *, reason: StopReason, notify: bool) -> None:
        for queued in self._turns:
            if queued.stream is not None:
                queued.stream.end()
            if queued.feed is not None:
                queued.feed.end()
        if self._feed is not None:
            self._feed.end()
            self._feed = None
            self._feed_dropped = True
        self._turns.clear()
        if self._stream_turn is not None:
            self._stream_turn.end()
            self._stream_turn = None
        turn = self._current
        at_pts = 0.0
        if turn is not None and turn.task is not None and not turn.task.done():
            if turn.utt is not None:
                turn.utt.cancel()
            turn.task.cancel()
            await asyncio.wait({turn.task})
            self.usage.stopped += 1
        purged = self.outbox.purge_utterances() if self.outbox is not None else []
        # How far the server had sent of the utterance the stop names: the running one, or
        # the last one when it finished before the stop came (the client may still play it).
        # Its audio still queued was just dropped: the client gets up to the first of that.
        for t in (turn, self._finished):
            if t is not None and t.utterance and t.utterance == self._utterance_counter:
                at_pts = t.sent_pts_ms
                for it in purged:
                    if it.utterance == t.utterance and it.pts_ms is not None:
                        at_pts = min(at_pts, it.pts_ms)
                break
        if notify:
            self._send(stop_event(self._utterance_counter, at_pts_ms=round(at_pts, 1),
                                  ramp_ms=self.settings.stop_ramp_ms, reason=reason))

    async def _speak_loop(self) -> None:
        while not self.closed:
            if not self._turns:
                self._turn_ready.clear()
                await self._turn_ready.wait()
                continue
            turn = self._turns.popleft()
            self._current = turn
            turn.task = asyncio.create_task(self._speak_turn(turn))
            try:
                await asyncio.wait({turn.task})
            finally:
                if self._current is turn:
                    self._current = None
                self._finished = turn

    async def _speak_turn(self, turn: _Turn) -> None:
        text = turn.text if turn.text is not None else turn.stream
        try:
            if turn.feed is not None:
                utt: Any = self.engine.audio_stream_utterance(
                    turn.feed, sample_rate=self.sample_rate, text=turn.feed.text,
                    language=turn.feed.language, record=False,
                )
            elif turn.audio is not None:
                pcm, known, language = turn.audio
                utt = self.engine.audio_utterance(
                    pcm, sample_rate=self.sample_rate, text=known, language=language,
                    record=False,
                )  # fmt: skip
            else:
                assert text is not None
                source = self.engine.tts(self.tts)
                options = {"session_id": self.session_id} if source.capabilities.sessions else None
                utt = await self.engine.utterance(
                    text, voice=self.voice or self.voice_id, tts=self.tts, options=options,
                    record=False,
                )
        except LipcoreError as exc:
            self.usage.errors += 1
            self._send(error_event(exc.code, exc.public_message or str(exc)))
            return
        turn.utt = utt
        self._utterance_counter += 1
        n = turn.utterance = self._utterance_counter
        self.usage.utterances += 1
        if turn.text is not None and turn.audio is None and turn.feed is None:
            self.usage.tts_characters += len(turn.text)
        started = False
        single = self.viseme_mode == "single"
        inline = self.viseme_mode == "inline"
        steps = 0
        patches: MouthPatchStream | None = None  # variant C: opened on the first audio
        try:
            async for step in utt:
                chunk = step.chunk
                if not started:
                    started = True
                    self._send(utterance_start_event(
                        n, sample_rate=chunk.sample_rate, text=turn.text,
                        server_time_ms=round(_now_ms(), 1)), utterance=n)
                # Sources that stamp their chunks (lipcore.testing) let us measure ourselves.
                t_chunk = getattr(chunk, "yielded_at", None)
                t_due = getattr(chunk, "due_at", None)
                # The contract's one-frame events stay final-only; the batched and inline forms
                # may carry a guess that later frames with the same pts replace.
                event = None
                if single:
                    for f in step.frames:
                        self._send_text(encode_viseme(n, f), utterance=n, viseme=True)
                elif step.frames:
                    event = encode_visemes(n, step.frames)
                elif step.provisional:
                    event = encode_visemes(n, step.provisional, provisional=True)
                # visemes=inline: the frames ride in the chunk's audio frame (one message).
                carried = inline and bool(chunk.audio)
                if event is not None and not carried:
                    self._send_text(event, utterance=n, viseme=True)
                if chunk.audio:
                    self._send_audio(chunk.audio, utterance=n, pts_ms=chunk.pts_ms,
                                     t_chunk=t_chunk, t_due=t_due,
                                     visemes=event if carried else None)
                    self.usage.audio_seconds += chunk.duration_ms / 1000.0
                    if self.patcher is not None:
                        if patches is None:
                            patches = self.patcher.stream(sample_rate=chunk.sample_rate)
                        done = await asyncio.to_thread(patches.push, chunk.audio, chunk.pts_ms)
                        self._send_patches(done, utterance=n)
                turn.sent_pts_ms = max(turn.sent_pts_ms, chunk.end_ms)
                outbox = self.outbox
                if outbox is not None and outbox.over_high_water:
                    await outbox.backpressure()
                # A TTS that yields without suspending must not starve the other sessions: give
                # the loop a turn every 4 chunks (~a few ms of work). A real-time TTS suspends
                # anyway; a turn per chunk would cost every session an extra task step per chunk.
                steps += 1
                if steps % 4 == 0:
                    await asyncio.sleep(0)
            if patches is not None:
                self._send_patches(await asyncio.to_thread(patches.finish), utterance=n)
            if not started:  # the source produced nothing at all
                self._send(utterance_start_event(
                    n, sample_rate=self.sample_rate, text=turn.text,
                    server_time_ms=round(_now_ms(), 1)), utterance=n)
            self._send(utterance_end_event(n, duration_ms=round(utt.audio_ms, 1)), utterance=n)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # TTS failure mid-utterance: tell the client, ramp to rest
            self.usage.errors += 1
            code = exc.code if isinstance(exc, LipcoreError) else "internal"
            logger.warning("utterance failed", extra={"session_id": self.session_id,
                                                      "utterance": n, "error": str(exc)})
            message = ((exc.public_message or str(exc)) if isinstance(exc, LipcoreError)
                       else "internal error")
            self._send(error_event(code, message, utterance=n))
            self._send(stop_event(n, at_pts_ms=round(turn.sent_pts_ms, 1),
                                  ramp_ms=self.settings.stop_ramp_ms, reason="error"))

    # -- connection ------------------------------------------------------------------------

    def _mouth_fps(self) -> float:
        fps = getattr(self.patcher, "fps", None)
        return float(fps) if isinstance(fps, (int, float)) and fps > 0 else self.engine.settings.fps

    def _hello(self, resumed: bool) -> dict[str, Any]:
        s = self.settings
        return hello_event(
            session_id=self.session_id,
            # The rate of what draws the mouth: the viseme frames, or for an audio-driven
            # avatar (Wav2Lip) the server's mouth patches (the avatar's video rate).
            fps=self._mouth_fps(),
            viseme_fps=self.engine.settings.fps,
            sample_rate=self.sample_rate,
            lipsync=self.lipsync,
            server_time_ms=round(_now_ms(), 1),
            viseme_events=self.viseme_mode,
            lead_ms=self.engine.settings.lead_ms,
            resumed=resumed,
            limits={"max_text_chars": s.max_text_chars,
                    "max_queued_utterances": s.max_queued_utterances,
                    "max_message_bytes": s.max_message_bytes},
        )

    async def serve(self, transport: Transport, *, viseme_mode: VisemeMode | None = None,
                    lipsync: dict[str, Any] | None = None) -> None:
        """Run one client connection until it ends (the WebSocket endpoint calls this)."""
        if lipsync is not None:
            self.lipsync = lipsync
        while True:
            old = self.transport
            if old is not None:
                await self._detach(old, code=4409,
                                   reason="replaced by a newer connection to this session")
            # A detach of the previous connection still cancelling its utterance holds the
            # lock: attach after it, so nothing of that utterance reaches this connection.
            async with self._lock:
                pass
            if self.transport is None:  # (no other connection attached meanwhile)
                break
        # Nothing below awaits until the hello is queued.
        self.transport = transport
        self.viseme_mode = viseme_mode or self.settings.viseme_events
        self.disconnected_at = None
        self._invalid = 0
        self.touch()

        def hopeless(reason: str) -> None:
            logger.warning("dropping slow client", extra={"session_id": self.session_id})
            self.last_close = {"code": 4408, "reason": reason}
            # Detach at once (stops the TTS, frees the queue); the socket may take a while to
            # close, since a client that does not read does not read the close frame either.
            if self.transport is transport:
                self._detaching = asyncio.get_running_loop().create_task(
                    self._detach(transport, code=4408, reason=reason))

        self.outbox = Outbox(
            transport,
            max_messages=self.settings.send_queue_max_messages,
            max_bytes=self.settings.send_queue_max_bytes,
            on_hopeless=hopeless,
            latency=self.manager.latency,
            lag=self.manager.lag,
            usage=self.usage,
        )
        self._writer = asyncio.create_task(self.outbox.run(), name=f"writer-{self.session_id}")
        resumed = self.connected_once
        self.connected_once = True
        self._send(self._hello(resumed))
        logger.info("client connected", extra={"session_id": self.session_id,
                                               "resumed": resumed})
        try:
            while True:
                msg = await transport.receive()
                if msg is None or self.transport is not transport:
                    break
                await self._on_message(msg.text, msg.data)
        finally:
            if self.transport is transport:
                await self._detach(transport, code=None, reason="")

    async def _close_transport(self, transport: Transport, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(transport.close(code, reason), 5.0)

    async def _detach(self, transport: Transport, *, code: int | None, reason: str) -> None:
        """Forget the connection: the utterance in flight is cancelled (not replayed) and the
        queue dropped; the session waits for a reconnect within the grace period."""
        if self.transport is not transport:
            return
        # Take this connection's queue and writer before anything awaits: a reconnect may
        # attach its own meanwhile, and those must not be the ones closed here.
        outbox, writer = self.outbox, self._writer
        self.transport, self.outbox, self._writer = None, None, None
        self.disconnected_at = time.monotonic()
        if outbox is not None:
            outbox.close()  # from now on nothing is sent on this connection
        async with self._lock:  # a reconnect attaches only after this (serve takes the lock)
            await self._stop_locked(reason="server", notify=False)
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        if code is not None:
            if self.last_close is None or self.last_close.get("code") != 4408:
                self.last_close = {"code": code, "reason": reason}
            await self._close_transport(transport, code, reason)
        logger.info("client disconnected", extra={"session_id": self.session_id})

    async def _on_message(self, text: str | None, data: bytes | None) -> None:
        self.touch()
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > self.settings.max_message_bytes:
            self._bad("message_too_big",
                      f"message of {size} bytes is over the {self.settings.max_message_bytes} "
                      "byte limit")
            return
        if text is None:
            try:
                self.audio_data(data or b"")
            except LimitError as exc:  # the recording ends there; its later frames are dropped
                self._send(error_event(exc.code, str(exc)))
            except LipcoreError as exc:
                self._bad("bad_message", str(exc))
            return
        try:
            msg = parse_client_message(text)
        except (ValidationError, ValueError) as exc:
            self._bad("bad_message", _describe_validation(exc))
            return
        try:
            if isinstance(msg, Ping):
                self._send(pong_event(msg.id, client_time_ms=msg.client_time_ms,
                                      server_time_ms=round(_now_ms(), 3)))
            elif isinstance(msg, Speak):
                await self.speak(msg.text, barge_in=msg.barge_in)
            elif isinstance(msg, TextDelta):
                self.text_delta(msg.delta)
            elif isinstance(msg, TextEnd):
                self.text_end()
            elif isinstance(msg, StopRequest):
                await self.stop(reason="client")
            elif isinstance(msg, AudioStart):
                await self.audio_start(text=msg.text, language=msg.language,
                                       barge_in=msg.barge_in)
            elif isinstance(msg, AudioEnd):
                self.audio_end()
        except LipcoreError as exc:
            self._send(error_event(exc.code, str(exc)))

    def _bad(self, code: str, message: str) -> None:
        self._invalid += 1
        self._send(error_event(code, message))
        if self._invalid >= self.settings.max_invalid_messages and self.transport is not None:
            transport = self.transport
            self.last_close = {"code": 4400, "reason": "too many invalid messages"}
            asyncio.get_running_loop().create_task(
                self._close_transport(transport, 4400, "too many invalid messages"))

    async def close(self, *, code: int = 1000, reason: str = "session closed") -> None:
        """End the session: stop speaking, close the connection, forget everything."""
        if self.closed:
            return
        transport = self.transport
        if transport is not None:
            await self._detach(transport, code=code, reason=reason)
        self.closed = True
        self._turn_ready.set()
        if self._speaker is not None:
            self._speaker.cancel()
            with contextlib.suppress(BaseException):
                await self._speaker
        source = self.engine.tts(self.tts)
        if source.capabilities.sessions:
            try:
                await source.close_session(self.session_id)
            except Exception:  # a vendor hiccup at the end must not keep the session alive
                logger.warning("closing the TTS session failed", exc_info=True,
                               extra={"session_id": self.session_id})


def _describe_validation(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errs = exc.errors()
        if errs and errs[0].get("type") == "json_invalid":
            return "message is not valid JSON"
        parts = []
        for e in errs[:3]:
            loc = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return "invalid message: " + "; ".join(parts)
    return f"invalid message: {exc}"


# --------------------------------------------------------------------------- manager


class SessionManager:
    """All sessions of one app, with the janitor that expires idle and abandoned ones."""

    def __init__(self, settings: ServerSettings, engine: Any) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions: dict[str, Session] = {}
        self._gone: deque[str] = deque(maxlen=10_000)
        self._gone_set: set[str] = set()
        self._janitor: asyncio.Task[None] | None = None
        # Server-added latency (chunk yielded → frame written) and event lag (chunk due on
        # the TTS's schedule → frame written), for sources that stamp their chunks.
        self.latency = LatencyStats()
        self.lag = LatencyStats()
        # What session ids start with after "s_": a worker's "<worker id>." in a cluster, so
        # the balancer routes by the id alone (lipcore.server.cluster).
        self.id_prefix = ""
        # Called with each session it closes (usage metering: lipcore.server.metering).
        self.close_hooks: list[Callable[[Session], None]] = []

    def _ensure_janitor(self) -> None:
        # Started lazily: a mounted sub-app gets no lifespan events from its host.
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.create_task(self._janitor_loop(), name="lipcore-janitor")

    async def create(self, *, avatar_id: str, voice_id: str, tts: str | None,
                     lipsync: dict[str, Any]) -> Session:
        if len(self.sessions) >= self.settings.max_sessions:
            raise TooManySessionsError(
                f"the server holds {len(self.sessions)} sessions, its limit "
                f"(max_sessions={self.settings.max_sessions}); close idle sessions or retry later"
            )
        source = self.engine.tts(tts)
        voice = await self.engine.resolve_voice(voice_id, tts)
        rates = getattr(source, "capabilities", None)
        rate = rates.sample_rates[0] if rates and rates.sample_rates else 22050
        session = Session(
            manager=self,
            session_id="s_" + self.id_prefix + secrets.token_urlsafe(16),
            token=secrets.token_urlsafe(32),
            avatar_id=avatar_id,
            voice_id=voice.id,
            tts=tts,
            lipsync=lipsync,
            sample_rate=rate,
            voice=voice,
        )
        self.sessions[session.session_id] = session
        self._ensure_janitor()
        logger.info("session created", extra={"session_id": session.session_id,
                                               "avatar_id": avatar_id, "voice_id": voice.id})
        return session

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            if session_id in self._gone_set:
                raise SessionGoneError(
                    f"session {session_id} has expired or was closed; create a new one"
                )
            raise SessionNotFoundError(f"no session {session_id!r}")
        return session

    async def close(self, session_id: str, *, code: int = 1000,
                    reason: str = "session closed") -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            self.get(session_id)  # raises the right error
            return
        if len(self._gone) == self._gone.maxlen:
            self._gone_set.discard(self._gone[0])
        self._gone.append(session_id)
        self._gone_set.add(session_id)
        await session.close(code=code, reason=reason)
        for hook in self.close_hooks:
            try:
                hook(session)
            except Exception:  # accounting must not keep a session from closing
                logger.exception("a session close hook failed")
        logger.info("session closed", extra={"session_id": session_id, "reason": reason})

    async def close_all(self) -> None:
        for sid in list(self.sessions):
            await self.close(sid, code=SHUTDOWN_CLOSE_CODE, reason="server shutting down")
        if self._janitor is not None:
            self._janitor.cancel()

    async def _janitor_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.janitor_interval_s)
            now = time.monotonic()
            for sid, session in list(self.sessions.items()):
                try:
                    if session.outbox is not None:
                        session.outbox.check_stalled(s.send_timeout_s)
                    if (session.disconnected_at is not None
                            and now - session.disconnected_at > s.reconnect_grace_s):
                        await self.close(sid, code=4410, reason="reconnect grace period over")
                    elif (session.disconnected_at is None and not session.connected
                          and now - session.created > s.reconnect_grace_s):
                        await self.close(sid, code=4410, reason="no client connected in time")
                    elif (now - session.last_activity > s.session_idle_timeout_s
                          and session._current is None):
                        await self.close(sid, code=4410, reason="session idle timeout")
                except Exception:  # one bad session must not stop the janitor
                    logger.exception("janitor failed on a session")
