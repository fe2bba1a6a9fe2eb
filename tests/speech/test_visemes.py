"""Phoneme → viseme classes, including an exhaustive check of every phoneme espeak-ng can emit
for the supported languages, and the export maps."""

from __future__ import annotations

import itertools
import os
import struct

import espeakng_loader
import pytest

from lipcore.speech import _espeak
from lipcore.speech.visemes import (
    OCULUS_VISEMES,
    PRESTON_BLAIR_VISEMES,
    TO_OCULUS,
    TO_PRESTON_BLAIR,
    VISEME_CLASSES,
    UnmappedPhonemeError,
    is_silence,
    phoneme_visemes,
    to_oculus,
    to_preston_blair,
)


def test_class_set_is_the_contracts() -> None:
    assert VISEME_CLASSES == (
        "Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("phoneme", "classes"),
    [
        # stress, length and ties are dropped
        ("ˈa", ("AI",)), ("ɑː", ("AI",)), ("ˌɛ", ("E",)), ("t͡ʃ", ("CH",)),
        # bilabials and labiodentals
        ("m", ("MBP",)), ("b", ("MBP",)), ("p", ("MBP",)), ("β", ("MBP",)),
        ("f", ("FV",)), ("v", ("FV",)), ("ʋ", ("FV",)),
        # German
        ("ç", ("E",)), ("x", ("E",)), ("ʁ", ("R",)), ("ʀ", ("R",)), ("ɐ", ("AI",)),
        ("ʏ", ("U",)), ("yː", ("U",)), ("øː", ("O",)), ("œ", ("O",)),
        ("pf", ("MBP", "FV")), ("ts", ("E",)), ("aɪ", ("AI", "E")), ("aʊ", ("AI", "U")),
        ("ɔø", ("O",)),
        # English
        ("θ", ("TH",)), ("ð", ("TH",)), ("dʒ", ("CH",)), ("tʃ", ("CH",)), ("ʃ", ("CH",)),
        ("ɹ", ("R",)), ("ɚ", ("R",)), ("w", ("WQ",)), ("oʊ", ("O", "U")), ("eɪ", ("E",)),
        ("ɔɪ", ("O", "E")), ("ɑːɹ", ("AI", "R")), ("əl", ("L",)), ("n̩", ("E",)), ("ᵻ", ("E",)),
        ("aɪɚ", ("AI", "R")),
        # French / Spanish / Italian
        ("ɑ̃", ("AI",)), ("œ̃", ("O",)), ("ɥ", ("WQ",)), ("ʎ", ("L",)), ("ɲ", ("E",)),
        ("ə-", ("E",)), ("dʒː", ("CH",)), ("tsː", ("E",)), ("ss", ("E",)),
        # silence
        ("", ("Rest",)), ("_", ("Rest",)), ("(en)", ("Rest",)), ("1", ("Rest",)),
    ],
)  # fmt: skip
def test_phoneme_classes(phoneme: str, classes: tuple[str, ...]) -> None:
    assert phoneme_visemes(phoneme, strict=True) == classes


def test_unknown_symbols_raise_in_strict_mode_and_fall_back_otherwise() -> None:
    with pytest.raises(UnmappedPhonemeError, match="'☃'"):
        phoneme_visemes("☃", strict=True)
    assert phoneme_visemes("☃") == ("E",)
    with pytest.raises(UnmappedPhonemeError, match="'ǂ'"):
        phoneme_visemes("ˈǂ", strict=True)


def test_silence_detection() -> None:
    assert is_silence("") and is_silence("_") and is_silence("(fr)") and is_silence(" ")
    assert not is_silence("m") and not is_silence("ʔ")


# --------------------------------------------------------------------------- exhaustive

#: language → (espeak voice, phoneme table name, alphabet for the letter bigrams)
LANGUAGES = {
    "de": ("de", "de", "abcdefghijklmnopqrstuvwxyzäöüß"),
    "en-us": ("en-us", "en-us", "abcdefghijklmnopqrstuvwxyz"),
    "en-gb": ("en-gb", "en", "abcdefghijklmnopqrstuvwxyz"),
    "fr": ("fr", "fr", "abcdefghijklmnopqrstuvwxyzàâæçéèêëîïôœùûüÿ"),
    "es": ("es", "es", "abcdefghijklmnopqrstuvwxyzáéíñóúü"),
    "it": ("it", "it", "abcdefghijklmnopqrstuvwxyzàèéìíîòóùú"),
}

