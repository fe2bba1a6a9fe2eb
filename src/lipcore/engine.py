"""The library's front door: an :class:`Engine` owns a plugin manager and hands out TTS
sources, mappers, back ends and utterances. The CLI and the server are thin layers over it.

    engine = lipcore.Engine()
    async for step in engine.speak("Hallo, wie geht es dir?", voice="de"):
        play(step.chunk.audio)          # PCM s16le
        for frame in step.frames:       # VisemeFrame(pts_ms, weights)
            schedule(frame)
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lipcore.errors import InputError, LimitError
from lipcore.interfaces import (
    AudioVisemeEstimator,
    CharTiming,
    LipsyncBackend,
    PhonemeTiming,
    TTSChunk,
    TTSSource,
    VisemeFrame,
    VisemeMapper,
    Voice,
)
from lipcore.plugins import LipcorePluginManager, PluginRegistry, get_plugin_manager

__all__ = [
    "AudioUtterance",
    "Engine",
    "EngineSettings",
    "SpeechStep",
    "StreamedAudioUtterance",
    "Utterance",
    "clean_text",
]

MAX_TEXT_CHARS = 5000


class EmptyTextError(InputError):
    code = "empty_text"


@dataclass(frozen=True)

class EngineSettings:
    default_tts: str = "espeak"
    default_mapper: str = "default"
    default_audio_visemes: str = "model"  # estimator of visemes from audio alone
    fps: float = 30.0
    lead_ms: float = 20.0  # the mouth leads the audio by this much (0–40 ms sensible)
    max_text_chars: int = MAX_TEXT_CHARS
    tts_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_TAG_RE = re.compile(r"<[^<>]*>")


def clean_text(text: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Validate and normalise text for speech.

    * NFC-normalised; control characters (other than newline/tab, which become spaces) removed.
    * Markup-like ``<...>`` is spoken literally by no engine we know, so tags are stripped.
    * Emoji and other symbols are dropped (engines read them as names or skip them).
    * Empty or whitespace-only (after cleaning) → :class:`EmptyTextError`.
    * Longer than ``max_chars`` → :class:`LimitError` naming the limit.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise LimitError(
            f"text is {len(text)} characters; the limit is {max_chars}. "
            "Split it into several utterances (or stream it as deltas)."
        )
    text = unicodedata.normalize("NFC", text)
    # Only a closed tag is markup: "Hello <world and more" once lost everything after the
    # "<". Innermost tags go first, so nested ones ("<<b>>") go too; a "<" left over is
    # dropped and the text after it is spoken.
    while True:
        text, n = _TAG_RE.subn("", text)
        if not n:
            break
    text = text.replace("<", " ")
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\r\t":
            out.append(" ")
        elif cat.startswith("C"):
            continue  # control, format, private use, unassigned
        elif cat == "So" or cat == "Sk" or cat == "Cs":
            continue  # emoji and pictographs
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    if not cleaned or not any(c.isalnum() for c in cleaned):
        raise EmptyTextError("text is empty: nothing speakable is left after cleaning")
    return cleaned


@dataclass(frozen=True, slots=True)
class SpeechStep:
    """One TTS chunk and the viseme frames that became final with it.

    ``provisional``: until an utterance's first frame is final (its look-ahead, ~240 ms of
    audio at 30 fps, has not arrived yet), the mapper's best guess for the frames of the audio
    received so far, so a client has a mouth for the first audio at once; the final frames for
    the same times replace them when they come (see ``docs/protocol.md``)."""

    chunk: TTSChunk
    frames: Sequence[VisemeFrame]
    provisional: Sequence[VisemeFrame] = ()


class Utterance:
    """One spoken text: iterate for :class:`SpeechStep` s; ``cancel()`` stops it at once.

    After the iteration, ``phonemes`` / ``chars`` hold every timing the source gave and
    ``frames`` every frame sent (handy for offline rendering and evaluation), unless made with
    ``record=False``: a live server forwards each step and keeps nothing, since hundreds of
    speaking sessions each holding every frame of their utterance made the garbage collector
    walk them over and over (its pauses were the server's worst event lags).
    """

    def __init__(
        self,
        source: TTSSource,
        mapper: VisemeMapper,
        text: str | AsyncIterable[str],
        *,
        voice: str,
        language: str,
        fps: float,
        lead_ms: float,
        options: Mapping[str, Any] | None = None,
        record: bool = True,
    ) -> None:
        self.source = source
        self.record = record
        self.mapper = mapper
        self.text = text
        self.voice = voice
        self.language = language
        self.fps = fps
        self.lead_ms = lead_ms
        self.options = dict(options or {})
        self.phonemes: list[PhonemeTiming] = []
        self.chars: list[CharTiming] = []
        self.frames: list[VisemeFrame] = []
        self.audio_ms = 0.0
        self.sample_rate: int | None = None
        self._cancelled = asyncio.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _shift(self, frames: Sequence[VisemeFrame]) -> list[VisemeFrame]:
        # The mouth leads the audio: a frame computed for audio time t is shown at t - lead.
        # Frames that would land before the audio starts collapse onto 0; of those only the
        # latest is kept, so pts stay strictly increasing.
        lead = self.lead_ms
        if not lead or not frames:
            return list(frames)
        if frames[0].pts_ms > lead:  # past the start: nothing collapses (the usual case)
            return [VisemeFrame(f.pts_ms - lead, f.weights) for f in frames]
        out: list[VisemeFrame] = []
        for f in frames:
            shifted = VisemeFrame(pts_ms=max(0.0, f.pts_ms - self.lead_ms), weights=f.weights)
            if out and shifted.pts_ms <= out[-1].pts_ms:
                out[-1] = shifted
            else:
                out.append(shifted)
        return out

    async def __aiter__(self) -> AsyncIterator[SpeechStep]:
        stream = self.mapper.stream(language=self.language, fps=self.fps)
        agen = self.source.synthesize(self.text, voice=self.voice, options=self.options)
        last_pts = -1.0
        guessed_pts = -1.0
        record = self.record
        try:
            async for chunk in agen:
                if self.cancelled:
                    return
                self.sample_rate = chunk.sample_rate
                if record:
                    self.phonemes.extend(chunk.phonemes)
                    self.chars.extend(chunk.chars)
                self.audio_ms = max(self.audio_ms, chunk.end_ms)
                frames = stream.push(
                    phonemes=chunk.phonemes, chars=chunk.chars, horizon_ms=chunk.end_ms
                )
                if chunk.final:
                    frames += stream.finish(self.audio_ms)
                shifted = self._shift(frames)
                if shifted and shifted[0].pts_ms <= last_pts:  # collapsed onto a sent frame
                    shifted = [f for f in shifted if f.pts_ms > last_pts]
                if shifted:
                    last_pts = shifted[-1].pts_ms
                    if record:
                        self.frames.extend(shifted)
                guess: list[VisemeFrame] = []
                if last_pts < 0 and not chunk.final and chunk.audio:
                    # Nothing final yet: guess the new frames of this chunk's audio.
                    guess = [
                        f
                        for f in self._shift(stream.preview(chunk.end_ms))
                        if f.pts_ms > guessed_pts
                    ]
                    if guess:
                        guessed_pts = guess[-1].pts_ms
                yield SpeechStep(chunk=chunk, frames=shifted, provisional=guess)
                if chunk.final:
                    return
            if not self.cancelled:
                tail = [f for f in self._shift(stream.finish(self.audio_ms)) if f.pts_ms > last_pts]
                if record:
                    self.frames.extend(tail)
                if tail:
                    empty = TTSChunk(
                        audio=b"",
                        sample_rate=self.sample_rate or 16000,
                        pts_ms=self.audio_ms,
                        final=True,
                    )
                    yield SpeechStep(chunk=empty, frames=tail)
        finally:
            await agen.aclose()  # type: ignore[attr-defined]


class AudioUtterance:
    """A recording spoken like an utterance: iterate for :class:`SpeechStep` s whose chunks
    carry the recording (``chunk_ms`` pieces) and whose frames come from an audio viseme
    estimator (the whole-file form, so a known ``text`` is aligned), shifted by the mouth's
    lead like a TTS utterance's. ``cancel()`` stops it at once.

    The same surface as :class:`Utterance` (``language``, ``voice``, ``fps``, ``lead_ms``,
    ``audio_ms``, ``sample_rate``, ``phonemes``, ``frames``), so a server session speaks it
    through the same path, barge-in included."""

    def __init__(
        self,
        estimator: AudioVisemeEstimator,
        pcm: bytes,
        *,
        sample_rate: int,
        fps: float,
        lead_ms: float,
        text: str | None = None,
        language: str | None = None,
        chunk_ms: float = 100.0,
        record: bool = True,
    ) -> None:
        if len(pcm) % 2:
            raise InputError("PCM must be s16le: an even number of bytes")
        self.estimator = estimator
        self.pcm = pcm
        self.sample_rate: int | None = sample_rate
        self.fps = fps
        self.lead_ms = lead_ms
        self.text = text
        self.language = language or "en-us"
        self.voice = ""
        self.chunk_ms = chunk_ms
        self.record = record
        self.phonemes: list[PhonemeTiming] = []
        self.chars: list[CharTiming] = []
        self.frames: list[VisemeFrame] = []
        self.audio_ms = 0.0
        self._cancelled = asyncio.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _estimate(self) -> list[VisemeFrame]:
        from lipcore.speech.audio_input import shift_frames

        rate = self.sample_rate or 16000
        analyse = getattr(self.estimator, "analyse", None)
        if analyse is not None:
            result = analyse(
                self.pcm, sample_rate=rate, fps=self.fps, language=self.language, text=self.text
            )
            self.phonemes = list(result.phonemes)
            frames: list[VisemeFrame] = result.frames
        else:
            frames = self.estimator.estimate(
                self.pcm, sample_rate=rate, fps=self.fps, language=self.language, text=self.text
            )
        return shift_frames(frames, self.lead_ms)

    async def __aiter__(self) -> AsyncIterator[SpeechStep]:
        rate = self.sample_rate or 16000
        frames = await asyncio.to_thread(self._estimate)
        step = max(2, int(self.chunk_ms * rate / 1000.0) * 2)
        total = len(self.pcm)
        k = 0
        for start in range(0, total, step):
            if self.cancelled:
                return
            audio = self.pcm[start : start + step]
            pts = start / 2 * 1000.0 / rate
            end = (start + len(audio)) / 2 * 1000.0 / rate
            final = start + step >= total
            j = k
            while j < len(frames) and (final or frames[j].pts_ms < end):
                j += 1
            out, k = frames[k:j], j
            self.audio_ms = end
            if self.record:
                self.frames.extend(out)
            yield SpeechStep(
                chunk=TTSChunk(audio=audio, sample_rate=rate, pts_ms=pts, final=final),
                frames=out,
            )
            await asyncio.sleep(0)



class StreamedAudioUtterance:
    """Audio that arrives while it is spoken (a client streaming PCM, a call leg): iterate for
    :class:`SpeechStep` s like a TTS utterance's. The mouth comes from the streaming form of an
    audio viseme estimator (audio only: a text given is shown, not aligned, since the alignment
    needs the whole recording).

    Each piece of audio is released once its mouth is known: up to the time of the last frame
    the estimator has settled, less the mouth's lead. So audio leaves at most the estimator's
    look-ahead (plus the lead and one frame) after it arrived, and a client that plays what it
    gets always has the visemes of what it plays. ``chunks``: ``s16le`` mono bytes at
    ``sample_rate`` (any sizes; an odd byte waits for the next piece)."""

    def __init__(
        self,
        estimator: AudioVisemeEstimator,
        chunks: AsyncIterable[bytes],
        *,
        sample_rate: int,
        fps: float,
        lead_ms: float,
        text: str | None = None,
        language: str | None = None,
        record: bool = True,
    ) -> None:
        self.estimator = estimator
        self.chunks = chunks
        self.sample_rate: int | None = sample_rate
        self.fps = fps
        self.lead_ms = lead_ms
        self.text = text
        self.language = language or "en-us"
        self.voice = ""
        self.record = record
        self.phonemes: list[PhonemeTiming] = []
        self.chars: list[CharTiming] = []
        self.frames: list[VisemeFrame] = []
        self.audio_ms = 0.0
        self._cancelled = asyncio.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def __aiter__(self) -> AsyncIterator[SpeechStep]:
        from lipcore.speech.audio_input import LeadShifter

        rate = self.sample_rate or 16000
        stream = self.estimator.stream(
            sample_rate=rate, fps=self.fps, language=self.language, text=self.text
        )
        shifter = LeadShifter(self.lead_ms)
        held = bytearray()  # audio received whose mouth is not known yet
        odd = b""
        sent = 0  # samples released
        known_ms = 0.0  # audio time up to which the (lead-shifted) mouth is known

        def step(audio: bytes, frames: list[VisemeFrame], final: bool) -> SpeechStep:
            nonlocal sent
            pts = sent * 1000.0 / rate
            sent += len(audio) // 2
            self.audio_ms = sent * 1000.0 / rate
            if self.record:
                self.frames.extend(frames)
            return SpeechStep(
                chunk=TTSChunk(audio=audio, sample_rate=rate, pts_ms=pts, final=final),
                frames=frames,
            )

        async for data in self.chunks:
            if self.cancelled:
                return
            data = odd + bytes(data)
            odd = data[-1:] if len(data) % 2 else b""
            data = data[: len(data) - len(odd)]
            if not data:
                continue
            raw = stream.push(data)
            held += data
            if raw:
                known_ms = max(known_ms, raw[-1].pts_ms - self.lead_ms)
            frames = shifter.push(raw)
            release = min(len(held) // 2, max(0, round(known_ms * rate / 1000.0) - sent))
            if release or frames:
                audio = bytes(held[: release * 2])
                del held[: release * 2]
                yield step(audio, frames, final=False)
            await asyncio.sleep(0)
        if self.cancelled:
            return
        frames = shifter.push(stream.finish()) + shifter.finish()
        yield step(bytes(held), frames, final=True)


class Engine:
    """Owns a plugin manager and the long-lived plugin instances (TTS connections, mappers).

    Several engines may live in one process (each with its own manager)."""

    def __init__(
        self,
        *,
        plugin_manager: LipcorePluginManager | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self.pm = plugin_manager or get_plugin_manager()
        self.registry = PluginRegistry(self.pm)
        self.settings = settings or EngineSettings()
        self._tts: dict[str, TTSSource] = {}
        self._mappers: dict[str, VisemeMapper] = {}
        self._backends: dict[str, LipsyncBackend] = {}
        self._estimators: dict[str, AudioVisemeEstimator] = {}

    # -- plugins -------------------------------------------------------------------------

    def tts(self, name: str | None = None) -> TTSSource:
        name = name or self.settings.default_tts
        if name not in self._tts:
            options = dict(self.settings.tts_options.get(name, {}))
            self._tts[name] = self.registry.create("tts_sources", name, **options)
        return self._tts[name]

    def mapper(self, name: str | None = None) -> VisemeMapper:
        name = name or self.settings.default_mapper
        if name not in self._mappers:
            self._mappers[name] = self.registry.create("viseme_mappers", name)
        return self._mappers[name]

    def audio_viseme_estimator(self, name: str | None = None) -> AudioVisemeEstimator:
        """The estimator of visemes from audio alone named ``name`` (default: the settings'
        ``default_audio_visemes``, the shipped model); created once, with this engine's
        default mapper for the aligned phonemes of a known text."""
        reg = self.registry.get(
            "audio_viseme_estimators", name or self.settings.default_audio_visemes
        )
        if reg.name not in self._estimators:  # an alias shares its estimator
            self._estimators[reg.name] = reg.factory(mapper=self.mapper())
        return self._estimators[reg.name]

    def lipsync_backend(self, type_: str, *, avatar: str = "") -> LipsyncBackend:
        """The back end an avatar's manifest names (``"sprites"``, ``"mesh"``, ``"onnx"``, a
        plugin's kind, or an alias of one); one instance per canonical kind."""
        kind = self.lipsync_kind(type_, avatar=avatar)
        if kind not in self._backends:
            self._backends[kind] = self.registry.create("lipsync_backends", kind)
        return self._backends[kind]

    def lipsync_kind(self, type_: str, *, avatar: str = "") -> str:
        """The canonical kind for ``type_`` (an alias resolves to the name it was registered
        under: ``"wav2lip"`` → ``"onnx"``); :class:`PluginNotFoundError` if none is installed.
        Manifests are written with this name, never with an alias."""
        context = f"avatar {avatar!r}" if avatar else ""
        return self.registry.get("lipsync_backends", type_, context=context).name

    async def voices(self, tts: str | None = None) -> Sequence[Voice]:
        return await self.tts(tts).voices()

    async def resolve_voice(self, voice: str, tts: str | None = None) -> Voice:
        """The voice ``voice`` names for TTS source ``tts``: the source owns the rule
        (:meth:`lipcore.interfaces.TTSSource.resolve_voice`)."""
        return await self.tts(tts).resolve_voice(voice)

    # -- speech --------------------------------------------------------------------------

    async def utterance(
        self,
        text: str | AsyncIterable[str],
        *,
        voice: str | Voice,
        tts: str | None = None,
        fps: float | None = None,
        lead_ms: float | None = None,
        mapper: str | None = None,
        options: Mapping[str, Any] | None = None,
        record: bool = True,
    ) -> Utterance:
        """Validate the input and prepare an utterance (iterate it to synthesize);
        ``record=False``: do not keep its timings and frames (see :class:`Utterance`).
        ``voice`` is a name the TTS source resolves, or a :class:`Voice` it resolved before
        (a session resolves its voice once)."""
        if isinstance(text, str):
            text = clean_text(text, max_chars=self.settings.max_text_chars)
        v = voice if isinstance(voice, Voice) else await self.resolve_voice(voice, tts)
        return Utterance(
            self.tts(tts),
            self.mapper(mapper),
            text,
            voice=v.id,
            language=v.language,
            fps=self.settings.fps if fps is None else fps,
            lead_ms=self.settings.lead_ms if lead_ms is None else lead_ms,
            options=options,
            record=record,
        )

    def audio_utterance(
        self,
        pcm: bytes,
        *,
        sample_rate: int,
        text: str | None = None,
        language: str | None = None,
        estimator: str | None = None,
        fps: float | None = None,
        lead_ms: float | None = None,
        record: bool = True,
    ) -> AudioUtterance:
        """A recording (mono ``s16le`` at ``sample_rate``) to speak like an utterance, its
        mouth from the audio viseme estimator (``text``, when known, is aligned to it)."""
        if text is not None:
            text = clean_text(text, max_chars=self.settings.max_text_chars)
        return AudioUtterance(
            self.audio_viseme_estimator(estimator),
            pcm,
            sample_rate=sample_rate,
            fps=self.settings.fps if fps is None else fps,
            lead_ms=self.settings.lead_ms if lead_ms is None else lead_ms,
            text=text,
            language=language,
            record=record,
        )

    def audio_stream_utterance(
        self,
        chunks: AsyncIterable[bytes],
        *,
        sample_rate: int,
        text: str | None = None,
        language: str | None = None,
        estimator: str | None = None,
        fps: float | None = None,
        lead_ms: float | None = None,
        record: bool = True,
    ) -> StreamedAudioUtterance:
        """Audio that arrives while it is spoken (mono ``s16le`` pieces at ``sample_rate``),
        its mouth from the streaming form of the audio viseme estimator; see
        :class:`StreamedAudioUtterance`."""
        if not 8000 <= sample_rate <= 48000:
            raise InputError(f"sample_rate must be 8000–48000 Hz, got {sample_rate}")
        if text is not None:
            text = clean_text(text, max_chars=self.settings.max_text_chars)
        return StreamedAudioUtterance(
            self.audio_viseme_estimator(estimator),
            chunks,
            sample_rate=sample_rate,
            fps=self.settings.fps if fps is None else fps,
            lead_ms=self.settings.lead_ms if lead_ms is None else lead_ms,
            text=text,
            language=language,
            record=record,
        )

    async def speak(
        self, text: str | AsyncIterable[str], **kwargs: Any
    ) -> AsyncIterator[SpeechStep]:
        """Shorthand: ``async for step in engine.speak(text, voice="de")``."""
        utt = await self.utterance(text, **kwargs)
        async for step in utt:
            yield step

    async def aclose(self) -> None:
        for source in self._tts.values():
            await source.aclose()
        self._tts.clear()
