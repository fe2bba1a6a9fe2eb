"""Lip sync through the whole LiveKit path: an AgentSession speaks with lipcore's own TTS
(espeak-ng; words with times on its audio frames, as aligned LiveKit TTS plugins send them);
what the AvatarRunner hands to the AVSynchronizer is captured, written to MP4 and measured by
``lipcore eval sync`` against the bounds of ``lipcore say``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from _lk_fakes import ScriptedLLM, mock_room
from lipcore_livekit import LipcoreAvatarSession, LipcoreTTS
from livekit import rtc
from typer.testing import CliRunner

from lipcore.avatar.store import Avatar
from lipcore.engine import Engine
from lipcore.media import VideoWriter

SENTENCE = "Maybe the people on the boat bring more apples."


async def test_agent_speech_lip_sync(lk_avatar: Avatar, tmp_path: Path) -> None:
    from livekit.agents import Agent, AgentSession

    engine = Engine()
    session: AgentSession[None] = AgentSession(
        llm=ScriptedLLM(SENTENCE), tts=LipcoreTTS(voice="en-us", engine=engine)
    )
    avatar = LipcoreAvatarSession(lk_avatar, engine=engine, language="en-us")
    await avatar.start(session, room=mock_room())
    assert avatar.runner is not None and avatar.generator is not None
    live = avatar.generator.live
    got_words: list[Any] = []
    real_push_audio = live.push_audio

    def spy_audio(pcm: Any, **kw: Any) -> None:
        got_words.extend(kw.get("words", ()))
        real_push_audio(pcm, **kw)

    live.push_audio = spy_audio  # type: ignore[method-assign]
    items: list[tuple[str, Any]] = []
    real_push = avatar.runner.av_sync.push

    async def spy(frame: Any, timestamp: float | None = None) -> None:
        if isinstance(frame, rtc.AudioFrame):
            items.append(("audio", np.frombuffer(bytes(frame.data), np.int16).copy()))
        else:
            items.append(("video", bytes(frame.data)))
        await real_push(frame, timestamp)

    avatar.runner.av_sync.push = spy  # type: ignore[method-assign]
    await session.start(Agent(instructions="test"))
    try:
        await asyncio.sleep(0.5)
        handle = session.generate_reply(user_input="hi")
        await asyncio.wait_for(handle.wait_for_playout(), 30.0)
        await asyncio.sleep(0.5)
    finally:
        await session.aclose()
        await avatar.aclose()
    assert got_words, "the TTS's word timings did not reach the avatar"

    # The captured stream as a video: each video frame with the audio pushed after it.
    frames: list[bytes] = []
    audio: list[np.ndarray] = []
    first_speech = None
    for i, (kind, data) in enumerate(items):
        if kind == "video":
            frames.append(data)
            nxt = items[i + 1] if i + 1 < len(items) else None
            if nxt is not None and nxt[0] == "audio":
                first_speech = len(frames) - 1 if first_speech is None else first_speech
                audio.append(nxt[1])
            else:
                audio.append(np.zeros(960, np.int16))
    assert first_speech is not None
    out = tmp_path / "agent.mp4"
    h, w = live.height, live.width
    with VideoWriter(
        out,
        live.fps,
        audio=np.concatenate(audio),
        sample_rate=24000,
        crf=18,
        x264_params="no-mbtree=1:bframes=0:aq-mode=0",
    ) as writer:
        for data in frames:
            writer.write(np.frombuffer(data, np.uint8).reshape(h, w, 4)[:, :, :3])
    # The true phonemes: espeak is deterministic, so the same sentence again.
    utt = await engine.utterance(SENTENCE, voice="en-us")
    phonemes = [p for step in [s async for s in utt] for p in step.chunk.phonemes]
    out.with_suffix(".timings.json").write_text(
        json.dumps(
            {
                "language": utt.language,
                "fps": live.fps,
                "audio_offset_ms": first_speech * 40.0 + live.lead_ms,
                "phonemes": [
                    {
                        "phoneme": p.phoneme,
                        "start_ms": p.start_ms,
                        "end_ms": p.end_ms,
                        "word": p.word,
                    }
                    for p in phonemes
                ],
            }
        )
    )
    from lipcore.cli import app

    res = CliRunner().invoke(app, ["eval", "sync", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    print("agent/word timings", report)
    assert report["frames_with_face"] == report["frames"]
    assert -60.0 <= report["offset_ms"] <= 40.0
    assert report["bilabials"] >= 5 and report["closure_rate"] >= 0.9
    assert report["open_vowel_aperture"] > 0.08
