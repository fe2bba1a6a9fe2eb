"""lipcore as the avatar of a real LiveKit ``AgentSession``, offline: a fake LLM and a fake TTS
(as LiveKit's own tests use, written here for lipcore), the avatar session's
``QueueAudioOutput`` and ``AvatarRunner`` on a mocked room with LiveKit's real audio and
video sources and synchronizer."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import numpy as np
from lipcore_livekit import LipcoreAvatarSession
from livekit import rtc
from livekit.agents import Agent, AgentSession, llm, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, TimedString

from lipcore.avatar.store import Avatar

RATE = 24000
MS_PER_CHAR = 45.0


class ScriptedLLM(llm.LLM):
    """Answers every turn with the same text, a few characters per chunk."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: Any = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        **_: Any,
    ) -> llm.LLMStream:
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        text = self._llm.answer  # type: ignore[attr-defined]
        for i in range(0, len(text), 4):
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id="x", delta=llm.ChoiceDelta(role="assistant", content=text[i : i + 4])
                )
            )
            await asyncio.sleep(0)


class BuzzTTS(tts.TTS):
    """A voiced buzz, MS_PER_CHAR per character, with word timings attached to the audio
    (``lk.timed_transcripts``) like TTS plugins that align words."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False, aligned_transcript=True),
            sample_rate=RATE,
            num_channels=1,
        )
        self.synthesized: list[str] = []

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> Any:
        self.synthesized.append(text)
        return _BuzzStream(tts=self, input_text=text, conn_options=conn_options)


class _BuzzStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid("buzz_"),
            sample_rate=RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        text = self._input_text
        seconds = len(text) * MS_PER_CHAR / 1000.0
        t = np.arange(round(seconds * RATE)) / RATE
        x = 0.3 * np.sin(2 * np.pi * 170 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 5 * t))
        pcm = (x * 32767).astype(np.int16)
        at = 0.0
        words = []
        for w in text.split():
            end = at + len(w) * MS_PER_CHAR / 1000.0
            words.append(TimedString(w + " ", start_time=at, end_time=end))
            at = end + MS_PER_CHAR / 1000.0
        output_emitter.push_timed_transcript(words)
        for i in range(0, len(pcm), RATE // 50):
            output_emitter.push(pcm[i : i + RATE // 50].tobytes())
            await asyncio.sleep(0)
        output_emitter.flush()


def mock_room() -> MagicMock:
    room = MagicMock()
    room.name = "room"
    room.isconnected.return_value = True
    room.local_participant.identity = "agent"
    publication = MagicMock()
    publication.wait_for_subscription = AsyncMock()
    room.local_participant.publish_track = AsyncMock(return_value=publication)
    return room


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
