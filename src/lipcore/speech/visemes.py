"""Viseme classes, the IPA phoneme → class map, and export maps to other viseme sets.

The twelve classes (the asset contract's; Preston Blair's mouth set plus U, R, CH, TH):

========  ====================================================================
``Rest``  mouth at rest: silence, pauses
``AI``    open jaw: a ɑ æ ʌ ɐ (and the start of aɪ, aʊ)
``E``     slightly open, spread: e ɛ ə ɪ i, and the tongue consonants t d n s z k g h j
``U``     close rounded: u ʊ y ʏ
``O``     mid rounded: o ɔ ɒ ø œ
``MBP``   lips closed: m b p β
``FV``    lower lip under upper teeth: f v ɱ ʋ
``L``     tongue tip up, jaw open: l ɫ ʎ ɭ
``WQ``    tight rounded, protruded: w ʍ ɥ
``R``     slightly rounded: ɹ r ʁ ʀ ɚ ɝ
``CH``    teeth together, lips protruded: ʃ ʒ tʃ dʒ ɕ ʑ
``TH``    tongue between teeth: θ ð
========  ====================================================================

A phoneme may map to *two* classes: diphthongs move the mouth (``aɪ`` → AI then E) and ``pf``
closes then bites (MBP then FV). :func:`phoneme_visemes` returns them in order.

Stress, length and tie marks are dropped; diacritics (nasal ``̃``, syllabic ``̩``, aspiration
``ʰ``…) are dropped after an exact match of the whole phoneme was tried, so ``ç`` stays ``ç``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

__all__ = [
    "OCULUS_VISEMES",
    "PRESTON_BLAIR_VISEMES",
    "TO_OCULUS",
    "TO_PRESTON_BLAIR",
    "VISEME_CLASSES",
    "UnmappedPhonemeError",
    "dominance_scale",
    "is_closure",
    "is_silence",
    "normalize_phoneme",
    "phoneme_visemes",
    "to_oculus",
    "to_preston_blair",
]

#: The default class set, in the asset contract's order.
VISEME_CLASSES: Final[tuple[str, ...]] = (
    "Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH",
)  # fmt: skip

#: Whole phonemes (after stress/length marks are removed) that must not be split or stripped.
_EXACT: Final[dict[str, tuple[str, ...]]] = {
    # affricates
    "tʃ": ("CH",), "dʒ": ("CH",), "tɕ": ("CH",), "dʑ": ("CH",), "tʂ": ("CH",), "dʐ": ("CH",),
    "ts": ("E",), "dz": ("E",), "pf": ("MBP", "FV"), "bv": ("MBP", "FV"),
    "tθ": ("TH",), "dð": ("TH",), "kx": ("E",),
    # precomposed letters whose diacritic is part of the sound
    "ç": ("E",),
    # a bare palatalisation (espeak's ";" phoneme) is a brief j-glide
    "ʲ": ("E",),
    # r-coloured vowels are one gesture
    "ɚ": ("R",), "ɝ": ("R",),
    # English syllabic l (espeak "əl") is an l
    "əl": ("L",),
}  # fmt: skip

#: Per language (primary subtag): phonemes whose mouth shape differs from the IPA letter's
#: default. French schwa (de, le, que, je, petit) is rounded, between [ø] and [œ]: French
#: lexicons transcribe it ø, and espeak writes ə for it; drawn spread (E) it looks English.
_LANGUAGE_EXACT: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "fr": {"ə": ("O",)},
}


def _language_key(language: str | None) -> str:
    return (language or "").strip().lower().replace("_", "-").split("-")[0]


#: One IPA letter → class. Vowels first, then consonants.
_BASE: Final[dict[str, str]] = {
    # open / near-open vowels
    "a": "AI", "ɑ": "AI", "æ": "AI", "ʌ": "AI", "ɐ": "AI", "ä": "AI", "ɶ": "O",
    # mid and close unrounded vowels: spread lips
    "e": "E", "ɛ": "E", "ə": "E", "ɪ": "E", "i": "E", "ɨ": "E", "ᵻ": "E", "ɘ": "E",
    "ɜ": "E", "ɤ": "E", "ɯ": "E", "ɵ": "O", "ɞ": "O",
    # rounded vowels
    "o": "O", "ɔ": "O", "ɒ": "O", "ø": "O", "œ": "O",
    "u": "U", "ʊ": "U", "y": "U", "ʏ": "U", "ʉ": "U",
    # bilabials
    "m": "MBP", "b": "MBP", "p": "MBP", "β": "MBP", "ɸ": "MBP",
    # labiodentals
    "f": "FV", "v": "FV", "ɱ": "FV", "ʋ": "FV",
    # dentals
    "θ": "TH", "ð": "TH",
    # laterals
    "l": "L", "ɫ": "L", "ʎ": "L", "ɭ": "L", "ɬ": "L", "ɮ": "L", "ʟ": "L",
    # rounded approximants
    "w": "WQ", "ʍ": "WQ", "ɥ": "WQ",
    # rhotics
    "ɹ": "R", "ɚ": "R", "ɝ": "R", "r": "R", "ɾ": "R", "ʁ": "R", "ʀ": "R", "ɻ": "R", "ɽ": "R",
    # postalveolar / alveolo-palatal fricatives: lips protruded
    "ʃ": "CH", "ʒ": "CH", "ɕ": "CH", "ʑ": "CH", "ʂ": "CH", "ʐ": "CH",
    # tongue consonants with a neutral, slightly open mouth (Preston Blair's "etc" shape)
    "t": "E", "d": "E", "n": "E", "s": "E", "z": "E", "k": "E", "g": "E", "ɡ": "E",
    "ŋ": "E", "ɲ": "E", "ɳ": "E", "j": "E", "ʝ": "E", "c": "E", "ɟ": "E", "x": "E",
    "ɣ": "E", "χ": "E", "ɰ": "E", "q": "E", "ɢ": "E", "h": "E", "ɦ": "E", "ħ": "E",
    "ʕ": "E", "ʔ": "E", "ʈ": "E", "ɖ": "E", "ʙ": "MBP",
}  # fmt: skip

_VOWELS: Final = frozenset("aɑæʌɐäɶeɛəɪiɨᵻɘɜɤɯɵɞoɔɒøœuʊyʏʉɚɝ")

#: Marks removed before any lookup: stress, length, ties, syllable breaks, espeak's reduction
#: marker ``-``.
_DROP: Final = frozenset("ˈˌːˑ͜͡.‿-'^")
#: Modifier letters that only colour a consonant (aspiration, palatalisation, …).
_MODIFIERS: Final = frozenset("ʰʲʷˠˤʼⁿˡ˞ʱ")

_CLOSURE: Final = frozenset({"MBP", "FV"})

#: Consonants whose mouth shape mostly comes from the neighbouring vowels: low dominance.
_WEAK: Final = frozenset("tdnszkgɡŋjhxçɣχʔɾɲcɟqɦ")


class UnmappedPhonemeError(KeyError):
    """A phoneme that no class covers (a gap in the map; the exhaustive test guards it)."""


@lru_cache(maxsize=4096)
def normalize_phoneme(phoneme: str) -> str:
    """Drop stress, length and tie marks (and espeak language switches like ``(en)``)."""
    p = unicodedata.normalize("NFC", phoneme.strip())
    if p.startswith("(") and p.endswith(")"):
        return ""  # espeak's language-switch marker, not a sound
    return "".join(ch for ch in p if ch not in _DROP)


@lru_cache(maxsize=4096)
def is_silence(phoneme: str) -> bool:
    """True for pauses: ``""``, ``_``, espeak's numbered pause phonemes (``1``) and its
    language-switch markers (``(en)``). Any other symbol is a sound and needs a class."""
    return normalize_phoneme(phoneme).strip("_ 0123456789") == ""


def _strip_diacritics(p: str) -> str:
    decomposed = unicodedata.normalize("NFD", p)
    return "".join(
        ch for ch in decomposed if unicodedata.category(ch) != "Mn" and ch not in _MODIFIERS
    )


@lru_cache(maxsize=4096)
def phoneme_visemes(
    phoneme: str, *, strict: bool = False, language: str | None = None
) -> tuple[str, ...]:
    """The viseme class(es) of one IPA phoneme, in the order the mouth goes through them.

    Silence gives ``("Rest",)``. An unknown symbol raises :class:`UnmappedPhonemeError` when
    ``strict``; otherwise it falls back to ``("E",)`` (a neutral, slightly open mouth).
    ``language`` (a BCP-47 tag or espeak voice, e.g. ``"fr"``) applies that language's own
    shapes where they differ (French schwa is rounded).
    """
    if is_silence(phoneme):
        return ("Rest",)
    p = normalize_phoneme(phoneme)
    own = _LANGUAGE_EXACT.get(_language_key(language))
    if own:
        if p in own:
            return own[p]
        if _strip_diacritics(p) in own:
            return own[_strip_diacritics(p)]
    if p in _EXACT:
        return _EXACT[p]
    bare = _strip_diacritics(p)
    if bare in _EXACT:
        return _EXACT[bare]
    classes: list[str] = []
    for ch in bare:
        cls = _BASE.get(ch)
        if cls is None:
            if strict:
                raise UnmappedPhonemeError(f"no viseme class for {ch!r} in phoneme {phoneme!r}")
            cls = "E"
        if not classes or classes[-1] != cls:
            classes.append(cls)
    if not classes:
        if strict:
            raise UnmappedPhonemeError(f"no viseme class for phoneme {phoneme!r}")
        return ("E",)
    # A triphthong or a cluster keeps where it starts and where it ends.
    return tuple(classes) if len(classes) <= 2 else (classes[0], classes[-1])


def is_closure(viseme: str) -> bool:
    """MBP and FV must reach their shape: the lips close or touch the teeth."""
    return viseme in _CLOSURE


@lru_cache(maxsize=4096)
def is_vowel(phoneme: str) -> bool:
    """True if the phoneme's first letter is a vowel."""
    bare = _strip_diacritics(normalize_phoneme(phoneme))
    return bool(bare) and bare[0] in _VOWELS


