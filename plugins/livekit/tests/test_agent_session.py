"""lipcore as the avatar of a real LiveKit ``AgentSession``, offline: a fake LLM and a fake TTS
(as LiveKit's own tests use, written here for lipcore), the avatar session's
``QueueAudioOutput`` and ``AvatarRunner`` on a mocked room with LiveKit's real audio and
video sources and synchronizer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _lk_fakes import MS_PER_CHAR, RATE, BuzzTTS, ScriptedLLM, mock_room
from lipcore_livekit import LipcoreAvatarSession
from livekit import rtc
from livekit.agents import Agent, AgentSession

from lipcore.avatar.store import Avatar


async def start(
    avatar: Avatar, answer: str
) -> tuple[AgentSession[None], LipcoreAvatarSession, list[tuple[str, float, int]]]:
    session: AgentSession[None] = AgentSession(llm=ScriptedLLM(answer), tts=BuzzTTS())
    lipcore_avatar = LipcoreAvatarSession(avatar)
    await lipcore_avatar.start(session, room=mock_room())
    assert lipcore_avatar.runner is not None
    pushed: list[tuple[str, float, int]] = []
    real_push = lipcore_avatar.runner.av_sync.push

    async def spy(frame: Any, timestamp: float | None = None) -> None:
        audio = isinstance(frame, rtc.AudioFrame)
        pushed.append(
            (
                "audio" if audio else "video",
                time.perf_counter(),
                frame.samples_per_channel if audio else 0,
            )
        )
        await real_push(frame, timestamp)

    lipcore_avatar.runner.av_sync.push = spy  # type: ignore[method-assign]
    await session.start(Agent(instructions="You are a test."))
    return session, lipcore_avatar, pushed


async def test_agent_reply_plays_through_the_avatar(lk_avatar: Avatar) -> None:
    answer = "Hello there. Maybe we meet at the market."
    session, avatar, pushed = await start(lk_avatar, answer)
    assert avatar.audio_output is not None and session.output.audio is not None
    finished: list[Any] = []
    started: list[Any] = []
    avatar.audio_output.on("playback_finished", finished.append)
    avatar.audio_output.on("playback_started", started.append)
    try:
        handle = session.generate_reply(user_input="hi")
        await asyncio.wait_for(handle.wait_for_playout(), 20.0)
        assert started and finished and not any(ev.interrupted for ev in finished)
        speech_s = sum(n for k, _, n in pushed if k == "audio") / RATE
        # Every sentence the TTS spoke was played: its audio plus at most the 20 ms lead-in
        # and one frame's padding per segment.
        spoken = len("".join(session.tts.synthesized)) * MS_PER_CHAR / 1000.0  # type: ignore[union-attr]
        assert spoken - 0.05 <= speech_s <= spoken + 0.07 * len(finished) + 0.05
        assert sum(ev.playback_position for ev in finished) == pytest_approx(speech_s)
        # One video frame per 960 samples while speaking.
        kinds = [k for k, _, _ in pushed]
        first, last = kinds.index("audio"), len(kinds) - 1 - kinds[::-1].index("audio")
        run = kinds[first - 1 : last + 1]
        assert run == ["video", "audio"] * (len(run) // 2)
        assert all(n == 960 for k, _, n in pushed if k == "audio")
        # The reply reached the chat history as played.
        msgs = [i for i in session.history.items if i.type == "message" and i.role == "assistant"]
        assert msgs and msgs[-1].text_content == answer
    finally:
        await session.aclose()
        await avatar.aclose()


async def test_interrupted_reply_stops_the_avatar(lk_avatar: Avatar) -> None:
    answer = " ".join(["Banana boats bring many apples"] * 6) + "."
    session, avatar, pushed = await start(lk_avatar, answer)
    assert avatar.audio_output is not None
    finished: list[Any] = []
    avatar.audio_output.on("playback_finished", finished.append)
    try:
        handle = session.generate_reply(user_input="hi")
        for _ in range(200):
            if any(k == "audio" for k, _, _ in pushed):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.6)
        t_clear = time.perf_counter()
        await session.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 5.0)
        assert handle.interrupted
        assert finished and finished[-1].interrupted
        played = sum(n for k, t, n in pushed if k == "audio" and t <= t_clear) / RATE
        assert 0.4 <= finished[-1].playback_position <= played + 0.05
        await asyncio.sleep(0.5)
        late = [t for k, t, _ in pushed if k == "audio" and t > t_clear + 0.1]
        assert not late  # no speech after the barge-in
        assert sum(1 for k, t, _ in pushed if k == "video" and t > t_clear + 0.1) >= 8
    finally:
        await session.aclose()
        await avatar.aclose()


def pytest_approx(x: float) -> Any:
    import pytest

    return pytest.approx(x, abs=1e-6)
