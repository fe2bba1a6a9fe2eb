"""LiveKit's avatar interfaces over lipcore's live renderer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit import rtc
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    AvatarSession,
    QueueAudioOutput,
    VideoGenerator,
)

from lipcore.live import LiveRenderer, SharedAvatar, VideoFormat, WordTiming, shared_avatar

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from lipcore.avatar.store import Avatar
    from lipcore.engine import Engine
    from lipcore.interfaces import AudioVisemeEstimator

__all__ = ["LipcoreAvatarSession", "LipcoreVideoGenerator", "words_from_frame"]

logger = logging.getLogger("lipcore.livekit")

#: Where LiveKit TTS plugins put word timings on the audio frames they emit.
TIMED_TRANSCRIPTS = "lk.timed_transcripts"


def words_from_frame(frame: rtc.AudioFrame) -> list[WordTiming]:
    """The words a TTS attached to ``frame`` (``userdata["lk.timed_transcripts"]``:
    ``TimedString`` s with ``start_time``/``end_time`` in seconds from the start of the
    segment's audio); words without both times are left out (the mouth then follows the
    audio for them)."""
    out: list[WordTiming] = []
    userdata = getattr(frame, "userdata", None) or {}
    for item in userdata.get(TIMED_TRANSCRIPTS) or ():
        start = getattr(item, "start_time", None)
        end = getattr(item, "end_time", None)
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            continue
        text = str(item).strip()
        if text and end >= start:
            out.append(WordTiming(text, float(start) * 1000.0, float(end) * 1000.0))
    return out


class LipcoreVideoGenerator(VideoGenerator):
    """LiveKit's ``VideoGenerator`` for one lipcore avatar.

    ``push_audio`` takes the agent's TTS frames (any rate, any channels; word timings from
    their ``lk.timed_transcripts``) and ``AudioSegmentEnd`` at the end of each reply;
    ``clear_buffer`` is a barge-in (:meth:`LiveRenderer.clear`). Iterating yields, per video
    frame, a ``VideoFrame`` and while speaking the ``AudioFrame`` of exactly
    ``sample_rate/fps`` samples it shows, then ``AudioSegmentEnd`` after a reply's last
    audio. With nothing to say it yields the idle loop. It never waits for input: the
    ``AVSynchronizer`` it feeds paces it (its queues push back)."""

    def __init__(self, live: LiveRenderer) -> None:
        if live.video_format == "rgb":
            raise ValueError("LiveKit takes RGBA or I420 frames; use video_format='rgba'/'i420'")
        self.live = live
        self._buffer_type = (
            rtc.VideoBufferType.RGBA if live.video_format == "rgba" else rtc.VideoBufferType.I420
        )
        self._wake = asyncio.Event()
        # Word times are read as ms from the start of the reply's audio. A TTS whose clock
        # restarts per sentence (times going backwards) gets its words placed after the audio
        # received so far instead.
        self._received_ms = 0.0
        self._word_base_ms = 0.0
        self._last_word_ms = -1.0

    @property
    def options(self) -> AvatarOptions:
        """The ``AvatarOptions`` matching this generator's output."""
        return AvatarOptions(
            video_width=self.live.width,
            video_height=self.live.height,
            video_fps=self.live.fps,
            audio_sample_rate=self.live.sample_rate,
            audio_channels=1,
        )

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self.live.end_segment()
            self._reset_words()
        else:
            self.live.push_audio(
                bytes(frame.data.cast("B")) if isinstance(frame.data, memoryview) else frame.data,
                sample_rate=frame.sample_rate,
                channels=frame.num_channels,
                words=self._place(words_from_frame(frame)),
            )
            self._received_ms += frame.samples_per_channel * 1000.0 / frame.sample_rate
        self._wake.set()

    def _place(self, words: list[WordTiming]) -> list[WordTiming]:
        if not words:
            return words
        if words[0].start_ms + self._word_base_ms <= self._last_word_ms:
            self._word_base_ms = self._received_ms  # the TTS restarted its clock
        base = self._word_base_ms
        placed = [WordTiming(w.word, w.start_ms + base, w.end_ms + base) for w in words]
        self._last_word_ms = max(self._last_word_ms, placed[-1].start_ms)
        return placed

    def _reset_words(self) -> None:
        self._received_ms = 0.0
        self._word_base_ms = 0.0
        self._last_word_ms = -1.0

    def clear_buffer(self) -> None:
        self.live.clear()
        self._reset_words()
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncGenerator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        live = self.live
        while True:
            f = live.pull()
            yield rtc.VideoFrame(live.width, live.height, self._buffer_type, f.video.tobytes())
            if f.audio is not None:
                yield rtc.AudioFrame(f.audio.tobytes(), live.sample_rate, 1, len(f.audio))
            if f.segment_end:
                yield AudioSegmentEnd()
            # Let push_audio/clear_buffer run between frames even when the consumer does not
            # block (the synchronizer's queues do, at the video rate).
            await asyncio.sleep(0)


class LipcoreAvatarSession(AvatarSession[Any]):
    """LiveKit's ``AvatarSession`` for a lipcore avatar, rendered in the agent's process.

    ``avatar``: a lipcore avatar directory (or a loaded ``Avatar``); ``backend`` overrides its
    lip-sync back end. The avatar is loaded here, so an unknown avatar fails before the agent
    joins. ``start(agent_session, room)`` replaces the session's audio output with LiveKit's
    ``QueueAudioOutput`` and runs an ``AvatarRunner`` that publishes the avatar's audio and
    video from the agent's own participant. Other options go to :class:`LiveRenderer`."""

    def __init__(
        self,
        avatar: Avatar | str | Path,
        *,
        backend: str | None = None,
        engine: Engine | None = None,
        sample_rate: int = 24000,
        video_format: VideoFormat = "rgba",
        language: str = "en",
        estimator: AudioVisemeEstimator | None = None,
    ) -> None:
        super().__init__()
        self.shared: SharedAvatar = shared_avatar(avatar, engine=engine, backend=backend)
        self._engine = engine
        self._renderer_options: dict[str, Any] = {
            "sample_rate": sample_rate,
            "video_format": video_format,
            "language": language,
            "estimator": estimator,
        }
        self.generator: LipcoreVideoGenerator | None = None
        self.runner: AvatarRunner | None = None
        self.audio_output: QueueAudioOutput | None = None

    @property
    def avatar_identity(self) -> str:
        # Local mode: the agent's own participant publishes the avatar's tracks.
        if self._room is not None:
            return str(self._room.local_participant.identity)
        return "lipcore-avatar"

    @property
    def provider(self) -> str:
        return "lipcore"

    async def start(self, agent_session: AgentSession[Any], room: rtc.Room) -> None:
        await super().start(agent_session, room)
        live = LiveRenderer(self.shared, engine=self._engine, **self._renderer_options)
        self.generator = LipcoreVideoGenerator(live)
        self.audio_output = QueueAudioOutput(sample_rate=live.sample_rate)
        self.runner = AvatarRunner(
            room,
            audio_recv=self.audio_output,
            video_gen=self.generator,
            options=self.generator.options,
        )
        await self.runner.start()
        agent_session.output.replace_audio_tail(self.audio_output)

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()
            self.runner = None
        await super().aclose()