CORPUS = {
    "de": (
        "Der schnelle braune Fuchs springt über den faulen Hund. Zwölf Boxkämpfer jagen "
        "Viktor quer über den großen Sylter Deich. Pfeffer, Zahn, ich, ach, Hütte, Öl, Bäume, "
        "Euro, Jacht, Chemie, Garage, Restaurant, Orange, Jazz, Theater, Computer, Psychologie, "
        "Kinder, Vater, Wasser, Quark, Xylophon, Yacht, 1234, 3,5 %, 10:30 Uhr, z. B. E-Mail."
    ),
    "en-us": (
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        "Church, judge, thin, this, vision, sing, hour, fire, cure, near, hair, car, water, "
        "button, bottle, wanted, Sean, Zoe, rhythm, schedule, genre, 42, 7.5 %, e-mail."
    ),
    "en-gb": (
        "The quick brown fox jumps over the lazy dog. Car, water, hair, near, cure, tour, "
        "button, bottle, schedule, dance, hot, thought, goat, 42."
    ),
    "fr": (
        "Portez ce vieux whisky au juge blond qui fume. Un bon vin blanc, huit, oui, pain, "
        "brun, champ, gnôle, fille, yeux, cœur, œuf, deux, peur, 42."
    ),
    "es": (
        "El veloz murciélago hindú comía feliz cardillo y kiwi. La cigüeña tocaba el saxofón "
        "detrás del palenque de paja. Perro, caro, llama, año, jamón, guerra, 42."
    ),
    "it": (
        "Quel vituperabile xenofobo zelante assaggia il whisky ed esclama: alleluja! Gnocchi, "
        "sci, figlio, pizza, zero, ghiaccio, cuore, 42."
    ),
}

# phontab phoneme types that are not sounds: pause, stress, virtual, deleted, invalid
_NOT_SOUNDS = {0, 1, 9, 14, 15}


def _phoneme_tables() -> dict[str, tuple[int, list[tuple[int, str, int]]]]:
    """Parse espeak-ng-data/phontab: for each table its name → (included table + 1, entries
    (code, mnemonic, type)). Layout (espeak-ng synthdata.c): a table count, then per table
    n_phonemes, includes, two pad bytes, a 32-byte name and n_phonemes 16-byte PHONEME_TAB."""
    path = os.path.join(espeakng_loader.get_data_path(), "phontab")
    with open(path, "rb") as f:
        data = f.read()
    tables: dict[str, tuple[int, list[tuple[int, str, int]]]] = {}
    names: list[str] = []
    p = 4
    for _ in range(data[0]):
        n, includes = data[p], data[p + 1]
        name = data[p + 4 : p + 36].split(b"\0")[0].decode()
        p += 36
        entries = []
        for i in range(n):
            mnemonic, _flags, _prog, code, typ = struct.unpack_from("<IIHBB", data, p + 16 * i)
            text = mnemonic.to_bytes(4, "little").split(b"\0")[0].decode("latin-1")
            entries.append((code, text, typ))
        p += 16 * n
        tables[name] = (includes, entries)
        names.append(name)
    assert p == len(data), "phontab layout not understood"
    tables["__order__"] = (0, [(i, n, 0) for i, n in enumerate(names)])
    return tables


def _language_mnemonics(table: str) -> set[str]:
    """Every sound phoneme of a language: its table merged over its base tables."""
    tables = _phoneme_tables()
    order = [n for _, n, _ in tables["__order__"][1]]
    merged: dict[int, tuple[str, int]] = {}

    def walk(name: str) -> None:
        includes, entries = tables[name]
        if includes > 0:
            walk(order[includes - 1])
        for code, text, typ in entries:
            merged[code] = (text, typ)

    walk(table)
    return {text for text, typ in merged.values() if typ not in _NOT_SOUNDS and text}


