"""Labelled speech made on the spot: espeak-ng audio with its exact phoneme times, framed
into viseme-class labels every 10 ms. The training recipe of the audio viseme model
(``scripts/train_audio_visemes.py``) and its benchmark (``benchmarks/bench_audio_visemes.py``)
share it, so the benchmark's ground truth is made exactly like the training labels."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lipcore.interfaces import PhonemeTiming, VisemeSegment
from lipcore.speech import _espeak
from lipcore.speech.visemes import VISEME_CLASSES

__all__ = [
    "BENCH_SENTENCES",
    "TRAIN_SENTENCES",
    "Labelled",
    "frame_labels",
    "random_text",
    "synthesize",
]

#: Training sentences (German and English); the benchmark uses BENCH_SENTENCES, never these.
TRAIN_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Please bring me a cup of warm milk before bedtime.",
        "My mother baked a big apple pie for the family picnic.",
        "We should meet at the museum at about five in the morning.",
        "Peter Piper picked a peck of pickled peppers.",
        "Would you like some bread, butter and maybe jam?",
        "The weather forecast promised a bright and sunny week.",
        "Thank you very much for the beautiful flowers.",
        "She sells sea shells by the sea shore every summer.",
        "Bob may buy a boat on Monday, but probably not.",
        "Which way is the shortest path through the thick forest?",
        "A little bit of patience will help you a lot.",
        "I think that the phone is ringing in the other room.",
        "Over the mountains the moon rose above the empty valley.",
        "Remember to switch off the lights when you leave.",
        "The big black bug bit the big black bear.",
        "Good morning, how was your flight from Boston?",
        "Lunch is ready, please come to the table.",
        "Numbers like seven, nine and ninety are easy.",
        "Jump, bump, pump, thump: the drums went on and on.",
    ),
    "de": (
        "Der Bäcker backt jeden Morgen frisches Brot.",
        "Meine Mutter möchte am Montag nach Bremen fahren.",
        "Bitte bring mir ein Glas Wasser und etwas Obst.",
        "Im Sommer baden wir oft im blauen Meer.",
        "Peter packt seinen Koffer für die lange Reise.",
        "Wie viel kostet die Bahnfahrt nach München?",
        "Wir treffen uns um acht Uhr am Marktplatz.",
        "Das Wetter wird morgen warm und sonnig.",
        "Fischers Fritz fischt frische Fische.",
        "Zwischen zwei Zwetschgenzweigen sitzen zwei Schwalben.",
        "Mein Opa baut ein Vogelhaus aus Buchenholz.",
        "Die Bibliothek schließt heute schon um fünf.",
        "Am Abend hören wir gemeinsam Musik.",
        "Brauchst du Hilfe beim Umzug am Wochenende?",
        "Ein paar Minuten Pause tun uns allen gut.",
        "Blaukraut bleibt Blaukraut und Brautkleid bleibt Brautkleid.",
        "Der Hund bellt laut, wenn der Postbote kommt.",
        "Schöne Grüße aus Berlin und bis bald!",
        "Ich habe keine Ahnung, wo mein Schlüssel ist.",
        "Mama macht Marmelade aus Pflaumen und Birnen.",
    ),
}

#: Held-out sentences for the benchmark (rich in /p b m/, with pauses).
BENCH_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "Maybe the map is in my backpack, Paul.",
        "Bring plenty of paper and pens to the meeting, please.",
        "Tom bought a bamboo lamp, but it broke.",
        "I promise to be back by the time the band begins.",
        "Emma, put the pot on the stove. Then wait a moment.",
    ),
    "de": (
        "Bitte bleib beim Baum, bis Papa kommt.",
        "Mein Mantel ist mir im Bus zu warm geworden.",
        "Am Mittwoch besuchen wir die Oma im Pflegeheim.",
        "Paul probiert die Pilze, aber sie schmecken bitter.",
        "Komm mal her, Max. Wir bauen ein Boot.",
    ),
}

_SYLLABLES = (
    "ba", "pa", "ma", "be", "pe", "mi", "bo", "pu", "mu", "fa", "va", "fi", "vo", "la", "li",
    "lo", "ra", "ro", "ru", "sa", "si", "so", "sha", "che", "ta", "te", "to", "da", "di", "na",
    "ne", "no", "ka", "ki", "ko", "ga", "go", "ha", "he", "wa", "we", "ya", "yo", "za", "tha",
    "an", "en", "in", "on", "am", "em", "om", "ap", "ep", "ip", "ab", "ob", "ar", "er", "al",
    "el", "ol", "as", "is", "us", "af", "uf", "ath", "ish", "ang",
)  # fmt: skip


def random_text(rng: random.Random, words: int) -> str:
    """Pseudo-words from common syllables, with commas and full stops for pauses; each
    language's letter-to-sound rules make its own phonemes of them."""
    out = []
    for i in range(words):
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
        out.append(w + ("," if rng.random() < 0.12 else ".") if i and rng.random() < 0.2 else w)
    return " ".join(out).rstrip(",.") + "."


