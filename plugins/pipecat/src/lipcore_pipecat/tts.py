"""``LipcoreTTSService``: a Pipecat TTS service over lipcore's speech sources.

Any source lipcore's engine has (offline espeak-ng, ElevenLabs through ``lipcore-tts-elevenlabs``,
a plugin's) speaks through it. Besides Pipecat's audio and word frames it pushes lipcore's
viseme frames, computed from the source's own phoneme (or character) times by lipcore's mapper,
so a lipcore client draws a mouth that is exact to the phoneme rather than estimated from sound.

One utterance is one Pipecat audio context (a bot's turn): the sentences Pipecat's aggregator
cuts a reply into continue one timeline, as lipcore's clients expect.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from lipcore.engine import EmptyTextError, Engine, clean_text
from lipcore.errors import LipcoreError
from lipcore.interfaces import CharTiming, PhonemeTiming, VisemeFrame
from lipcore_pipecat.frames import (
    LipcoreTimingsFrame,
    LipcoreUtteranceEndFrame,
    LipcoreUtteranceStartFrame,
    LipcoreVisemesFrame,
)

__all__ = ["LipcoreTTSService"]


@dataclass
class _Context:
    """One audio context = one lipcore utterance: where the next sentence starts on its
    timeline, the last viseme pts sent (frames stay strictly increasing across sentences)."""

    offset_ms: float = 0.0
    last_pts: float = -1.0
    started: bool = False
    finals: bool = False  # a final frame was sent (no provisional ones after it)
    sentences: int = 0


@dataclass
class _WordTimer:
    """Word start times of one sentence from the source's timings: espeak numbers the words of
    its phonemes, ElevenLabs times characters (a word starts at a letter after a space)."""

    words: list[str]
    chars: list[str] = field(default_factory=list)
    char_start: float = 0.0
    group_word: int = -1  # the word espeak's latest phonemes belong to
    group: list[PhonemeTiming] = field(default_factory=list)  # and those phonemes

    def phonemes(self, phonemes: Sequence[PhonemeTiming]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for p in phonemes:
            # An index past the text's words (a source that numbers them its own way) is not
            # reported rather than mislabelled.
            if p.word < 0 or p.word >= len(self.words) or p.word < self.group_word:
                continue
            if p.word > self.group_word:
                out += self._joined(p.word)
                out.append((self.words[p.word], p.start_ms))
                self.group_word, self.group = p.word, []
            self.group.append(p)
        return out

    def _joined(self, upto: int) -> list[tuple[str, float]]:
        """The words before ``upto`` that espeak spoke as part of the latest one ("on the" is
        one word to it): each starts at the phoneme that the letters before it reach, in
        proportion (no second G2P call: espeak is busy speaking)."""
        skipped = range(self.group_word + 1, upto)
        if not skipped or not self.group:
            return []
        span = self.words[self.group_word:upto]
        letters = [max(1, sum(ch.isalnum() for ch in w)) for w in span]
        total, before = sum(letters), letters[0]
        out: list[tuple[str, float]] = []
        for w, n in zip(skipped, letters[1:], strict=True):
            k = min(len(self.group) - 1, round(len(self.group) * before / total))
            out.append((self.words[w], self.group[k].start_ms))
            before += n
        return out

    def characters(self, chars: Sequence[CharTiming]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for c in chars:
            if c.char.isspace():
                if self.chars:
                    out.append(("".join(self.chars), self.char_start))
                    self.chars = []
            else:
                if not self.chars:
                    self.char_start = c.start_ms
                self.chars.append(c.char)
        return out

    def flush(self) -> list[tuple[str, float]]:
        """The end of the sentence: the words still due (the last ones espeak joined, the last
        of the timed characters)."""
        out = self._joined(len(self.words))
        self.group_word, self.group = len(self.words), []
        if self.chars:
            word, self.chars = "".join(self.chars), []
            out.append((word, self.char_start))
        return out


class _Resampler:
    """Streaming resampler for one sentence (soxr keeps the filter state between chunks, so
    chunk edges make no clicks; ``finish`` flushes the tail, so no audio is lost and the
    timeline stays exact)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")

    def push(self, pcm: bytes, *, last: bool = False) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2")
        y = self._stream.resample_chunk(x, last=last)
        return np.asarray(y, dtype="<i2").tobytes()


