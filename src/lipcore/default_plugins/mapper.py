"""Built-in viseme mapper: IPA phonemes (or timed characters) → viseme track → weights.

* Phoneme timings map through :func:`lipcore.speech.visemes.phoneme_visemes`; a phoneme with two
  classes (a diphthong, ``pf``) is split, the first part taking 55 % of its time.
* Character timings (ElevenLabs) are grouped into words; each word goes through espeak-ng's
  grapheme → phoneme translation in the voice's language, and its phonemes are spread over the
  word's time span (vowels weigh 1.6× a consonant). Spaces and punctuation are silence.
* :mod:`lipcore.speech.coarticulation` turns the track into weights. Frames are on the *audio*
  timeline; the engine applies the mouth's lead over the audio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

from lipcore.errors import InputError
from lipcore.hookspecs import Register, hookimpl
from lipcore.interfaces import (
    CharTiming,
    PhonemeTiming,
    VisemeFrame,
    VisemeMapper,
    VisemeSegment,
    VisemeStream,
)
from lipcore.speech import _espeak
from lipcore.speech.coarticulation import (
    CoarticulationParams,
    StreamSampler,
    frames_from_weights,
    prepare_segments,
    sample_weights,
)
from lipcore.speech.visemes import is_silence, is_vowel, phoneme_visemes

__all__ = ["DefaultVisemeMapper", "DefaultVisemeStream", "g2p_word", "register_viseme_mappers"]

logger = logging.getLogger("lipcore.mapper")

_DIPHTHONG_SPLIT = 0.55
_VOWEL_WEIGHT = 1.6


# ----------------------------------------------------------------------------- G2P


@lru_cache(maxsize=256)
def _espeak_language(language: str) -> str:
    """An espeak voice for ``language``: itself, else its primary subtag, else English."""
    lib = _espeak.get_library()
    for candidate in (language, language.split("-")[0]):
        try:
            lib.set_voice(candidate)
        except _espeak.EspeakError:
            continue
        return candidate
    logger.warning("no espeak voice for language %r; using English for G2P", language)
    return "en"


@lru_cache(maxsize=20000)
def g2p_word(word: str, language: str) -> tuple[str, ...]:
    """IPA phonemes of one word (stress marks kept) in ``language``, via espeak-ng."""
    lib = _espeak.get_library()
    voice = _espeak_language(language)
    phonemes: list[str] = []
    for clause in lib.text_to_phonemes(word, voice):
        for w in clause.split():
            phonemes.extend(p for p in w.split("_") if p and not is_silence(p))
    return tuple(phonemes)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "'’-"


@lru_cache(maxsize=4096)
def _visible_classes(phoneme: str, language: str | None = None) -> tuple[str, ...]:
    """The viseme classes of ``phoneme`` in ``language``; none for silence and for what maps
    to Rest."""
    if is_silence(phoneme):
        return ()
    classes = phoneme_visemes(phoneme, language=language)
    return () if classes == ("Rest",) else classes


def _segments_for(
    ph: PhonemeTiming | tuple[str, float, float], language: str | None = None
) -> list[VisemeSegment]:
    name, start, end = (ph.phoneme, ph.start_ms, ph.end_ms) if isinstance(ph, PhonemeTiming) else ph
    classes = _visible_classes(name, language)
    if not classes or end < start:
        return []
    if len(classes) == 1:
        return [VisemeSegment(classes[0], start, end, name)]
    mid = start + (end - start) * _DIPHTHONG_SPLIT
    return [VisemeSegment(classes[0], start, mid, name), VisemeSegment(classes[1], mid, end, name)]


def _word_segments(chars: Sequence[CharTiming], language: str) -> list[VisemeSegment]:
    """Spread a word's phonemes over its characters' span, by vowel/consonant weight."""
    word = "".join(c.char for c in chars).strip("'’-")
    if not word:
        return []
    start = min(c.start_ms for c in chars)
    end = max(c.end_ms for c in chars)
    phonemes = g2p_word(word, language)
    if not phonemes or end <= start:
        return []
    span = end - start
    edges = [start + span * f for f in _word_fractions(phonemes)]
    out: list[VisemeSegment] = []
    for i, p in enumerate(phonemes):
        out.extend(_segments_for((p, edges[i], edges[i + 1]), language))
    return out


@lru_cache(maxsize=20000)
def _word_fractions(phonemes: tuple[str, ...]) -> tuple[float, ...]:
    """Where each phoneme of a word starts and the last ends, as fractions of the word's
    span (vowels weigh :data:`_VOWEL_WEIGHT` consonants); cached with the G2P result."""
    weights = [_VOWEL_WEIGHT if is_vowel(p) else 1.0 for p in phonemes]
    total = math.fsum(weights)
    out = [0.0]
    acc = 0.0
    for w in weights:
        acc += w
        out.append(acc / total)
    return tuple(out)


class _CharWords:
    """Groups streamed characters into words; holds an unfinished trailing word."""

    def __init__(self) -> None:
        self.word: list[CharTiming] = []
        self.known_ms = -math.inf  # end of the last character that is not in the held word

    def push(self, chars: Sequence[CharTiming]) -> list[list[CharTiming]]:
        words: list[list[CharTiming]] = []
        for c in chars:
            if not isinstance(c, CharTiming):
                raise InputError(f"character timings must be CharTiming, got {type(c).__name__}")
            if (len(c.char) == 1 and _is_word_char(c.char)) or (len(c.char) > 1 and c.char.strip()):
                self.word.append(c)
                continue
            if self.word:
                words.append(self.word)
                self.word = []
            self.known_ms = max(self.known_ms, c.end_ms)
        if self.word:
            self.known_ms = max(self.known_ms, min(c.start_ms for c in self.word))
        return words

    def flush(self) -> list[list[CharTiming]]:
        words = [self.word] if self.word else []
        if self.word:
            self.known_ms = max(self.known_ms, max(c.end_ms for c in self.word))
        self.word = []
        return words


# ----------------------------------------------------------------------------- mapper


def _check_fps(fps: float) -> float:
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or not 1.0 <= fps <= 240.0:
        raise InputError(f"fps={fps!r} is out of range; use 1 to 240 frames per second")
    return float(fps)


class DefaultVisemeMapper(VisemeMapper):
    """Twelve-class viseme mapper with Cohen–Massaro co-articulation (see
    :mod:`lipcore.speech.coarticulation` for the model and its parameters)."""

    name: ClassVar[str] = "default"

    def __init__(self, params: CoarticulationParams | None = None) -> None:
        self.params = params or CoarticulationParams()

    def track_from_phonemes(
        self, phonemes: Sequence[PhonemeTiming], *, language: str
    ) -> list[VisemeSegment]:
        track: list[VisemeSegment] = []
        for ph in phonemes:
            track.extend(_segments_for(ph, language))
        return track

    def track_from_characters(
        self, chars: Sequence[CharTiming], *, language: str
    ) -> list[VisemeSegment]:
        words = _CharWords()
        groups = words.push(chars) + words.flush()
        track: list[VisemeSegment] = []
        for group in groups:
            track.extend(_word_segments(group, language))
        return track

    def last_frame(self, end_ms: float, fps: float) -> int:
        """Index of the last frame for speech ending at ``end_ms``: late enough that every
        influence has faded and the mouth is at Rest."""
        return math.ceil((end_ms + self.params.lookahead_ms(fps)) * fps / 1000.0)

    def sample(
        self, track: Sequence[VisemeSegment], *, fps: float, end_ms: float | None = None
    ) -> list[VisemeFrame]:
        fps = _check_fps(fps)
        speech_end = max((s.end_ms for s in track), default=0.0)
        last = self.last_frame(max(speech_end, end_ms or 0.0), fps)
        arr = prepare_segments(track, self.params, fps=fps, closed=True)
        weights = sample_weights(arr, self.params, fps=fps, first=0, last=last)
        return frames_from_weights(weights, fps=fps, first=0)

    def stream(self, *, language: str, fps: float) -> VisemeStream:
        return DefaultVisemeStream(self, language=language, fps=_check_fps(fps))


class DefaultVisemeStream(VisemeStream):
    """Incremental co-articulation: frames come out as soon as everything within their
    look-ahead is known, with the same values :meth:`DefaultVisemeMapper.sample` gives.
    The work is kept between chunks (:class:`lipcore.speech.coarticulation.StreamSampler`): each
    segment is prepared once, each frame computed once."""

    def __init__(self, mapper: DefaultVisemeMapper, *, language: str, fps: float) -> None:
        self.mapper = mapper
        self.params = mapper.params
        self.language = language
        self.fps = fps
        self.track: list[VisemeSegment] = []  # the whole track so far (for --track, tests)
        self._known_ms = 0.0
        self._words = _CharWords()
        self._finished = False
        self._lookahead = self.params.lookahead_ms(fps)
        self._sampler = StreamSampler(self.params, fps)
        self._known_now = 0.0  # how far the track was known at the last push

    def _add(self, segs: Sequence[VisemeSegment]) -> None:
        if segs:
            self.track.extend(segs)
            self._sampler.add(segs)
            for s in segs:
                if s.end_ms > self._known_ms:
                    self._known_ms = s.end_ms

    def push(
        self,
        *,
        phonemes: Sequence[PhonemeTiming] = (),
        chars: Sequence[CharTiming] = (),
        horizon_ms: float,
    ) -> list[VisemeFrame]:
        if self._finished:
            raise InputError("this viseme stream is finished; start a new one per utterance")
        segs: list[VisemeSegment] = []
        for ph in phonemes:
            segs.extend(_segments_for(ph, self.language))
        self._add(segs)
        if chars:
            for group in self._words.push(chars):
                self._add(_word_segments(group, self.language))
        known = max(self._known_ms, self._words.known_ms)
        if chars and self._words.word:
            # The held word starts where it starts: nothing after that is known yet.
            known = min(known, min(c.start_ms for c in self._words.word))
        self._known_now = known
        limit = min(horizon_ms, known) - self._lookahead
        last = math.floor(limit * self.fps / 1000.0)
        if last < self._sampler.next_frame:
            return []  # most chunks of a 30 fps stream: no frame is final yet
        # Spaces and punctuation after the last word are known silence: Rest up to there.
        return self._sampler.emit(last, closed=False, silent_until=known)

    def preview(self, until_ms: float) -> list[VisemeFrame]:
        """Frames ``next_frame … until_ms`` from the track known now, the word still open at
        the end of the last chunk guessed from its letters so far; the segments beyond are
        unknown, so their anticipation is missing. Whole-track work, meant for the few frames
        at the start of an utterance before the first one is final."""
        if self._finished:
            return []
        first = self._sampler.next_frame
        last = math.floor(until_ms * self.fps / 1000.0)
        if last < first:
            return []
        track = list(self.track)
        if self._words.word:
            track.extend(_word_segments(self._words.word, self.language))
            track.sort(key=lambda s: (s.start_ms, s.end_ms))
        arr = prepare_segments(
            track, self.params, fps=self.fps, closed=False, silent_until=self._known_now
        )
        weights = sample_weights(arr, self.params, fps=self.fps, first=first, last=last)
        return frames_from_weights(weights, fps=self.fps, first=first)

    def finish(self, end_ms: float | None = None) -> list[VisemeFrame]:
        if self._finished:
            return []
        for group in self._words.flush():
            self._add(_word_segments(group, self.language))
        self._finished = True
        speech_end = max(self._known_ms, end_ms or 0.0)
        return self._sampler.emit(self.mapper.last_frame(speech_end, self.fps), closed=True)


@hookimpl
def register_viseme_mappers(register: Register) -> None:
    register("default", DefaultVisemeMapper)
