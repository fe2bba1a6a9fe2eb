"""Built-in offline TTS source: espeak-ng with phoneme timings.

Audio comes as the library's synth callback delivers its buffers (60 ms each), so the first
chunk is out long before the whole text is synthesized. Every blocking library call runs in a
worker thread under the process-wide lock of :mod:`lipcore.speech._espeak`, so the event loop keeps
running. Text given as a stream of deltas (LLM tokens) is cut at sentence and clause ends and
each piece is spoken as soon as it is complete, on one continuous timeline.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import threading
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lipcore.errors import InputError, TTSError, UnknownVoiceError
from lipcore.hookspecs import Register, hookimpl
from lipcore.interfaces import PhonemeTiming, TTSCapabilities, TTSChunk, TTSSource, Voice
from lipcore.speech import _espeak

__all__ = ["EspeakOptions", "EspeakSource", "TextSegmenter", "register_tts_sources"]

_GENDERS = {1: "male", 2: "female"}

#: name → (minimum, maximum, default, what it means)
_OPTION_RANGES: dict[str, tuple[int, int, int, str]] = {
    "rate": (_espeak.RATE_MIN, _espeak.RATE_MAX, _espeak.RATE_NORMAL, "words per minute"),
    "pitch": (0, 100, 50, "base pitch, 50 = normal"),
    "volume": (0, 200, 100, "amplitude in percent, 100 = normal"),
    "range": (0, 100, 50, "pitch range, 0 = monotone, 50 = normal"),
}


@dataclass(frozen=True, slots=True)
class EspeakOptions:
    """Validated synthesis options."""

    rate: int = _espeak.RATE_NORMAL
    pitch: int = 50
    volume: int = 100
    range: int = 50

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> EspeakOptions:
        """Check ``options`` (``rate``, ``pitch``, ``volume``, ``range``) and fill defaults."""
        values: dict[str, int] = {}
        for key, raw in (options or {}).items():
            if key not in _OPTION_RANGES:
                known = ", ".join(sorted(_OPTION_RANGES))
                raise InputError(f"unknown espeak option {key!r}; known options: {known}")
            lo, hi, _, meaning = _OPTION_RANGES[key]
            if raw is None:
                continue
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != raw:
                raise InputError(f"espeak option {key}={raw!r} must be a number ({meaning})")
            if not lo <= raw <= hi:
                raise InputError(
                    f"espeak option {key}={raw} is out of range; use {lo} to {hi} ({meaning})"
                )
            values[key] = round(raw)
        return cls(**values)


# ---------------------------------------------------------------------------------- text

# "." and ":" need the white space after them (3.5, z.B., 10:30); "?", "!", ";" and "…" end a
# sentence even at the very end of the text received so far, so a question is spoken at once.
_SENTENCE_END = re.compile(r"[.!?;:…。！？]+[\"'»«”’)\]]*(?=\s)|[!?;…。！？]+[\"'»«”’)\]]*$")
_CLAUSE_END = re.compile(r"[,–—]+(?=\s)")


def _speakable(text: str) -> str:
    """Drop control and format characters (espeak would read some as names); keep the rest."""
    return "".join(
        " " if ch in "\n\r\t" else ch
        for ch in unicodedata.normalize("NFC", text)
        if ch in "\n\r\t" or not unicodedata.category(ch).startswith("C")
    )


class TextSegmenter:
    """Cuts a stream of text deltas into pieces worth synthesizing on their own.

    A piece ends at a sentence end (``. ! ? ; :`` followed by white space) or, once it is at
    least ``clause_chars`` long, at a clause end (``,`` or a dash); text longer than
    ``max_chars`` without either is cut at the last space. The boundary needs the white space
    after it, so ``3.5`` or ``z.B.`` inside a word is never cut.
    """

    def __init__(self, *, clause_chars: int = 48, max_chars: int = 240) -> None:
        self.clause_chars = clause_chars
        self.max_chars = max_chars
        self._buf = ""

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the pieces it completed (possibly none)."""
        self._buf += delta
        pieces: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut], self._buf[cut:]
            if any(ch.isalnum() for ch in piece):
                pieces.append(piece.strip())
            elif pieces:  # stray punctuation ("?!" split over deltas) joins the piece before
                pieces[-1] += piece.strip()
        return pieces

    def flush(self) -> str | None:
        """The rest of the text (the iterable ended), if anything speakable is left."""
        rest, self._buf = self._buf.strip(), ""
        return rest if any(ch.isalnum() for ch in rest) else None

    def _find_cut(self) -> int | None:
        m = _SENTENCE_END.search(self._buf)
        if m:
            return m.end()
        if len(self._buf) >= self.clause_chars:
            for m in _CLAUSE_END.finditer(self._buf):
                if m.end() >= self.clause_chars:
                    return m.end()
        if len(self._buf) > self.max_chars:
            space = self._buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None


def split_text(text: str) -> list[str]:
    """Cut a whole text into pieces the same way a stream of deltas would be cut."""
    seg = TextSegmenter()
    pieces = seg.feed(text + " ")
    rest = seg.flush()
    return pieces + ([rest] if rest else [])


