"""LiveKit's own AvatarRunner drives lipcore's generator, offline: a mocked room, and LiveKit's
real QueueAudioOutput, AudioSource, VideoSource and AVSynchronizer (as LiveKit tests its
avatar plugins; no LiveKit server is reachable here)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import numpy as np
import pytest
from lipcore_livekit import LipcoreAvatarSession, LipcoreVideoGenerator, words_from_frame
from livekit import rtc
from livekit.agents.types import TimedString
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, QueueAudioOutput

from lipcore.avatar.store import Avatar, AvatarLoadError
from lipcore.live import LiveRenderer


def mock_room() -> MagicMock:
    room = MagicMock()
    room.name = "test-room"
    room.isconnected.return_value = True
    room.local_participant.identity = "agent"
    publication = MagicMock()
    publication.wait_for_subscription = AsyncMock()
    room.local_participant.publish_track = AsyncMock(return_value=publication)
    return room


@dataclass
class Pushed:
    """What reached the AVSynchronizer, in order, with the time it arrived."""

    items: list[tuple[str, float, int]] = field(default_factory=list)  # kind, t, samples

    def audio_after(self, t: float) -> int:
        return sum(1 for kind, at, _ in self.items if kind == "audio" and at > t)


async def start_runner(avatar: Avatar, rate: int = 24000) -> tuple[Any, ...]:
    live = LiveRenderer(avatar, sample_rate=rate)
    gen = LipcoreVideoGenerator(live)
    audio_out = QueueAudioOutput(sample_rate=rate)
    runner = AvatarRunner(mock_room(), audio_recv=audio_out, video_gen=gen, options=gen.options)
    pushed = Pushed()
    real_push = runner.av_sync.push

    async def spy(frame: rtc.VideoFrame | rtc.AudioFrame, timestamp: float | None = None) -> None:
        if isinstance(frame, rtc.AudioFrame):
            pushed.items.append(("audio", time.perf_counter(), frame.samples_per_channel))
        else:
            pushed.items.append(("video", time.perf_counter(), 0))
        await real_push(frame, timestamp)

    runner.av_sync.push = spy  # type: ignore[method-assign]
    events: dict[str, list[Any]] = {"started": [], "finished": []}
    audio_out.on("playback_started", lambda ev: events["started"].append(ev))
    audio_out.on("playback_finished", lambda ev: events["finished"].append(ev))
    await runner.start()
    return runner, audio_out, gen, pushed, events


def tts_frames(seconds: float, rate: int, channels: int, words: list[TimedString]) -> list[Any]:
    """10 ms frames of a voiced buzz; each word rides on the frame where it starts."""
    n = rate // 100
    t = np.arange(round(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * 32767
    pcm = np.repeat(x.astype(np.int16)[:, None], channels, axis=1)
    frames = []
    for i in range(0, len(pcm), n):
        f = rtc.AudioFrame(pcm[i : i + n].tobytes(), rate, channels, len(pcm[i : i + n]))
        here = [w for w in words if i / rate <= float(w.start_time) < (i + n) / rate]
        if here:
            f.userdata["lk.timed_transcripts"] = here
        frames.append(f)
    return frames


async def test_whole_utterance_plays_in_sync(lk_avatar: Avatar) -> None:
    runner, audio_out, _gen, pushed, events = await start_runner(lk_avatar)
    try:
        await asyncio.sleep(0.4)
        # Silent: the idle loop, video only, at the video rate.
        idle = list(pushed.items)
        assert idle and all(kind == "video" for kind, _, _ in idle)
        assert 6 <= len(idle) <= 14  # ~0.4 s at 25 fps (plus the synchronizer's queue)

        words = [
            TimedString("mama", start_time=0.1, end_time=0.5),
            TimedString("papa", start_time=0.55, end_time=0.95),
        ]
        # 48 kHz stereo into a 24 kHz mono avatar: resampled and mixed down.
        t0 = time.perf_counter()
        for f in tts_frames(1.0, 48000, 2, words):
            await audio_out.capture_frame(f)
        audio_out.flush()
        ev = await asyncio.wait_for(audio_out.wait_for_playout(), 5.0)
        elapsed = time.perf_counter() - t0
        assert len(events["started"]) == 1
        assert not ev.interrupted
        # The position is what was played: the speech, the 20 ms lead-in, the last frame's pad.
        assert 1.0 <= ev.playback_position <= 1.0 + 0.02 + 0.04 + 1e-6
        assert 0.9 <= elapsed <= 2.0  # paced in real time by the synchronizer

        # One video frame per 960 samples: between the first and the last audio frame,
        # video and audio strictly alternate.
        kinds = [k for k, _, _ in pushed.items]
        first, last = kinds.index("audio"), len(kinds) - 1 - kinds[::-1].index("audio")
        run = pushed.items[first - 1 : last + 1]
        assert [k for k, _, _ in run] == ["video", "audio"] * (len(run) // 2)
        assert all(n == 960 for k, _, n in run if k == "audio")
        assert sum(n for k, _, n in run if k == "audio") / 24000 == pytest.approx(
            ev.playback_position
        )
        # Then the idle loop again.
        await asyncio.sleep(0.3)
        assert all(k == "video" for k, _, _ in pushed.items[last + 1 :])
        assert len(pushed.items) - last - 1 >= 5
    finally:
        await runner.aclose()


async def test_clear_buffer_interrupts(lk_avatar: Avatar) -> None:
    runner, audio_out, _gen, pushed, events = await start_runner(lk_avatar)
    try:
        for f in tts_frames(3.0, 24000, 1, []):
            await audio_out.capture_frame(f)
        await asyncio.sleep(0.8)
        assert events["started"]
        t_clear = time.perf_counter()
        audio_out.clear_buffer()
        ev = await asyncio.wait_for(audio_out.wait_for_playout(), 5.0)
        assert ev.interrupted
        # What was played until the clear (plus at most the synchronizer's ~100 ms queue).
        assert 0.4 <= ev.playback_position <= 1.2
        audio_out.flush()  # the agent ends the cancelled segment: nothing more plays
        await asyncio.sleep(0.6)
        # No speech after the clear but the one frame already handed over, then idle video.
        assert pushed.audio_after(t_clear) <= 1
        assert pushed.audio_after(t_clear + 0.1) == 0
        after = [k for k, t, _ in pushed.items if t > t_clear + 0.1]
        assert len(after) >= 10 and set(after) == {"video"}
        assert len(events["finished"]) == 1

        # A storm of clears while the next replies stream in (each cancelled reply is
        # flushed by the agent); it still speaks afterwards.
        for _ in range(20):
            for f in tts_frames(0.1, 24000, 1, []):
                await audio_out.capture_frame(f)
            await asyncio.sleep(0.005)
            audio_out.clear_buffer()
            audio_out.flush()
        await asyncio.sleep(0.3)
        t_storm = time.perf_counter()
        assert pushed.audio_after(t_storm) == 0
        n = len(events["finished"])
        for f in tts_frames(0.5, 24000, 1, []):
            await audio_out.capture_frame(f)
        audio_out.flush()
        for _ in range(100):
            if len(events["finished"]) > n:
                break
            await asyncio.sleep(0.05)
        ev = events["finished"][-1]
        assert not ev.interrupted
        played = sum(n for kind, t, n in pushed.items if kind == "audio" and t > t_storm)
        assert played / 24000 == pytest.approx(0.52)  # 20 ms lead-in + 500 ms, whole frames
        # LiveKit's runner may carry one storm frame into its position count (it resets the
        # count only for a segment it saw playing): at most one frame more.
        assert played / 24000 - 1e-6 <= ev.playback_position <= played / 24000 + 0.04 + 1e-6
    finally:
        await runner.aclose()


async def test_generator_yields_frames_in_step(lk_avatar: Avatar) -> None:
    gen = LipcoreVideoGenerator(LiveRenderer(lk_avatar, sample_rate=16000, video_format="i420"))
    f = rtc.AudioFrame(np.zeros(1600, np.int16).tobytes(), 16000, 1, 1600)
    await gen.push_audio(f)
    await gen.push_audio(AudioSegmentEnd())
    out: list[Any] = []
    async for item in gen:
        out.append(item)
        if isinstance(item, AudioSegmentEnd) or len(out) > 100:
            break
    video = [x for x in out if isinstance(x, rtc.VideoFrame)]
    audio = [x for x in out if isinstance(x, rtc.AudioFrame)]
    assert isinstance(out[-1], AudioSegmentEnd)
    assert video[0].type == rtc.VideoBufferType.I420
    assert (video[0].width, video[0].height) == (512, 512)
    # 20 ms lead-in + 100 ms = 3 frames of 640 samples.
    assert len(audio) == 3 and all(a.samples_per_channel == 640 for a in audio)
    assert isinstance(out[-2], rtc.AudioFrame) and isinstance(out[-3], rtc.VideoFrame)


def test_words_from_timed_transcripts() -> None:
    f = rtc.AudioFrame(b"\0\0" * 240, 24000, 1, 240)
    f.userdata["lk.timed_transcripts"] = [
        TimedString("hello ", start_time=0.1, end_time=0.4),
        TimedString("world"),  # no times: left to the audio
    ]
    words = words_from_frame(f)
    assert [(w.word, w.start_ms, w.end_ms) for w in words] == [("hello", 100.0, 400.0)]


def test_unknown_avatar_is_refused_before_joining(tmp_path: Any) -> None:
    with pytest.raises(AvatarLoadError):
        LipcoreAvatarSession(tmp_path / "missing")


async def test_word_clock_restarting_per_sentence(lk_avatar: Avatar) -> None:
    gen = LipcoreVideoGenerator(LiveRenderer(lk_avatar, sample_rate=24000))
    got: list[Any] = []
    real = gen.live.push_audio

    def spy(pcm: Any, **kw: Any) -> None:
        got.extend(kw.get("words", ()))
        real(pcm, **kw)

    gen.live.push_audio = spy  # type: ignore[method-assign]
    second = rtc.AudioFrame(b"\0\0" * 24000, 24000, 1, 24000)  # 1 s
    first = rtc.AudioFrame(b"\0\0" * 24000, 24000, 1, 24000)
    first.userdata["lk.timed_transcripts"] = [TimedString("one", start_time=0.1, end_time=0.5)]
    second.userdata["lk.timed_transcripts"] = [TimedString("two", start_time=0.1, end_time=0.4)]
    await gen.push_audio(first)
    await gen.push_audio(second)  # its clock restarted: placed after the first second
    await gen.push_audio(AudioSegmentEnd())
    assert [(w.word, w.start_ms) for w in got] == [("one", 100.0), ("two", 1100.0)]