@lru_cache(maxsize=4096)
def dominance_scale(phoneme: str) -> float:
    """How strongly a phoneme pulls the mouth to its class, relative to a vowel (1.0).

    Tongue consonants (t, d, n, s, k, …) barely show on the lips, so the vowels around them
    shape the mouth; closures are handled by the co-articulation parameters.
    """
    bare = _strip_diacritics(normalize_phoneme(phoneme))
    if bare and all(ch in _WEAK for ch in bare):
        return 0.35
    return 1.0


# ---------------------------------------------------------------------------- export maps

#: The Oculus / OpenXR lipsync set (15 visemes).
OCULUS_VISEMES: Final[tuple[str, ...]] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)  # fmt: skip

#: Each of our classes → the Oculus viseme(s) that show the same mouth, with shares summing
#: to 1. ``E`` covers the tongue consonants and the spread vowels, so it is split.
TO_OCULUS: Final[Mapping[str, Mapping[str, float]]] = {
    "Rest": {"sil": 1.0},
    "AI": {"aa": 1.0},
    "E": {"E": 0.5, "ih": 0.25, "DD": 0.25},
    "U": {"ou": 1.0},
    "O": {"oh": 1.0},
    "MBP": {"PP": 1.0},
    "FV": {"FF": 1.0},
    "L": {"nn": 1.0},
    "WQ": {"ou": 1.0},
    "R": {"RR": 1.0},
    "CH": {"CH": 1.0},
    "TH": {"TH": 1.0},
}