# ---------------------------------------------------------------------------------- timeline


class _Timeline:
    """Turns the library's per-message buffers and events into chunks on one timeline.

    Runs in the worker thread. A phoneme event only says where a phoneme *starts*; it ends where
    the next phoneme, pause or clause end starts, so the last one is held until that is known.
    Events with an empty name are pauses: they end the previous phoneme and are not reported.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.samples = 0  # samples emitted so far, over all pieces
        self.piece_start_ms = 0.0
        self.word = -1
        self._words_before = 0  # words of the utterance in the pieces before this one
        self._word_starts: list[int] = []  # where each word of this piece starts (characters)
        self._pending: tuple[str, float, int] | None = None

    def begin_piece(self, text: str) -> None:
        """A new piece (``text``: what is handed to espeak) on the same timeline.

        Phonemes are numbered by the word of the utterance they belong to, found from the
        character position espeak gives each word event, not by counting the events: espeak
        joins some words into one ("on the" is a single word to it, with no event of its
        own for "the") and splits others ("3.5"), so a count drifts off the text's words."""
        self.piece_start_ms = self.samples * 1000.0 / self.sample_rate
        self._words_before += len(self._word_starts)
        self._word_starts = [m.start() for m in re.finditer(r"\S+", text)]

    def _word_at(self, text_position: int) -> int:
        """The utterance's word at espeak's (1-based) character position in this piece."""
        i = bisect.bisect_right(self._word_starts, max(0, text_position - 1)) - 1
        return self._words_before + max(0, i)

    def _close(self, end_ms: float, out: list[PhonemeTiming]) -> None:
        if self._pending is not None:
            ph, start, word = self._pending
            out.append(PhonemeTiming(ph, start, max(start, end_ms), word))
            self._pending = None

    def buffer(self, audio: bytes, events: Sequence[_espeak.EspeakEvent]) -> TTSChunk | None:
        pts_ms = self.samples * 1000.0 / self.sample_rate
        closed: list[PhonemeTiming] = []
        for ev in events:
            t = self.piece_start_ms + ev.audio_ms
            if ev.type == _espeak.EVENT_WORD:
                self.word = max(self.word, self._word_at(ev.text_position))
            elif ev.type == _espeak.EVENT_PHONEME:
                self._close(t, closed)
                if ev.phoneme.strip():
                    self._pending = (ev.phoneme, t, self.word)
            elif ev.type in (_espeak.EVENT_END, _espeak.EVENT_MSG_TERMINATED):
                self._close(t, closed)
        self.samples += len(audio) // 2
        if not audio and not closed:
            return None
        return TTSChunk(
            audio=audio, sample_rate=self.sample_rate, pts_ms=pts_ms, phonemes=tuple(closed)
        )

    def end_piece(self) -> list[PhonemeTiming]:
        closed: list[PhonemeTiming] = []
        self._close(self.samples * 1000.0 / self.sample_rate, closed)
        return closed


# ---------------------------------------------------------------------------------- source

_END = object()


