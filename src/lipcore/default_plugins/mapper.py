"""Built-in viseme mapper: IPA phonemes (or timed characters) → viseme track → weights.

* Phoneme timings map through :func:`lipcore.visemes.phoneme_visemes`; a phoneme with two
  classes (a diphthong, ``pf``) is split, the first part taking 55 % of its time.
* Character timings (ElevenLabs) are grouped into words; each word goes through espeak-ng's
  grapheme → phoneme translation in the voice's language, and its phonemes are spread over the
  word's time span (vowels weigh 1.6× a consonant). Spaces and punctuation are silence.
* :mod:`lipcore.coarticulation` turns the track into weights. Frames are on the *audio*
  timeline; the engine applies the mouth's lead over the audio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from lipcore import _espeak
from lipcore.coarticulation import (
    CoarticulationParams,
    Row,
    frames_from_rows,
    frames_from_weights,
    prepare_segment_lists,
    prepare_segments,
    raw_rows,
    sample_rows,
    sample_weights,
    smooth_kernel,
)
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
from lipcore.visemes import is_silence, is_vowel, phoneme_visemes

__all__ = ["DefaultVisemeMapper", "DefaultVisemeStream", "g2p_word", "register_viseme_mappers"]

logger = logging.getLogger("lipcore.mapper")

_DIPHTHONG_SPLIT = 0.55
#: Above this many frames in one emit the stream computes with numpy arrays; below, with
#: scalars (numpy's per-call cost dominates a chunk's one or two frames).
_ARRAY_FRAMES = 24
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


def _segments_for(ph: PhonemeTiming | tuple[str, float, float]) -> list[VisemeSegment]:
    name, start, end = (ph.phoneme, ph.start_ms, ph.end_ms) if isinstance(ph, PhonemeTiming) else ph
    if is_silence(name) or end < start:
        return []
    classes = phoneme_visemes(name)
    if classes == ("Rest",):
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
    w = np.array([_VOWEL_WEIGHT if is_vowel(p) else 1.0 for p in phonemes])
    edges = start + (end - start) * np.concatenate(([0.0], np.cumsum(w) / w.sum()))
    out: list[VisemeSegment] = []
    for i, p in enumerate(phonemes):
        out.extend(_segments_for((p, float(edges[i]), float(edges[i + 1]))))
    return out


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
    :mod:`lipcore.coarticulation` for the model and its parameters)."""

    name: ClassVar[str] = "default"

    def __init__(self, params: CoarticulationParams | None = None) -> None:
        self.params = params or CoarticulationParams()

    def track_from_phonemes(
        self, phonemes: Sequence[PhonemeTiming], *, language: str
    ) -> list[VisemeSegment]:
        track: list[VisemeSegment] = []
        for ph in phonemes:
            track.extend(_segments_for(ph))
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
    look-ahead is known, with the same values :meth:`DefaultVisemeMapper.sample` gives."""

    def __init__(self, mapper: DefaultVisemeMapper, *, language: str, fps: float) -> None:
        self.mapper = mapper
        self.params = mapper.params
        self.language = language
        self.fps = fps
        self.track: list[VisemeSegment] = []  # the whole track so far (for --track, tests)
        self._live: list[VisemeSegment] = []  # the part that can still influence a frame
        self._rest_before = -math.inf
        self._known_ms = 0.0
        self._next = 0  # index of the next frame to emit
        self._words = _CharWords()
        self._finished = False
        self._lookahead = self.params.lookahead_ms(fps)
        self._kernel = smooth_kernel(self.params, fps)
        # Raw (unsmoothed) rows of frames ``_raw_first …``: a frame's raw weights are final
        # once it has been computed for an emit (everything within the look-ahead was known),
        # so the next chunk only computes the frames it adds.
        self._raw_first = 0
        self._raw: list[Row] = []
        self._prepared: dict[VisemeSegment, Any] = {}  # per-segment work, kept while live

    def _add(self, segs: Sequence[VisemeSegment]) -> None:
        self.track.extend(segs)
        self._live.extend(segs)
        if segs:
            self._known_ms = max(self._known_ms, max(s.end_ms for s in segs))

    def _emit(
        self, last: int, *, closed: bool, silent_until: float = -math.inf
    ) -> list[VisemeFrame]:
        if last < self._next:
            return []
        if last - self._next >= _ARRAY_FRAMES:
            frames = self._emit_arrays(last, closed=closed, silent_until=silent_until)
        else:
            frames = self._emit_rows(last, closed=closed, silent_until=silent_until)
        self._next = last + 1
        self._trim()
        return frames

    def _emit_arrays(self, last: int, *, closed: bool, silent_until: float) -> list[VisemeFrame]:
        # Many frames at once (a long chunk, the end of a long utterance): numpy pays off.
        arr = prepare_segments(
            self._live,
            self.params,
            fps=self.fps,
            closed=closed,
            rest_before=self._rest_before,
            silent_until=silent_until,
        )
        weights = sample_weights(arr, self.params, fps=self.fps, first=self._next, last=last)
        self._raw = []  # not kept by the array path
        return frames_from_weights(weights, fps=self.fps, first=self._next)

    def _emit_rows(self, last: int, *, closed: bool, silent_until: float) -> list[VisemeFrame]:
        lists = prepare_segment_lists(
            self._live,
            self.params,
            fps=self.fps,
            closed=closed,
            rest_before=self._rest_before,
            silent_until=silent_until,
            memo=self._prepared,
        )
        k = len(self._kernel) // 2
        lo, hi = self._next - k, last + k
        have_end = self._raw_first + len(self._raw)
        if not self._raw or self._raw_first > lo or have_end < lo:
            self._raw_first, self._raw = lo, []
        else:
            del self._raw[: lo - self._raw_first]
            self._raw_first = lo
        start = self._raw_first + len(self._raw)
        self._raw.extend(raw_rows(lists, start, hi, self.fps, self.params.epsilon))
        rows = sample_rows(self._raw, lists, self.params, self._kernel, first=self._next)
        return frames_from_rows(rows, fps=self.fps, first=self._next)

    def _trim(self) -> None:
        # Segments whose influence ends before the next frame's smoothing reach are dropped;
        # the Rest that follows them starts at ``_rest_before``.
        frame_ms = 1000.0 / self.fps
        horizon = self._next * frame_ms - self._lookahead - frame_ms
        keep: list[VisemeSegment] = []
        for s in self._live:
            if s.end_ms < horizon:
                self._rest_before = max(self._rest_before, s.end_ms)
                self._prepared.pop(s, None)
            else:
                keep.append(s)
        self._live = keep

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
            segs.extend(_segments_for(ph))
        self._add(segs)
        if chars:
            for group in self._words.push(chars):
                self._add(_word_segments(group, self.language))
        known = max(self._known_ms, self._words.known_ms)
        if chars and self._words.word:
            # The held word starts where it starts: nothing after that is known yet.
            known = min(known, min(c.start_ms for c in self._words.word))
        limit = min(horizon_ms, known) - self._lookahead
        last = math.floor(limit * self.fps / 1000.0)
        # Spaces and punctuation after the last word are known silence: Rest up to there.
        return self._emit(last, closed=False, silent_until=known)

    def finish(self, end_ms: float | None = None) -> list[VisemeFrame]:
        if self._finished:
            return []
        for group in self._words.flush():
            self._add(_word_segments(group, self.language))
        self._finished = True
        speech_end = max(self._known_ms, end_ms or 0.0)
        return self._emit(self.mapper.last_frame(speech_end, self.fps), closed=True)


@hookimpl
def register_viseme_mappers(register: Register) -> None:
    register("default", DefaultVisemeMapper)
