"""Fakes for the LiveKit tests (imported as a top-level module; see conftest): a scripted LLM,
a buzz TTS with word timings, a mocked room."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import numpy as np
from livekit.agents import llm, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, TimedString

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