class EspeakSource(TTSSource):
    """espeak-ng through its C API: PCM s16le mono at 22 050 Hz with IPA phoneme timings.

    ``voice`` is a voice id from :meth:`voices` (``"de"``, ``"en-us"``, ``"fr"`` …) or one of
    a voice's language codes (``"en-gb"``). Options: ``rate`` (80–450 words per minute),
    ``pitch`` (0–100), ``volume`` (0–200), ``range`` (0–100).
    """

    name: ClassVar[str] = "espeak"
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(
        timings="phonemes", streaming_input=True, sample_rates=(_espeak.SAMPLE_RATE,)
    )

    def __init__(self, **settings: Any) -> None:
        self.defaults = EspeakOptions.parse(settings)
        self._voices: list[Voice] | None = None
        self._espeak_names: dict[str, str] = {}

    # -- voices ---------------------------------------------------------------------------

    async def voices(self) -> Sequence[Voice]:
        if self._voices is None:
            infos = await asyncio.to_thread(lambda: _espeak.get_library().list_voices())
            voices: list[Voice] = []
            names: dict[str, str] = {}
            for info in infos:
                if info.identifier.startswith("mb/"):
                    continue  # mbrola voices need databases espeakng-loader does not ship
                vid = info.identifier.rsplit("/", 1)[-1].lower()
                voices.append(
                    Voice(
                        id=vid,
                        name=info.name,
                        language=info.language,
                        gender=_GENDERS.get(info.gender),
                    )
                )
                names[vid] = info.identifier
                for _, lang in info.languages:
                    names.setdefault(lang, info.identifier)
            self._voices = sorted(voices, key=lambda v: v.id)
            self._espeak_names = names
        return list(self._voices)

    async def resolve(self, voice: str) -> Voice:
        """The :class:`Voice` for an id or language code; :class:`UnknownVoiceError` listing the
        available ids otherwise."""
        voices = await self.voices()
        key = voice.strip().lower().replace("_", "-")
        for v in voices:
            if v.id == key:
                return v
        for v in voices:
            if v.language == key:
                return v
        identifier = self._espeak_names.get(key)
        if identifier is not None:
            for v in voices:
                if identifier.rsplit("/", 1)[-1].lower() == v.id:
                    return v
        available = ", ".join(v.id for v in voices)
        raise UnknownVoiceError(f"unknown espeak voice {voice!r}; available: {available}")

    # -- synthesis ------------------------------------------------------------------------

    def synthesize(
        self,
        text: str | AsyncIterable[str],
        *,
        voice: str,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TTSChunk]:
        merged = {
            "rate": self.defaults.rate,
            "pitch": self.defaults.pitch,
            "volume": self.defaults.volume,
            "range": self.defaults.range,
            **dict(options or {}),
        }
        opts = EspeakOptions.parse(merged)  # bad options fail at the call, not mid-stream
        if isinstance(text, str) and not text.strip():
            raise InputError("text is empty: give espeak something to say")
        return self._run(text, voice, opts)

    async def _pieces(self, text: str | AsyncIterable[str]) -> AsyncIterator[str]:
        if isinstance(text, str):
            for piece in split_text(text):
                yield piece
            return
        seg = TextSegmenter()
        async for delta in text:
            if not isinstance(delta, str):
                raise InputError(f"text deltas must be strings, got {type(delta).__name__}")
            for piece in seg.feed(delta):
                yield piece
        rest = seg.flush()
        if rest:
            yield rest

    async def _run(
        self, text: str | AsyncIterable[str], voice: str, opts: EspeakOptions
    ) -> AsyncIterator[TTSChunk]:
        v = await self.resolve(voice)
        identifier = self._espeak_names.get(v.id, v.id)
        lib = await asyncio.to_thread(_espeak.get_library)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        timeline = _Timeline(lib.sample_rate)

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody listens any more
                cancel.set()

        def speak_piece(piece: str) -> None:
            # Wait for the library without holding a thread forever once cancelled.
            while not _espeak.LOCK.acquire(timeout=0.05):
                if cancel.is_set():
                    return
            try:
                if cancel.is_set():
                    return
                lib.set_voice(identifier)
                lib.set_parameters(
                    rate=opts.rate, pitch=opts.pitch, volume=opts.volume, pitch_range=opts.range
                )
                spoken = _speakable(piece)
                timeline.begin_piece(spoken)

                def on_audio(audio: bytes, events: list[_espeak.EspeakEvent]) -> bool:
                    if cancel.is_set():
                        return False  # makes the callback return 1: espeak aborts
                    chunk = timeline.buffer(audio, events)
                    if chunk is not None:
                        put(chunk)
                    return not cancel.is_set()

                lib.synth(spoken, on_audio)
                tail = timeline.end_piece()
                if tail and not cancel.is_set():
                    put(tail)
            except _espeak.EspeakError as exc:
                put(TTSError(f"espeak-ng failed on {piece[:40]!r}: {exc}"))
            finally:
                _espeak.LOCK.release()

        async def produce() -> None:
            try:
                async for piece in self._pieces(text):
                    if cancel.is_set():
                        return
                    await asyncio.to_thread(speak_piece, piece)
                put(_END)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                if not cancel.is_set():
                    put(exc)
                raise

        producer = asyncio.create_task(produce())
        held: TTSChunk | None = None  # one chunk is held back so the last can carry final=True
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, list):  # phonemes closed at a piece end
                    if held is None:
                        held = TTSChunk(
                            audio=b"",
                            sample_rate=timeline.sample_rate,
                            pts_ms=timeline.samples * 1000.0 / timeline.sample_rate,
                        )
                    held = TTSChunk(
                        audio=held.audio,
                        sample_rate=held.sample_rate,
                        pts_ms=held.pts_ms,
                        phonemes=held.phonemes + tuple(item),
                    )
                    continue
                assert isinstance(item, TTSChunk)
                if held is not None:
                    yield held
                held = item
            if held is None:
                held = TTSChunk(audio=b"", sample_rate=timeline.sample_rate, pts_ms=0.0)
            yield TTSChunk(
                audio=held.audio,
                sample_rate=held.sample_rate,
                pts_ms=held.pts_ms,
                phonemes=held.phonemes,
                final=True,
            )
        finally:
            cancel.set()
            # A loop closed without ``shutdown_asyncgens`` finalizes this generator later, when
            # nothing can run on it any more: then the worker thread stops on its own at its
            # next buffer (``cancel``; ``put`` also sets it once the loop is gone).
            if not loop.is_closed():
                if not producer.done():
                    producer.cancel()
                # Wait for the producer to wind down (the worker thread aborts espeak at its
                # next buffer); ``wait`` does not re-raise the producer's error or cancellation.
                await asyncio.wait({producer})
                if not producer.cancelled():
                    producer.exception()  # retrieved: it was already handed to the consumer


@hookimpl
def register_tts_sources(register: Register) -> None:
    register("espeak", EspeakSource, aliases=("espeak-ng",))
