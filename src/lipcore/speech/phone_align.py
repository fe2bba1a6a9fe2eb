"""English text-known alignment with pocketsphinx's acoustic model (shipped in its wheel).

lipcore's own viseme model was trained on espeak-ng speech only; aligning a text on its
posteriors is exact on espeak's voices but finds fewer than three /p b m/ in four on another
synthesizer (flite: 72 %). pocketsphinx's English acoustic model was
trained on human speech: forced-aligning the text's words with it found 124 of flite's 131
/p b m/ within 40 ms (lipcore's own aligner: 94) and raised frame agreement from 71 % to 77 %
(``benchmarks/bench_audio_visemes.py``, docs/audio-visemes.md). So for English, when the text
is known, the phoneme times come from here; everything else (other languages, words its
dictionary lacks, numbers, very long files, an alignment that fails) stays with lipcore's own
aligner. Whether the text fits the audio at all is still decided by lipcore's aligner.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from math import gcd
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from lipcore.interfaces import PhonemeTiming

__all__ = ["ARPABET", "MAX_ALIGN_S", "align_english", "available"]

#: CMU (ARPABET) phones, as pocketsphinx's dictionary spells them, in IPA.
ARPABET: Final[dict[str, str]] = {
    "aa": "ɑ", "ae": "æ", "ah": "ʌ", "ao": "ɔ", "aw": "aʊ", "ax": "ə", "axr": "ɚ", "ay": "aɪ",
    "eh": "ɛ", "er": "ɝ", "ey": "eɪ", "ih": "ɪ", "ix": "ɨ", "iy": "i", "ow": "oʊ", "oy": "ɔɪ",
    "uh": "ʊ", "uw": "u", "b": "b", "ch": "tʃ", "d": "d", "dh": "ð", "dx": "ɾ", "el": "əl",
    "em": "m", "en": "n", "f": "f", "g": "ɡ", "hh": "h", "jh": "dʒ", "k": "k", "l": "l",
    "m": "m", "n": "n", "ng": "ŋ", "nx": "ŋ", "p": "p", "r": "ɹ", "s": "s", "sh": "ʃ",
    "t": "t", "th": "θ", "v": "v", "w": "w", "y": "j", "z": "z", "zh": "ʒ",
}  # fmt: skip

#: Longest recording aligned in one piece here (a forced alignment of one long utterance
#: needs wide beams and memory that grow with it); longer files use lipcore's aligner.
MAX_ALIGN_S: Final = 120.0
_RATE: Final = 16000
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_LOCK = threading.Lock()  # a decoder is not thread-safe: one alignment at a time


@lru_cache(maxsize=1)
def _decoder() -> Any | None:
    try:
        import pocketsphinx
    except ImportError:
        return None
    from pathlib import Path

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    return pocketsphinx.Decoder(
        hmm=str(model / "en-us"),
        dict=str(model / "cmudict-en-us.dict"),
        samprate=_RATE,
        loglevel="FATAL",
    )


def available() -> bool:
    """Whether pocketsphinx (and its English model) can be loaded."""
    return _decoder() is not None


def words_of(text: str) -> list[str] | None:
    """The text's words as the dictionary spells them; ``None`` when the text holds
    something only a text normaliser could say (digits, symbols)."""
    if any(ch.isdigit() for ch in text):
        return None
    lowered = text.lower().replace("’", "'")
    words = _WORD.findall(lowered)
    # A letter outside a–z (accents, another script): not this dictionary's language.
    rest = _WORD.sub(" ", lowered)
    if any(ch.isalpha() for ch in rest):
        return None
    return words or None


def align_english(
    samples: npt.NDArray[np.float32], sample_rate: int, text: str
) -> list[PhonemeTiming] | None:
    """Phoneme times (IPA, word = index among the text's words) of ``text`` spoken in
    ``samples`` (mono, in [-1, 1]), or ``None`` where this aligner does not apply or does
    not succeed (see the module docstring); the caller then uses lipcore's own aligner."""
    if len(samples) / sample_rate > MAX_ALIGN_S:
        return None
    words = words_of(text)
    decoder = _decoder()
    if words is None or decoder is None:
        return None
    from scipy.signal import resample_poly

    g = gcd(_RATE, sample_rate)
    y = samples.astype(np.float32) * 32768.0
    if sample_rate != _RATE:
        y = resample_poly(y, _RATE // g, sample_rate // g)
    # A little deterministic noise: stretches of digital silence (TTS output, padded files)
    # give the recognizer's features log(0) energies, and the alignment then finds no path.
    y = y + np.random.default_rng(0).uniform(-2.0, 2.0, len(y)).astype(np.float32)
    raw = np.clip(y, -32768, 32767).astype(np.int16).tobytes()
    with _LOCK:
        if any(decoder.lookup_word(w) is None for w in words):
            return None
        try:
            decoder.set_align_text(" ".join(words))
            decoder.start_utt()
            decoder.process_raw(raw, full_utt=True)
            decoder.end_utt()
            decoder.set_alignment()  # second pass: phone-level segmentation
            decoder.start_utt()
            decoder.process_raw(raw, full_utt=True)
            decoder.end_utt()
            alignment = decoder.get_alignment()
        except RuntimeError:  # no path through the text (its beam found none)
            return None
        if alignment is None:
            return None
        out: list[PhonemeTiming] = []
        index = -1
        for word in alignment:
            if word.name.startswith(("<", "[")) or word.name == "sil":
                continue
            index += 1
            for phone in word:
                ipa = ARPABET.get(phone.name.lower())
                if ipa is not None:
                    out.append(
                        PhonemeTiming(
                            ipa,
                            phone.start * 10.0,
                            (phone.start + phone.duration) * 10.0,
                            min(index, len(words) - 1),
                        )
                    )
    return out or None