def _emitted_by_synthesis(voice: str, text: str, *, phoneme_input: bool) -> set[str]:
    lib = _espeak.get_library()
    names: set[str] = set()

    def on_audio(audio: bytes, events: list[_espeak.EspeakEvent]) -> bool:
        names.update(e.phoneme for e in events if e.type == _espeak.EVENT_PHONEME)
        return True

    with _espeak.LOCK:
        lib.set_voice(voice)
        lib.set_parameters(rate=450, pitch=50, volume=100, pitch_range=50)
        lib.synth(text, on_audio, phoneme_input=phoneme_input)
    return names


def _emitted_by_g2p(voice: str, text: str) -> set[str]:
    out: set[str] = set()
    for clause in _espeak.get_library().text_to_phonemes(text, voice):
        for word in clause.split():
            out.update(p for p in word.split("_") if p)
    return out


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_phoneme_espeak_emits_is_mapped(language: str) -> None:
    """Exhaustive, by three routes whose union is checked:

    1. **The phoneme inventory.** espeak-ng-data/phontab is parsed (binary layout as in
       espeak-ng's synthdata.c) and the language's table is merged over its base tables the
       way espeak does it. Every sound phoneme (not pause/stress/virtual) is synthesized from
       its mnemonic through espeak's phoneme input (``[[x]]``), alone, between vowels and
       stressed, because a phoneme's IPA name can depend on its context; the IPA names are
       read from the phoneme *events*, exactly as the TTS source receives them.
    2. **Grapheme → phoneme.** A multi-sentence corpus (pangrams, loan words, numbers,
       abbreviations) and every letter bigram of the language's alphabet go through
       espeak_TextToPhonemes (the character-timing path uses it).
    3. **Synthesis of the corpus** (the phoneme-timing path).

    Any name without a viseme class fails the test, listing all of them.
    """
    voice, table, alphabet = LANGUAGES[language]
    names: set[str] = set()
    mnemonics = _language_mnemonics(table)
    assert len(mnemonics) > 80
    for m in sorted(mnemonics):
        for context in ("[[{}]]", "[[a{}a]]", "[['{}]]"):
            names |= _emitted_by_synthesis(voice, context.format(m), phoneme_input=True)
    bigrams = ", ".join("".join(p) for p in itertools.product(alphabet, repeat=2))
    names |= _emitted_by_g2p(voice, CORPUS[language] + " " + bigrams)
    names |= _emitted_by_synthesis(voice, CORPUS[language], phoneme_input=False)
    assert len(names) > 60
    unmapped = []
    for name in sorted(names):
        try:
            phoneme_visemes(name, strict=True)
        except UnmappedPhonemeError:
            unmapped.append(name)
    assert not unmapped, f"{language}: no viseme class for {unmapped}"


# --------------------------------------------------------------------------- export maps


def test_export_tables_cover_every_class_and_sum_to_one() -> None:
    for table, targets in ((TO_OCULUS, OCULUS_VISEMES), (TO_PRESTON_BLAIR, PRESTON_BLAIR_VISEMES)):
        assert set(table) == set(VISEME_CLASSES)
        for shares in table.values():
            assert sum(shares.values()) == pytest.approx(1.0)
            assert set(shares) <= set(targets)
    assert len(OCULUS_VISEMES) == 15


def test_weight_conversion() -> None:
    w = {"MBP": 0.6, "AI": 0.3}
    oc = to_oculus(w)
    assert oc["PP"] == pytest.approx(0.6) and oc["aa"] == pytest.approx(0.3)
    assert oc["sil"] == pytest.approx(0.1)
    assert sum(oc.values()) == pytest.approx(1.0)
    pb = to_preston_blair(w)
    assert pb["A"] == pytest.approx(0.6) and pb["D"] == pytest.approx(0.3)
    assert pb["X"] == pytest.approx(0.1)
    assert to_preston_blair({}) == {"X": 1.0}
    with pytest.raises(KeyError, match="unknown viseme class 'Foo'"):
        to_oculus({"Foo": 0.5})
