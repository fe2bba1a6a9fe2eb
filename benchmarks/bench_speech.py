"""Speech path speed: espeak-ng synthesis, viseme mapping, and both together, for ~10 s of
German and US English speech, on one pinned CPU core.

* **Synthesis** (the built-in ``espeak`` source, streamed): real-time factor (wall time /
  audio time) and time to the first audio chunk.
* **Synthesis + mapping** (``Engine.utterance``, what a live session runs): the same, with
  viseme frames coming out as the chunks arrive.
* **Mapping alone**, replaying the recorded chunks through the live ``VisemeStream`` (push per
  chunk, then finish), normalised to 10 s of speech. Two input forms: *phonemes* (espeak's
  timings) and *characters* (ElevenLabs-style timings: every word goes through espeak's
  grapheme → phoneme translation; *cold* with an empty G2P cache, *warm* with the words seen
  before). Target (issue 2): mapping < 5 ms per 10 s of speech on one core.

    .venv/bin/python benchmarks/bench_speech.py           # full run (~1 min)
    .venv/bin/python benchmarks/bench_speech.py --quick   # smoke run (seconds)
"""

from __future__ import annotations

import os

# One core, one thread: set before numpy is imported so its BLAS starts single-threaded.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import _report  # noqa: E402

from lipcore.default_plugins.espeak import EspeakSource  # noqa: E402
from lipcore.default_plugins.mapper import DefaultVisemeMapper, g2p_word  # noqa: E402
from lipcore.engine import Engine  # noqa: E402
from lipcore.interfaces import CharTiming, PhonemeTiming, TTSChunk  # noqa: E402

TEXTS = {
    "de": (
        "Guten Morgen! Ich bin Ihre Assistentin und helfe Ihnen gern bei Ihren Fragen. "
        "Heute scheint die Sonne, und am Nachmittag wird es warm. Möchten Sie wissen, "
        "welche Termine morgen anstehen?"
    ),
    "en-us": (
        "Good morning! I am your assistant, and I am happy to help with your questions. "
        "The sun is shining today, and it will be warm this afternoon. Would you like to "
        "hear which meetings are planned for tomorrow?"
    ),
}
FPS = 30.0  # the engine's default frame rate
MAPPING_TARGET_MS = 5.0


