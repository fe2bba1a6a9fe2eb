"""``LipcoreFrameSerializer``: Pipecat's WebSocket transports speaking lipcore's wire protocol v1
(docs/protocol.md), so that lipcore's web and Flutter clients are Pipecat clients that draw the
mouth themselves from viseme events.

Out (Pipecat → client): ``hello`` (:meth:`LipcoreFrameSerializer.hello_frame`, queue it when
the client connects), ``utterance_start``/``visemes``/``utterance_end`` from
:class:`~lipcore_pipecat.LipcoreTTSService`'s frames, audio as binary frames (kind 1, or kind 3
with the chunk's viseme event inline on ``visemes="inline"`` connections), ``stop`` when the
pipeline is interrupted, ``pong`` and ``error``. In (client → Pipecat): ``speak`` and streamed
``text_delta``/``text_end`` become the user's message to the LLM (or, with
``text_in="speak"``, text for the TTS to say; ``barge_in`` interrupts the pipeline first),
``stop`` interrupts the pipeline, ``ping`` is answered. The encoders are lipcore's own
(:mod:`lipcore.server.protocol`).

A Pipecat serializer returns at most one message per frame; the protocol's order holds because
lipcore's frames travel in the output transport's audio queue (see
:mod:`lipcore_pipecat.frames`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer
from pydantic import ValidationError

from lipcore.interfaces import VisemeFrame
from lipcore.server.protocol import (
    DEFAULT_CLASSES,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    Ping,
    Speak,
    StopRequest,
    TextDelta,
    TextEnd,
    encode_visemes,
    pack_audio_visemes,
    pack_frame,
    parse_client_message,
)
from lipcore_pipecat.frames import (
    LipcoreUtteranceEndFrame,
    LipcoreUtteranceStartFrame,
    LipcoreVisemesFrame,
)

__all__ = ["LipcoreFrameSerializer"]

VisemeForm = Literal["batched", "inline"]
TextIn = Literal["user", "speak"]


def _now_ms() -> float:
    return time.time() * 1000.0


def _err(code: str, message: str) -> OutputTransportMessageUrgentFrame:
    """An ``error`` for the client; it travels down the pipeline to the output transport."""
    return OutputTransportMessageUrgentFrame(
        message={"type": "error", "code": code, "message": message})


@dataclass
class _Utt:
    """One utterance on this connection."""

    n: int
    sample_rate: int
    samples: int = 0  # audio samples sent (at sample_rate): the next chunk's pts
    ended: bool = False
    stopped: bool = False
    resampler: Any = None  # soxr stream, when audio arrives at another rate

    @property
    def pts_ms(self) -> float:
        return self.samples * 1000.0 / self.sample_rate


class LipcoreFrameSerializer(FrameSerializer):
    """Serializer for Pipecat's WebSocket transports speaking lipcore's protocol v1.

    Args:
        session_id: the session id the ``hello`` names.
        lipsync: the avatar's ``lipsync`` block for the ``hello`` (its type, asset URLs and
            ROI: ``GET /avatars/{id}``'s ``lipsync_assets``), so the client loads the mouth.
        visemes: ``"inline"`` (each chunk's viseme event inside its audio frame, kind 3: what
            lipcore's clients ask for with ``?visemes=inline``) or ``"batched"`` (text
            events). The one-frame ``single`` form needs several messages per chunk, which a
            Pipecat serializer cannot send: it is refused.
        text_in: what a client's ``speak``/``text_*`` means: ``"user"`` (the user's message
            for the LLM, ``LLMMessagesAppendFrame`` with ``run_llm``) or ``"speak"`` (text the
            bot says as it is, ``TTSSpeakFrame``; streamed text goes to the TTS as LLM text).
        sample_rate: the rate of the audio sent; ``None`` takes the pipeline's output rate.
            Audio that reaches the serializer at another rate is resampled to it.
        fps, lead_ms: the viseme frame rate and mouth lead the ``hello`` announces (the
            engine's settings: 30 fps, 20 ms by default).
        max_text_chars, max_message_bytes, max_invalid_messages: client message limits (as
            lipcore's server: the ``hello`` announces them; a client that sends more invalid
            messages than the limit is disconnected).
        stop_ramp_ms: the ``ramp_ms`` of ``stop`` events (100–200).
    """

    def __init__(
        self,
        *,
        session_id: str = "pipecat",
        lipsync: Mapping[str, Any] | None = None,
        visemes: str = "inline",
        text_in: TextIn = "user",
        sample_rate: int | None = None,
        fps: float = 30.0,
        lead_ms: float = 20.0,
        max_text_chars: int = 5000,
        max_message_bytes: int = 64 * 1024,
        max_invalid_messages: int = 20,
        stop_ramp_ms: float = 150.0,
        params: FrameSerializer.InputParams | None = None,
    ) -> None:
        super().__init__(params)
        if visemes not in ("batched", "inline"):
            raise ValueError(
                f"visemes={visemes!r}: LipcoreFrameSerializer sends 'inline' or 'batched' viseme "
                "events ('single' needs several messages per audio chunk)")
        if text_in not in ("user", "speak"):
            raise ValueError(f"text_in={text_in!r}: expected 'user' or 'speak'")
        if not 100 <= stop_ramp_ms <= 200:
            raise ValueError(f"stop_ramp_ms={stop_ramp_ms}: the protocol allows 100-200 ms")
        self.session_id = session_id
        self.lipsync = dict(lipsync or {"type": "sprites"})
        self.visemes: VisemeForm = visemes  # type: ignore[assignment]
        self.text_in: TextIn = text_in
        self._sample_rate = sample_rate
        self.fps = fps
        self.lead_ms = lead_ms
        self.max_text_chars = max_text_chars
        self.max_message_bytes = max_message_bytes
        self.max_invalid_messages = max_invalid_messages
        self.stop_ramp_ms = stop_ramp_ms
        self._counter = 0
        self._by_context: dict[str, _Utt] = {}
        self._current: _Utt | None = None
        self._pending: LipcoreVisemesFrame | None = None  # inline: waits for its audio
        self._pending_n = 0
        self._invalid = 0
        self._client_stop = False  # the next stop answers the client's own stop
        self._stream: list[str] = []  # text_delta of the streamed turn (text_in="user")
        self._streamed_chars = 0
        self._worker: Any = None  # the PipelineWorker (from setup), for barge-in
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sample_rate(self) -> int:
        """The rate of the audio this serializer sends (and announces)."""
        return self._sample_rate or 24000

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        if self._sample_rate is None and setup.audio_out_sample_rate:
            self._sample_rate = setup.audio_out_sample_rate
        self._worker = getattr(setup, "pipeline_worker", None)

    # -- out ------------------------------------------------------------------------------

    def hello(self, *, resumed: bool = False) -> dict[str, Any]:
        """The ``hello`` message (protocol v1) for this connection."""
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "session_id": self.session_id,
            "fps": self.fps,
            "classes": list(DEFAULT_CLASSES),
            "audio": {"format": "s16le", "sample_rate": self.sample_rate, "channels": 1},
            "lipsync": self.lipsync,
            "server_time_ms": round(_now_ms(), 1),
            "viseme_events": self.visemes,
            "lead_ms": self.lead_ms,
            "resumed": resumed,
            "limits": {"max_text_chars": self.max_text_chars,
                       "max_queued_utterances": 0,
                       "max_message_bytes": self.max_message_bytes},
        }

    def hello_frame(self) -> OutputTransportMessageUrgentFrame:
        """A frame carrying the ``hello``: queue it on the pipeline when the client connects
        (``on_client_connected``); a lipcore client waits for it before anything else."""
        return OutputTransportMessageUrgentFrame(message=self.hello())

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            return self._audio(frame)
        if isinstance(frame, LipcoreVisemesFrame):
            return self._visemes(frame)
        if isinstance(frame, LipcoreUtteranceStartFrame):
            return self._start(frame)
        if isinstance(frame, LipcoreUtteranceEndFrame):
            return self._end(frame)
        if isinstance(frame, InterruptionFrame):
            return self._stop()
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            msg = frame.message
            if isinstance(msg, Mapping) and self.should_ignore_frame(frame):
                return None
            # Only the protocol's own messages (hello, pong, error, ...) reach a lipcore client;
            # other transport messages (RTVI, an app's) are not part of protocol v1.
            if isinstance(msg, Mapping) and msg.get("type") in SERVER_MESSAGES \
                    and msg.get("label") is None:
                return json.dumps(msg, separators=(",", ":"))
            return None
        return None  # nothing else is part of the protocol (EndFrame: the socket closes)

    def _start(self, frame: LipcoreUtteranceStartFrame) -> str:
        self._counter += 1
        self._pending = None
        utt = _Utt(n=self._counter, sample_rate=self.sample_rate)
        self._by_context[frame.context_id] = utt
        self._current = utt
        return json.dumps({"type": "utterance_start", "utterance": utt.n,
                           "sample_rate": utt.sample_rate, "text": frame.text,
                           "server_time_ms": round(_now_ms(), 1)}, separators=(",", ":"))

    def _live(self, context_id: str) -> _Utt | None:
        utt = self._by_context.get(context_id)
        if utt is None or utt.stopped or utt.ended:
            return None  # unknown, or nothing of it may follow its stop/end
        return utt

    def _visemes(self, frame: LipcoreVisemesFrame) -> str | None:
        utt = self._live(frame.context_id)
        if utt is None or not frame.frames:
            return None
        if self.visemes == "batched":
            return encode_visemes(utt.n, frame.frames, provisional=frame.provisional)
        # inline: the event rides in front of the next audio chunk of this utterance. Two
        # events before one chunk (a short TTS chunk fills no transport chunk) are merged when
        # they are of one kind; otherwise the older goes out now as a text event.
        out: str | None = None
        pending = self._pending
        if pending is not None and self._pending_n == utt.n:
            if pending.provisional == frame.provisional:
                frames: list[VisemeFrame] = list(pending.frames)
                frames += [f for f in frame.frames if f.pts_ms > frames[-1].pts_ms]
                frame = LipcoreVisemesFrame(context_id=frame.context_id, frames=frames,
                                            provisional=frame.provisional)
            elif not pending.provisional:
                return None  # a guess never follows a final frame
            else:
                out = encode_visemes(utt.n, pending.frames, provisional=True)
        self._pending, self._pending_n = frame, utt.n
        return out

    def _audio(self, frame: OutputAudioRawFrame) -> bytes | None:
        utt = self._current
        if utt is None or utt.stopped or utt.ended:
            # Audio outside a lipcore utterance (another TTS, a sound): an utterance of its
            # own with no viseme events, which lipcore's clients play as such.
            self._counter += 1
            utt = self._current = _Utt(n=self._counter, sample_rate=self.sample_rate)
        pcm = frame.audio
        if frame.num_channels != 1:
            pcm = np.frombuffer(pcm, dtype="<i2").reshape(-1, frame.num_channels) \
                .mean(axis=1).astype("<i2").tobytes()
        if frame.sample_rate != utt.sample_rate:
            if utt.resampler is None or utt.resampler[0] != frame.sample_rate:
                # "LQ": it holds back little (up to ~6 ms; the better qualities hold 15-35 ms,
                # which the end of an utterance would lose: a serializer cannot flush later).
                utt.resampler = (frame.sample_rate,
                                 soxr.ResampleStream(frame.sample_rate, utt.sample_rate, 1,
                                                     dtype="int16", quality="LQ"))
            y = utt.resampler[1].resample_chunk(np.frombuffer(pcm, dtype="<i2"))
            pcm = np.asarray(y, dtype="<i2").tobytes()
            if not pcm:
                return None
        pts = utt.pts_ms
        utt.samples += len(pcm) // 2
        pending = self._pending
        if pending is not None and self._pending_n == utt.n:
            self._pending = None
            event = encode_visemes(utt.n, pending.frames, provisional=pending.provisional)
            return pack_audio_visemes(event, pcm, utterance=utt.n, pts_ms=pts)
        return pack_frame(pcm, utterance=utt.n, pts_ms=pts)

    def _end(self, frame: LipcoreUtteranceEndFrame) -> str | None:
        utt = self._live(frame.context_id)
        if utt is None:
            return None
        utt.ended = True
        if self._pending is not None and self._pending_n == utt.n:
            # Frames with no audio after them: the mouth closing after the last sound. The
            # TTS's last chunk of audio normally carries them; if not, they go unsent, and the
            # client ramps to rest at utterance_end anyway.
            logger.debug(f"{self}: viseme event of utterance {utt.n} had no audio to ride on")
            self._pending = None
        return json.dumps({"type": "utterance_end", "utterance": utt.n,
                           "duration_ms": max(frame.duration_ms, 0.0), "reason": "done"},
                          separators=(",", ":"))

    def _stop(self) -> str | None:
        utt = self._current
        by_client, self._client_stop = self._client_stop, False
        if utt is None or utt.stopped:
            # Nothing was said since the last stop: interruptions (every time the user starts
            # speaking) send no stop, so a storm of them costs the client nothing.
            return None
        utt.stopped = True
        self._pending = None
        return json.dumps({"type": "stop", "utterance": utt.n,
                           "at_pts_ms": round(utt.pts_ms, 1), "ramp_ms": self.stop_ramp_ms,
                           "reason": "client" if by_client else "barge_in"},
                          separators=(",", ":"))

    # -- in -------------------------------------------------------------------------------

    async def deserialize(self, data: str | bytes) -> Frame | None:
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > self.max_message_bytes:
            return self._bad("message_too_big", f"message of {size} bytes is over the "
                             f"{self.max_message_bytes} byte limit")
        if isinstance(data, bytes):
            return self._bad("bad_message", "binary messages are not accepted from clients")
        try:
            msg = parse_client_message(data)
        except (ValidationError, ValueError) as exc:
            return self._bad("bad_message", _describe(exc))
        if isinstance(msg, Ping):
            return OutputTransportMessageUrgentFrame(message={
                "type": "pong", "id": msg.id, "client_time_ms": msg.client_time_ms,
                "server_time_ms": round(_now_ms(), 3)})
        if isinstance(msg, StopRequest):
            self._client_stop = True
            return InterruptionFrame()
        if isinstance(msg, Speak):
            text = msg.text.strip()
            if not text:
                return _err("empty_text", "text is empty")
            if len(text) > self.max_text_chars:
                return _err("limit_exceeded", f"text is {len(text)} characters; the limit is "
                            f"{self.max_text_chars}")
            if msg.barge_in and self._worker is not None:
                return self._barge_in(self._text(text))
            return self._text(text)
        if isinstance(msg, TextDelta):
            self._streamed_chars += len(msg.delta)
            if self._streamed_chars > self.max_text_chars:
                self._stream.clear()
                self._streamed_chars = 0
                return _err("limit_exceeded", "streamed turn is over the "
                            f"{self.max_text_chars} character limit")
            if self.text_in == "speak":
                return LLMTextFrame(msg.delta) if msg.delta else None
            self._stream.append(msg.delta)
            return None
        if isinstance(msg, TextEnd):
            self._streamed_chars = 0
            if self.text_in == "speak":
                return LLMFullResponseEndFrame()
            text, self._stream = "".join(self._stream).strip(), []
            return self._text(text) if text else None
        return None  # (every client message type is handled above)

    def _barge_in(self, then: Frame) -> Frame:
        """Interrupt what the bot says (the input transport pushes the returned interruption),
        then, once the pipeline has processed it, put the new text in (as RTVI's send-text
        does): queued at once, the text would be dropped by the interruption it follows."""

        async def follow() -> None:
            await self._worker.flush_pipeline()
            await self._worker.queue_frame(then)

        task = asyncio.get_running_loop().create_task(follow())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return InterruptionFrame()

    def _text(self, text: str) -> Frame:
        if self.text_in == "speak":
            return TTSSpeakFrame(text)
        return LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}],
                                      run_llm=True)

    def _bad(self, code: str, message: str) -> Frame:
        self._invalid += 1
        if self._invalid > self.max_invalid_messages:
            # As lipcore's server closes such a client (4400): the pipeline ends and the
            # transport closes the socket.
            logger.warning(f"{self}: too many invalid messages from the client; ending")
            return EndFrame()
        return _err(code, message)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))
    return str(exc)