@dataclass(frozen=True)
class Labelled:
    """One synthesized utterance with its ground truth."""

    pcm: npt.NDArray[np.int16]
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...]
    language: str


def synthesize(
    text: str, voice: str, *, rate: int = 175, pitch: int = 50, language: str | None = None
) -> Labelled:
    """espeak-ng speech for ``text`` with its phoneme times (synchronously, no event loop)."""
    from lipcore.default_plugins.espeak import _speakable, _Timeline

    lib = _espeak.get_library()
    audio: list[bytes] = []
    phonemes: list[PhonemeTiming] = []
    with _espeak.LOCK:
        lib.set_voice(voice)
        lib.set_parameters(rate=rate, pitch=pitch, volume=100, pitch_range=50)
        timeline = _Timeline(lib.sample_rate)
        spoken = _speakable(text)
        timeline.begin_piece(spoken)

        def on_audio(buf: bytes, events: list[_espeak.EspeakEvent]) -> bool:
            chunk = timeline.buffer(buf, events)
            if chunk is not None:
                audio.append(chunk.audio)
                phonemes.extend(chunk.phonemes)
            return True

        lib.synth(spoken, on_audio)
        phonemes.extend(timeline.end_piece())
    pcm = np.frombuffer(b"".join(audio), dtype="<i2").copy()
    lang = language or voice.split("+")[0]
    return Labelled(pcm, lib.sample_rate, tuple(phonemes), lang)


def synthesize_flite(text: str, voice: str, workdir: Path) -> Labelled:
    """flite's speech for ``text`` (another synthesizer, other acoustics: English only) with
    its own segment times (``-psdur``: each segment's end), ARPAbet mapped to IPA. Needs the
    ``flite`` program (``scripts/setup.sh --dev`` installs it); ``FileNotFoundError`` without
    it. The WAV is written into ``workdir``."""
    import shutil
    import subprocess
    import wave

    from lipcore.speech.phone_align import ARPABET

    exe = shutil.which("flite")
    if exe is None:
        raise FileNotFoundError("flite is not installed (scripts/setup.sh --dev installs it)")
    wav = workdir / f"flite-{voice}-{abs(hash(text)):x}.wav"
    out = subprocess.run(
        [exe, "-voice", voice, "-psdur", "-t", text, "-o", str(wav)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    phonemes, start = [], 0.0
    for seg in out.split():
        name, end_s = seg.rsplit(":", 1)
        end = float(end_s) * 1000.0
        if name != "pau":
            phonemes.append(PhonemeTiming(ARPABET[name], start, end))
        start = end
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    return Labelled(pcm, rate, tuple(phonemes), "en-us")


def frame_labels(
    track: Sequence[VisemeSegment], frames: int, hop_ms: float = 10.0
) -> npt.NDArray[np.int64]:
    """The viseme class at each frame time ``i * hop_ms`` (Rest outside every segment)."""
    labels = np.zeros(frames, dtype=np.int64)
    t = np.arange(frames) * hop_ms
    for seg in track:
        sel = (t >= seg.start_ms) & (t < seg.end_ms)
        labels[sel] = VISEME_CLASSES.index(seg.viseme)
    return labels
