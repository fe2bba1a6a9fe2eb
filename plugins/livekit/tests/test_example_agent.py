"""examples/livekit_agent.py: its agent, as the example builds it (lipcore's TTS, echo mode
without an LLM), speaks through the avatar; its CLI loads."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

from _lk_fakes import mock_room
from lipcore_livekit import LipcoreAvatarSession, LipcoreTTS
from livekit import rtc
from livekit.agents import AgentSession

from lipcore.avatar.store import Avatar

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "livekit_agent.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("livekit_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def test_echo_agent_speaks_through_the_avatar(lk_avatar: Avatar) -> None:
    ex = _example()
    spoken: list[str] = []
    tts = LipcoreTTS(voice="en-us")
    real_speak = tts.speak

    async def spy_speak(text: str, *a: Any, **kw: Any) -> float:
        spoken.append(text)
        return await real_speak(text, *a, **kw)

    tts.speak = spy_speak  # type: ignore[method-assign]
    session: AgentSession[None] = AgentSession(tts=tts, llm=ex.EchoLLM())
    avatar = LipcoreAvatarSession(lk_avatar)
    await avatar.start(session, room=mock_room())
    assert avatar.runner is not None
    audio = 0
    real_push = avatar.runner.av_sync.push

    async def spy(frame: Any, timestamp: float | None = None) -> None:
        nonlocal audio
        if isinstance(frame, rtc.AudioFrame):
            audio += frame.samples_per_channel
        await real_push(frame, timestamp)

    avatar.runner.av_sync.push = spy  # type: ignore[method-assign]
    await session.start(ex.assistant())
    try:
        handle = session.generate_reply(user_input="bananas are yellow")
        await asyncio.wait_for(handle.wait_for_playout(), 30.0)
    finally:
        await session.aclose()
        await avatar.aclose()
    assert "".join(spoken).strip() == "You said: bananas are yellow"
    assert audio / 24000 > 1.0  # the sentence was played, not just started


def test_example_cli_loads() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dev" in proc.stdout and "start" in proc.stdout
