"""lipcore's own speech (offline espeak-ng, or any lipcore TTS source) as a LiveKit TTS, with
word timings on its audio frames, so an agent runs without any speech vendor."""

from __future__ import annotations

from typing import Any

import numpy as np
import soxr
from livekit.agents import tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, TimedString

from lipcore.engine import Engine
from lipcore.interfaces import PhonemeTiming
from lipcore.live import words_from_phonemes

__all__ = ["LipcoreTTS"]


def word_spans(
    text: str, phonemes: list[PhonemeTiming], language: str, at_s: float = 0.0
) -> list[TimedString]:
    """The text's words with their spans in seconds (from the phoneme timings), placed
    ``at_s`` into the stream."""
    return [
        TimedString(
            w.word + " ", start_time=at_s + w.start_ms / 1000.0, end_time=at_s + w.end_ms / 1000.0
        )
        for w in words_from_phonemes(text, phonemes, language)
    ]


class LipcoreTTS(tts.TTS[Any]):
    """A LiveKit TTS over lipcore's engine (default: offline espeak-ng, ``voice="en-us"``).

    Streaming (LiveKit sends the reply's text as it comes; each flushed stretch is spoken
    as one segment): the audio is pushed with its words and their start and end times
    (``lk.timed_transcripts``, seconds from the start of the stream's audio), which the lipcore
    avatar turns into visemes. LiveKit's adapter for non-streaming TTS keeps only sentence
    text, so word timings need a streaming TTS like this one."""

    def __init__(
        self,
        *,
        voice: str = "en-us",
        source: str | None = None,
        engine: Engine | None = None,
        sample_rate: int = 24000,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.engine = engine or Engine()
        self.voice = voice
        self.source = source

    @property
    def provider(self) -> str:
        return "lipcore"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _LipcoreChunked(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        return _LipcoreStream(tts=self, conn_options=conn_options)

    async def speak(self, text: str, emitter: tts.AudioEmitter, at_s: float = 0.0) -> float:
        """Synthesize ``text``; push its words (placed ``at_s`` into the stream) and its
        audio in 20 ms frames. Returns the audio's duration in seconds."""
        utt = await self.engine.utterance(text, voice=self.voice, tts=self.source)
        phonemes: list[PhonemeTiming] = []
        pcm: list[bytes] = []
        rate = self.sample_rate
        async for step in utt:
            if step.chunk.audio:
                pcm.append(step.chunk.audio)
                rate = step.chunk.sample_rate
            phonemes.extend(step.chunk.phonemes)
        audio = np.frombuffer(b"".join(pcm), dtype="<i2")
        if rate != self.sample_rate and len(audio):
            y = soxr.resample(audio.astype(np.float32) / 32768.0, rate, self.sample_rate)
            audio = np.clip(np.rint(y * 32768.0), -32768, 32767).astype("<i2")
        emitter.push_timed_transcript(word_spans(text, phonemes, utt.language, at_s))
        step_n = self.sample_rate // 50  # 20 ms frames, as a streaming vendor sends them
        for i in range(0, len(audio), step_n):
            emitter.push(audio[i : i + step_n].tobytes())
        return len(audio) / self.sample_rate


class _LipcoreChunked(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner: Any = self._tts
        output_emitter.initialize(
            request_id=utils.shortuuid("lipcore_"),
            sample_rate=owner.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        await owner.speak(self._input_text, output_emitter)
        output_emitter.flush()


class _LipcoreStream(tts.SynthesizeStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner: Any = self._tts
        output_emitter.initialize(
            request_id=utils.shortuuid("lipcore_"),
            sample_rate=owner.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            stream=True,
        )
        text = ""
        at_s = 0.0
        segment = False
        async for data in self._input_ch:
            if isinstance(data, str):
                text += data
                continue
            if not any(c.isalnum() for c in text):
                text = ""
                continue
            self._mark_started()
            if not segment:
                output_emitter.start_segment(segment_id=utils.shortuuid("lipcore_seg_"))
                segment = True
            at_s += await owner.speak(text, output_emitter, at_s)
            text = ""
        if any(c.isalnum() for c in text):
            if not segment:
                output_emitter.start_segment(segment_id=utils.shortuuid("lipcore_seg_"))
                segment = True
            self._mark_started()
            await owner.speak(text, output_emitter, at_s)
        if segment:
            output_emitter.end_segment()
