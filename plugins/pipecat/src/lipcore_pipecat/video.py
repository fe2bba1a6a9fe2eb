"""``LipcoreVideoService``: server-rendered avatar video for any Pipecat transport.

A frame processor placed after the TTS service. It takes the TTS's audio (and the timings that
come with it) into lipcore's live renderer (:class:`lipcore.live.LiveRenderer`, the same
renderer the LiveKit adapter drives) and pushes, at the avatar's frame rate, one
``OutputImageRawFrame`` per video frame with the audio that frame shows right behind it. The
images are ``sync_with_audio``: the output transport shows each only once the audio before it
has been sent, so picture and sound leave in step whatever the transport's buffering.

Timings, best first:

* phonemes, from :class:`~lipcore_pipecat.LipcoreTTSService` with ``emit_timings=True``
  (lipcore's own sources know every phoneme's time): the mouth is exact;
* Pipecat's word timestamps (``TTSTextFrame.pts``, word starts, as e.g. ElevenLabs gives
  them): a word spans from its start to the next word's start (the audio waits for that word,
  about one word's length), and the renderer's grapheme-to-phoneme path places its sounds;
* nothing: the live renderer's audio-only estimator (``estimator=``, an
  :class:`lipcore.interfaces.AudioVisemeEstimator`; by default its loudness-driven fallback).

Silence shows the avatar's idle loop. An interruption clears the renderer (no queued audio is
played, the mouth ramps to rest over ``ramp_ms``) at once; Pipecat's output transport drops the
frames it had queued.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)

from lipcore.engine import Engine
from lipcore.errors import LipcoreError
from lipcore.interfaces import AudioVisemeEstimator
from lipcore.live import LiveFrame, LiveRenderer, SharedAvatar, WordTiming
from lipcore_pipecat.frames import LipcoreTimingsFrame, LipcoreVisemesFrame

__all__ = ["LipcoreVideoService"]


def _installed_estimator(engine: Engine) -> AudioVisemeEstimator | None:
    """The engine's default audio-only viseme estimator, where the engine has that registry
    (``engine.audio_viseme_estimator()``, the estimator plugins' hook); ``None`` leaves the live
    renderer's own loudness-driven fallback."""
    get = getattr(engine, "audio_viseme_estimator", None)
    if get is None:
        return None
    try:
        found = get()
    except LipcoreError as exc:  # none installed: the fallback it is
        logger.debug(f"no audio-only viseme estimator: {exc}")
        return None
    return found if isinstance(found, AudioVisemeEstimator) else None


class LipcoreVideoService(FrameProcessor):
    """Avatar video frames in step with the TTS audio (see the module docstring).

    Args:
        avatar: an avatar directory (``lipcore avatarize``), a loaded avatar, or a
            :func:`lipcore.live.shared_avatar` (shared by every session of the avatar).
        engine: the lipcore engine (its viseme mapper and mouth lead).
        sample_rate: the rate of the audio pushed on (default: the pipeline's output rate).
        estimator: visemes from audio alone, for TTS services that give no timings (default:
            the engine's audio-only estimator where one is installed, else the live
            renderer's loudness-driven fallback).
        ramp_ms: how long the mouth takes to rest after an interruption (100-200 ms).
        language: the language of the words, for the renderer's grapheme-to-phoneme path.

    The video is ``width`` x ``height`` RGB at ``fps``: configure the transport with
    ``video_out_enabled=True, video_out_width=svc.width, video_out_height=svc.height,
    video_out_framerate=svc.transport_framerate`` (not ``video_out_is_live``: the images are
    timed by the audio queue).
    """

    def __init__(
        self,
        avatar: str | Path | SharedAvatar | Any,
        *,
        engine: Engine | None = None,
        sample_rate: int | None = None,
        estimator: AudioVisemeEstimator | None = None,
        ramp_ms: float = 150.0,
        language: str = "en",
        sync_with_audio: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._sync_with_audio = sync_with_audio
        self._engine = engine or Engine()
        self._avatar = avatar
        self._estimator = estimator or _installed_estimator(self._engine)
        self._ramp_ms = ramp_ms
        self._language = language
        self._rate_arg = sample_rate
        # The renderer is built at once (the avatar loads and is checked here, not mid-call);
        # its output rate is fixed at StartFrame when it is the pipeline's.
        self._live = self._renderer(sample_rate or 24000)
        self._clock_task: asyncio.Task[None] | None = None
        self._held_stops: deque[Frame] = deque()
        self._word_base_ns: int | None = None  # pipeline clock at the utterance's first audio
        self._timed = False  # this utterance has phoneme timings (words are then not used)
        self._in_utterance = False
        self._last_word: tuple[str, float] | None = None  # its end is the next word's start
        self._held: list[tuple[bytes, int, int]] = []  # audio waiting for its word's timing
        self._held_ms = 0.0
        self._fed_ms = 0.0  # audio of this utterance given to the renderer
        self.frames_pushed = 0
        self.speech_frames_pushed = 0
        self.late_ticks = 0  # clock ticks that came more than a frame late (load)

    def _renderer(self, rate: int) -> LiveRenderer:
        # Pipecat's output transport draws "the current image" on its own timer, so an image
        # is on screen for one or two of its ticks: a /p b m/ closure shut for one frame only
        # could flash by unseen, so closures are held shut for two (80 ms at 25 fps).
        return LiveRenderer(self._avatar, engine=self._engine, sample_rate=rate,
                            video_format="rgb", estimator=self._estimator,
                            ramp_ms=self._ramp_ms, language=self._language,
                            min_closure_frames=2)

    @property
    def width(self) -> int:
        return int(self._live.width)

    @property
    def height(self) -> int:
        return int(self._live.height)

    @property
    def fps(self) -> int:
        return round(self._live.fps)

    @property
    def transport_framerate(self) -> int:
        """The ``video_out_framerate`` to give the transport: a little above the avatar's fps.
        Pipecat's (non-live) video task re-draws the current image every ``1/framerate`` s
        *plus* its own drawing time, so at exactly ``fps`` it falls behind and skips an image
        now and then (a one-frame /p b m/ closure can vanish); WebRTC tracks send at most 30
        frames a second, so more than that would only queue up."""
        return max(self.fps, 30)

    @property
    def renderer(self) -> LiveRenderer:
        """The live renderer (one per session)."""
        return self._live

    # -- frames in ----------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        rate = self._rate_arg or setup.audio_out_sample_rate
        if rate and rate != self._live.sample_rate:
            self._live = self._renderer(rate)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_clock()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop_clock()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self._live.clear()  # queued speech gone now; the mouth ramps to rest
            self._held_stops.clear()
            self._reset_utterance()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            self._begin()
            self._held.append((frame.audio, frame.sample_rate, frame.num_channels))
            self._held_ms += len(frame.audio) / 2 / frame.num_channels / frame.sample_rate * 1e3
            if self._last_word is None:
                self._release(float("inf"))  # no words (yet): nothing to wait for
            else:
                self._release(self._last_word[1])
        elif isinstance(frame, LipcoreTimingsFrame):
            self._begin()
            self._timed = True
            self._live.push_timings(phonemes=frame.phonemes)
            self._release(float("inf"))
        elif isinstance(frame, LipcoreVisemesFrame):
            pass  # the mouth is drawn here: viseme events for a client would be noise
        elif isinstance(frame, TTSTextFrame):
            if not self._timed and frame.pts is not None:
                self._word(frame)
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            if self._last_word is not None:
                text, start = self._last_word
                end = self._fed_ms + self._held_ms
                self._live.push_timings(words=[WordTiming(text, start, max(end, start + 50.0))])
            self._release(float("inf"))
            self._reset_utterance()
            self._live.end_segment()
            if self._live.speaking:
                # On when the utterance has played out: an output transport flushes its audio
                # buffer at a stop frame, which would cut into the audio still to come.
                self._held_stops.append(frame)
            else:
                await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _begin(self) -> None:
        """The first frame of an utterance (audio, timings or a word) starts its clock:
        Pipecat times words from the utterance's first audio on the pipeline clock, and those
        frames come in one step."""
        if not self._in_utterance:
            self._in_utterance = True
            self._word_base_ns = self.get_clock().get_time()

    def _reset_utterance(self) -> None:
        self._in_utterance = False
        self._word_base_ns = None
        self._timed = False
        self._last_word = None
        self._held.clear()
        self._held_ms = 0.0
        self._fed_ms = 0.0

    def _word(self, frame: TTSTextFrame) -> None:
        """A word start from Pipecat. Its end is the next word's start, so the word goes to the
        renderer when the next one arrives, and the audio waits for the word that covers it
        (a word's start comes before its audio): the mapper never finalizes a frame of speech
        it has no timing for."""
        assert frame.pts is not None
        self._begin()
        assert self._word_base_ns is not None
        start = max(0.0, (frame.pts - self._word_base_ns) / 1e6)
        text = frame.text.strip()
        if not any(c.isalnum() for c in text):
            return
        if self._last_word is not None:
            prev, prev_start = self._last_word
            self._live.push_timings(
                words=[WordTiming(prev, prev_start, max(start, prev_start + 1.0))])
        self._last_word = (text, start)
        self._release(start)

    def _release(self, until_ms: float) -> None:
        """Feed the held audio to the renderer up to ``until_ms`` on the utterance's timeline."""
        while self._held and self._fed_ms < until_ms:
            pcm, rate, channels = self._held[0]
            ms = len(pcm) / 2 / channels / rate * 1e3
            if self._fed_ms + ms > until_ms:
                n = int((until_ms - self._fed_ms) * rate / 1e3) * 2 * channels
                if n <= 0:
                    return
                pcm, rest = pcm[:n], pcm[n:]
                self._held[0] = (rest, rate, channels)
                ms = len(pcm) / 2 / channels / rate * 1e3
            else:
                self._held.pop(0)
            self._live.push_audio(pcm, sample_rate=rate, channels=channels)
            self._fed_ms += ms
            self._held_ms -= ms

    # -- frames out ---------------------------------------------------------------------

    def _start_clock(self) -> None:
        if self._clock_task is None:
            self._clock_task = self.create_task(self._clock(), name="lipcore-video-clock")

    async def _stop_clock(self) -> None:
        if self._clock_task is not None:
            await self.cancel_task(self._clock_task)
            self._clock_task = None

    async def _clock(self) -> None:
        """Pull one frame per video frame period, on an absolute schedule (no drift)."""
        period = 1.0 / self._live.fps
        t0 = time.monotonic()
        k = 0
        while True:
            try:
                await self._emit(self._live.pull())
            except Exception as exc:  # a broken avatar or back end: say so, stop the video
                await self.push_error(f"lipcore video stopped: {exc}", exception=exc)
                return
            k += 1
            due = t0 + k * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -period:
                self.late_ticks += 1
                if delay < -5 * period:  # far behind (a stall): start the schedule over
                    t0, k = time.monotonic(), 0

    async def _emit(self, f: LiveFrame) -> None:
        image = OutputImageRawFrame(image=f.video.tobytes(), size=(self.width, self.height),
                                    format="RGB")
        image.sync_with_audio = self._sync_with_audio
        await self.push_frame(image)
        self.frames_pushed += 1
        if f.audio is not None:
            self.speech_frames_pushed += 1
            await self.push_frame(TTSAudioRawFrame(f.audio.tobytes(), self._live.sample_rate,
                                                   1))
        if f.segment_end and self._held_stops:
            await self.push_frame(self._held_stops.popleft())
        elif self._held_stops and not self._live.speaking:
            while self._held_stops:  # (the utterance was cleared or had no audio)
                await self.push_frame(self._held_stops.popleft())

    async def cleanup(self) -> None:
        await self._stop_clock()
        await super().cleanup()  # type: ignore[no-untyped-call]
        logger.debug(f"{self}: {self.frames_pushed} frames, {self.late_ticks} late ticks")