def pin_one_core() -> str:
    """Pin the process (and the espeak worker threads it starts) to its last allowed core."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def stats(values: list[float]) -> tuple[float, float]:
    """Median and 95th percentile."""
    return float(np.median(values)), float(np.percentile(values, 95))


# ------------------------------------------------------------------------------ synthesis


@dataclass
class Synthesis:
    audio_ms: float
    wall_ms: float
    first_chunk_ms: float
    chunks: list[TTSChunk]

    @property
    def rtf(self) -> float:
        return self.wall_ms / self.audio_ms


async def synthesize(source: EspeakSource, text: str, voice: str) -> Synthesis:
    chunks: list[TTSChunk] = []
    t0 = time.perf_counter()
    first = 0.0
    async for chunk in source.synthesize(text, voice=voice):
        if not chunks:
            first = time.perf_counter() - t0
        chunks.append(chunk)
    wall = time.perf_counter() - t0
    return Synthesis(max(c.end_ms for c in chunks), wall * 1000, first * 1000, chunks)


async def synthesize_and_map(engine: Engine, text: str, voice: str) -> tuple[Synthesis, int]:
    """``Engine.utterance``: synthesis with live mapping, as a session runs it."""
    utt = await engine.utterance(text, voice=voice, fps=FPS)
    t0 = time.perf_counter()
    first = 0.0
    chunks: list[TTSChunk] = []
    frames = 0
    async for step in utt:
        if not chunks:
            first = time.perf_counter() - t0  # the first chunk *with* its frames
        chunks.append(step.chunk)
        frames += len(step.frames)
    wall = time.perf_counter() - t0
    return Synthesis(utt.audio_ms, wall * 1000, first * 1000, chunks), frames


# ------------------------------------------------------------------------------ mapping


def char_chunks(text: str, chunks: list[TTSChunk]) -> list[tuple[list[CharTiming], float]]:
    """Character timings for ``text`` spread evenly over the audio, cut at the same chunk
    horizons the phoneme timings came with (the form ElevenLabs' alignment takes)."""
    total = max(c.end_ms for c in chunks)
    step = total / len(text)
    chars = [CharTiming(ch, i * step, (i + 1) * step) for i, ch in enumerate(text)]
    out: list[tuple[list[CharTiming], float]] = []
    i = 0
    for c in chunks:
        batch: list[CharTiming] = []
        while i < len(chars) and chars[i].end_ms <= c.end_ms + 1e-9:
            batch.append(chars[i])
            i += 1
        out.append((batch, c.end_ms))
    return out


Timing = tuple[float, float, int]  # wall ms, CPU ms of this thread, frames


def _timed(work: Callable[[], int]) -> Timing:
    w0, c0 = time.perf_counter(), time.thread_time()
    frames = work()
    return (time.perf_counter() - w0) * 1000, (time.thread_time() - c0) * 1000, frames


def map_phonemes(
    mapper: DefaultVisemeMapper, pushes: list[tuple[tuple[PhonemeTiming, ...], float]], lang: str
) -> Timing:
    """The live path: one ``push`` per TTS chunk, then ``finish``."""

    def work() -> int:
        stream = mapper.stream(language=lang, fps=FPS)
        n = 0
        for phonemes, horizon in pushes:
            n += len(stream.push(phonemes=phonemes, horizon_ms=horizon))
        return n + len(stream.finish(pushes[-1][1]))

    return _timed(work)


def map_chars(
    mapper: DefaultVisemeMapper, pushes: list[tuple[list[CharTiming], float]], lang: str
) -> Timing:
    def work() -> int:
        stream = mapper.stream(language=lang, fps=FPS)
        n = 0
        for chars, horizon in pushes:
            n += len(stream.push(chars=chars, horizon_ms=horizon))
        return n + len(stream.finish(pushes[-1][1]))

    return _timed(work)


def map_whole(
    mapper: DefaultVisemeMapper,
    phonemes: list[PhonemeTiming],
    chars: list[CharTiming],
    lang: str,
    end_ms: float,
) -> Timing:
    """The offline path (``lipcore say``, tests): the whole track at once."""

    def work() -> int:
        if phonemes:
            track = mapper.track_from_phonemes(phonemes, language=lang)
        else:
            track = mapper.track_from_characters(chars, language=lang)
        return len(mapper.sample(track, fps=FPS, end_ms=end_ms))

    return _timed(work)


# ------------------------------------------------------------------------------ main


def interpretation(synth_rows: list[list[object]], worst_mapping: float) -> str:
    rtf = max(float(str(r[3])) for r in synth_rows)
    first = max(float(str(r[5])) for r in synth_rows)
    return (
        f"espeak-ng synthesizes at least {1 / rtf:.0f}× faster than real time and its first "
        f"chunk is out within {first:.0f} ms, so the offline voice adds almost nothing to the "
        f"glass-to-glass budget. Mapping costs at most {worst_mapping:.2f} ms of CPU per 10 s of "
        f"speech ({worst_mapping / 100:.3f} % of a core). The character path's cold run "
        "includes one espeak G2P call per new word (cached, 20 000 words): what a session pays "
        "the first time it hears a word."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    synth_runs, map_runs = (1, 5) if args.quick else (5, 100)
    pinned = pin_one_core()
    print(pinned, flush=True)

    source = EspeakSource()
    engine = Engine()
    mapper = DefaultVisemeMapper()
    t0 = time.perf_counter()
    asyncio.run(synthesize(source, "Hallo.", "de"))  # loads the library, lists the voices
    cold_start_ms = (time.perf_counter() - t0) * 1000

    synth_rows: list[list[object]] = []
    map_rows: list[list[object]] = []
    worst_mapping = 0.0
    for lang, text in TEXTS.items():
        synths = [asyncio.run(synthesize(source, text, lang)) for _ in range(synth_runs)]
        audio_s = synths[0].audio_ms / 1000
        both = [asyncio.run(synthesize_and_map(engine, text, lang)) for _ in range(synth_runs)]
        for label, runs in (("synthesis", synths), ("synthesis + mapping", [b[0] for b in both])):
            rtf = statistics.median(r.rtf for r in runs)
            first = stats([r.first_chunk_ms for r in runs])
            synth_rows.append(
                [lang, label, f"{audio_s:.1f}", f"{rtf:.3f}", f"{1 / rtf:.0f}×", f"{first[0]:.1f}"]
            )
            print(synth_rows[-1], flush=True)

        chunks = synths[0].chunks
        scale = 10.0 / audio_s  # ms per 10 s of speech
        ph_pushes = [(c.phonemes, c.end_ms) for c in chunks]
        ch_pushes = char_chunks(text, chunks)
        all_ph = [p for c in chunks for p in c.phonemes]
        all_ch = [c for batch, _ in ch_pushes for c in batch]
        end_ms = synths[0].audio_ms
        map_phonemes(mapper, ph_pushes, lang)  # warm-up
        cases: list[tuple[str, str, list[Timing], bool]] = []
        cases.append(
            (
                "live stream",
                "phonemes",
                [map_phonemes(mapper, ph_pushes, lang) for _ in range(map_runs)],
                True,
            )
        )
        cold = []
        for _ in range(max(3, map_runs // 10)):
            g2p_word.cache_clear()
            cold.append(map_chars(mapper, ch_pushes, lang))
        cases.append(("live stream", "characters, G2P cold", cold, False))
        cases.append(
            (
                "live stream",
                "characters, G2P warm",
                [map_chars(mapper, ch_pushes, lang) for _ in range(map_runs)],
                True,
            )
        )
        cases.append(
            (
                "whole utterance",
                "phonemes",
                [map_whole(mapper, all_ph, [], lang, end_ms) for _ in range(map_runs)],
                True,
            )
        )
        cases.append(
            (
                "whole utterance",
                "characters, G2P warm",
                [map_whole(mapper, [], all_ch, lang, end_ms) for _ in range(map_runs)],
                True,
            )
        )
        for path, label, runs, judged in cases:
            cpu_med, cpu_p95 = stats([c * scale for _, c, _ in runs])
            wall_med, _wall_p95 = stats([w * scale for w, _, _ in runs])
            frames = runs[0][2]
            if judged:
                worst_mapping = max(worst_mapping, cpu_p95)
            map_rows.append(
                [
                    lang,
                    path,
                    label,
                    f"{cpu_med:.2f}",
                    f"{cpu_p95:.2f}",
                    f"{wall_med:.2f}",
                    f"{cpu_med / scale / frames * 1000:.1f}",
                    frames,
                    ("✅" if cpu_p95 < MAPPING_TARGET_MS else "❌") if judged else "(first use)",
                ]
            )
            print(map_rows[-1], flush=True)

    met = worst_mapping < MAPPING_TARGET_MS
    body = "\n".join(
        [
            f"~10 s utterances (text below), {FPS:g} fps viseme frames, one CPU core ({pinned}; "
            f"numpy/BLAS single-threaded). Synthesis: median of {synth_runs} runs; mapping: "
            f"{map_runs} runs (cold G2P: {max(3, map_runs // 10)}). Process start to the first "
            f"synthesized word (library load, voice list): {cold_start_ms:.0f} ms, once.",
            "",
            "**Synthesis** (built-in espeak-ng source, streamed in ≤ 60 ms chunks)",
            "",
            _report.table(
                [
                    "voice",
                    "path",
                    "audio s",
                    "real-time factor",
                    "faster than real time",
                    "first chunk ms",
                ],
                synth_rows,
            ),
            "",
            f"**Mapping alone**, ms per 10 s of speech: CPU time of the mapping thread (what it "
            f"costs the core, whatever else runs) and wall time. *Live stream*: the session's "
            f"path, one `VisemeStream.push` per ≤ 60 ms TTS chunk, then `finish`; *whole "
            f"utterance*: `track_from_*` + `sample` at once (offline rendering). Target: "
            f"< {MAPPING_TARGET_MS:g} ms per 10 s on one core, judged on the CPU p95 of every "
            f"row but the cold G2P one — {'✅ met' if met else '❌ missed'} (worst p95 "
            f"{worst_mapping:.2f} ms).",
            "",
            _report.table(
                [
                    "voice",
                    "path",
                    "input",
                    "CPU median ms/10 s",
                    "CPU p95 ms/10 s",
                    "wall median ms/10 s",
                    "CPU µs/frame",
                    "frames",
                    "< 5 ms",
                ],
                map_rows,
            ),
            "",
            interpretation(synth_rows, worst_mapping),
            "",
            "Texts: " + " / ".join(f"{k}: “{v}”" for k, v in TEXTS.items()),
        ]
    )
    _report.write("speech", "Speech: synthesis and viseme mapping", body)


if __name__ == "__main__":
    main()