#: Preston Blair / Rhubarb mouth shapes A–H and X (idle).
PRESTON_BLAIR_VISEMES: Final[tuple[str, ...]] = ("A", "B", "C", "D", "E", "F", "G", "H", "X")

#: A: closed (M B P); B: slightly open, clenched teeth (most consonants, ee); C: open (e, æ);
#: D: wide open (a); E: slightly rounded (o, er); F: puckered (u, w); G: f/v; H: l; X: idle.
TO_PRESTON_BLAIR: Final[Mapping[str, Mapping[str, float]]] = {
    "Rest": {"X": 1.0},
    "AI": {"D": 1.0},
    "E": {"B": 0.6, "C": 0.4},
    "U": {"F": 1.0},
    "O": {"E": 1.0},
    "MBP": {"A": 1.0},
    "FV": {"G": 1.0},
    "L": {"H": 1.0},
    "WQ": {"F": 1.0},
    "R": {"E": 1.0},
    "CH": {"B": 1.0},
    "TH": {"B": 1.0},
}


def _convert(
    weights: Mapping[str, float], table: Mapping[str, Mapping[str, float]], rest: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    total = 0.0
    for cls, w in weights.items():
        if cls not in table:
            raise KeyError(f"unknown viseme class {cls!r}; known: {', '.join(VISEME_CLASSES)}")
        if cls == "Rest":
            continue
        total += w
        for target, share in table[cls].items():
            out[target] = out.get(target, 0.0) + w * share
    out[rest] = out.get(rest, 0.0) + max(0.0, 1.0 - total)
    return out


def to_oculus(weights: Mapping[str, float]) -> dict[str, float]:
    """Convert class weights (remainder = Rest) to the Oculus 15 set; ``sil`` takes the rest,
    so the result sums to 1."""
    return _convert(weights, TO_OCULUS, "sil")


def to_preston_blair(weights: Mapping[str, float]) -> dict[str, float]:
    """Convert class weights to Preston Blair A–H with ``X`` for rest; the result sums to 1."""
    return _convert(weights, TO_PRESTON_BLAIR, "X")