async def _speakable(text: str, _text_type: str) -> str:
    """``text``, or ``""`` when lipcore's text cleaning leaves nothing to say."""
    try:
        clean_text(text, max_chars=max(len(text), 1))
    except EmptyTextError:
        return ""
    return text


class LipcoreTTSService(TTSService):
    """Speech from a lipcore TTS source, with word timestamps and lipcore's visemes.

    Pushes, per audio context (one bot turn): :class:`LipcoreUtteranceStartFrame`, then for
    every chunk of speech a :class:`LipcoreVisemesFrame` (when frames became final with it, or a
    provisional guess at the start) followed by its ``TTSAudioRawFrame`` (resampled to the
    service's ``sample_rate``, Pipecat's output rate by default), ``TTSTextFrame`` s with the
    word times (through Pipecat's word-timestamp machinery), and after Pipecat's
    ``TTSStoppedFrame`` a :class:`LipcoreUtteranceEndFrame`.

    Args:
        engine: the lipcore engine to speak with (default: a new ``lipcore.Engine()`` with the
            installed plugins).
        voice: a voice of the source, or a language code (``"en-us"``, ``"de"``).
        tts: the engine's TTS source name (default: the engine's default, ``espeak``).
        tts_options: options passed to the source for every utterance.
        emit_visemes: push the viseme frames (lipcore's serializer sends them to the client;
            elsewhere they are harmless transport messages).
        emit_timings: push each chunk's phoneme times (:class:`LipcoreTimingsFrame`), from
            which ``LipcoreVideoService`` renders a phoneme-exact mouth.
        sample_rate: output rate; ``None`` is the pipeline's ``audio_out_sample_rate``.
        **kwargs: passed to Pipecat's ``TTSService`` (text aggregation, transforms, ...).
    """

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        voice: str = "en-us",
        tts: str | None = None,
        tts_options: Mapping[str, Any] | None = None,
        emit_visemes: bool = True,
        emit_timings: bool = False,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> None:
        settings = kwargs.pop("settings", None) or TTSSettings(model=None, voice=voice,
                                                                language=None)
        # Last transform: text with nothing speakable in it ("...", an emoji) opens no audio
        # context, so Pipecat never counts it as a context that failed to produce audio.
        transforms = [*(kwargs.pop("text_transforms", None) or []), ("*", _speakable)]
        super().__init__(
            push_text_frames=False,  # words come timed, from the source's own timings
            push_stop_frames=True,
            push_start_frame=True,
            sample_rate=sample_rate,
            settings=settings,
            text_transforms=transforms,
            **kwargs,
        )
        self._engine = engine or Engine()
        self._owns_engine = engine is None
        self._tts_name = tts
        self._tts_options = dict(tts_options or {})
        self._emit_visemes = emit_visemes
        self._emit_timings = emit_timings
        self._contexts: dict[str, _Context] = {}

    @property
    def engine(self) -> Engine:
        """The lipcore engine this service speaks with."""
        return self._engine

    def can_generate_metrics(self) -> bool:
        return True

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        if self._owns_engine:
            await self._engine.aclose()

    # -- synthesis ------------------------------------------------------------------------

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Speak one piece of text (a sentence, usually) into the audio context
        ``context_id``, continuing its timeline."""
        voice = self._settings.voice
        voice = voice if isinstance(voice, str) and voice else "en-us"
        try:
            utt = await self._engine.utterance(
                text, voice=voice, tts=self._tts_name, options=self._tts_options or None,
                record=False,
            )
        except EmptyTextError:
            logger.debug(f"{self}: nothing speakable in {text!r}")
            return
        except LipcoreError as exc:
            yield ErrorFrame(error=f"lipcore TTS: {exc}")
            return
        ctx = self._contexts.setdefault(context_id, _Context())
        ctx.sentences += 1
        words = _WordTimer(words=utt.text.split() if isinstance(utt.text, str) else [])
        resampler: _Resampler | None = None
        out_samples = 0
        await self.start_tts_usage_metrics(text)
        try:
            async for step in utt:
                chunk = step.chunk
                if not ctx.started:
                    ctx.started = True
                    yield LipcoreUtteranceStartFrame(context_id=context_id,
                                                     sample_rate=self.sample_rate, text=text)
                if self._emit_visemes:
                    event = self._visemes(ctx, context_id, step.frames, step.provisional)
                    if event is not None:
                        yield event
                if self._emit_timings and chunk.phonemes:
                    yield LipcoreTimingsFrame(context_id=context_id, phonemes=tuple(
                        PhonemeTiming(p.phoneme, p.start_ms + ctx.offset_ms,
                                      p.end_ms + ctx.offset_ms, p.word)
                        for p in chunk.phonemes))
                timed = words.phonemes(chunk.phonemes) + words.characters(chunk.chars)
                if chunk.final:
                    timed += words.flush()
                if timed:
                    await self.add_word_timestamps(
                        [(w, (ctx.offset_ms + t) / 1000.0) for w, t in timed], context_id)
                if chunk.audio:
                    await self.stop_ttfb_metrics()
                    if chunk.sample_rate != self.sample_rate:
                        if resampler is None or resampler.in_rate != chunk.sample_rate:
                            resampler = _Resampler(chunk.sample_rate, self.sample_rate)
                        audio = resampler.push(chunk.audio)
                    else:
                        audio = chunk.audio
                    if audio:
                        out_samples += len(audio) // 2
                        yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)
            if resampler is not None:
                tail = resampler.push(b"", last=True)
                if tail:
                    out_samples += len(tail) // 2
                    yield TTSAudioRawFrame(tail, self.sample_rate, 1, context_id=context_id)
        except LipcoreError as exc:
            yield ErrorFrame(error=f"lipcore TTS: {exc}")
        finally:
            await self.stop_ttfb_metrics()
            # The next sentence of this turn starts where this one's audio ended.
            ctx.offset_ms += out_samples * 1000.0 / self.sample_rate

    def _visemes(self, ctx: _Context, context_id: str, frames: Sequence[VisemeFrame],
                 provisional: Sequence[VisemeFrame]) -> LipcoreVisemesFrame | None:
        off = ctx.offset_ms
        if frames:
            shifted = [VisemeFrame(f.pts_ms + off, f.weights) if off else f for f in frames]
            # A sentence's first frames (collapsed onto its start by the mouth lead) must not
            # go back behind the previous sentence's last frame.
            shifted = [f for f in shifted if f.pts_ms > ctx.last_pts]
            if not shifted:
                return None
            ctx.last_pts = shifted[-1].pts_ms
            ctx.finals = True
            return LipcoreVisemesFrame(context_id=context_id, frames=shifted)
        if provisional and not ctx.finals:
            guess = [VisemeFrame(f.pts_ms + off, f.weights) for f in provisional
                     if f.pts_ms + off > ctx.last_pts]
            if guess:
                return LipcoreVisemesFrame(context_id=context_id, frames=guess,
                                           provisional=True)
        return None

    # -- utterance boundaries -------------------------------------------------------------

    async def push_frame(self, frame: Frame,
                         direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        await super().push_frame(frame, direction)
        # After Pipecat's stop frame, not before: the output transport flushes the audio it
        # still buffers (less than one of its chunks) when the stop frame reaches it, so an end
        # marker pushed before the stop would overtake the utterance's last audio.
        if isinstance(frame, TTSStoppedFrame) and frame.context_id:
            ctx = self._contexts.pop(frame.context_id, None)
            if ctx is not None and ctx.started:
                end = LipcoreUtteranceEndFrame(context_id=frame.context_id,
                                               duration_ms=round(ctx.offset_ms, 1))
                end.interruptible = frame.interruptible
                await super().push_frame(end, direction)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        # An interrupted utterance never ends normally (the serializer sends `stop` for it).
        self._contexts.pop(context_id, None)
        await super().on_audio_context_interrupted(context_id)
