"""Lip sync of the live renderer's output, measured like ``lipcore say``'s videos.

For each back end (sprites, mesh; grace_hopper cropped to 512×512, 25 fps), language (English,
German) and kind of timing the speech source gives (phonemes, words with start and end, none:
the audio-only model, and the loudness fallback), ``examples/live_to_mp4.py`` speaks a
sentence through :class:`lipcore.live.LiveRenderer` chunk by chunk and writes its output,
frames and the audio paired with them, to MP4; ``lipcore eval sync``'s measurement (the mouth
re-detected on every decoded frame) compares it with the true phonemes. Bounds (those of
``say``): the mouth not late by more than a frame (+40 ms), at most 60 ms early, every /p b m/
closing.

    .venv/bin/python benchmarks/bench_live_sync.py            # 16 videos (a few minutes)
    .venv/bin/python benchmarks/bench_live_sync.py --quick    # 1 video
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _report
from bench_live import build

REPO = Path(__file__).resolve().parents[1]
SENTENCES = {
    "en-us": "Maybe the people on the boat bring more apples.",
    "de": "Mama und Papa bauen am Meer ein Boot.",
}


def example() -> Any:
    spec = importlib.util.spec_from_file_location("live_to_mp4", REPO / "examples/live_to_mp4.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one video")
    args = ap.parse_args()
    from lipcore.engine import Engine
    from lipcore.evaluation import (
        evaluate_sync,
        load_timings,
        measure_apertures,
        phonemes_from_timings,
    )

    engine = Engine()
    ex = example()
    kinds = ("sprites",) if args.quick else ("sprites", "mesh")
    voices = ("en-us",) if args.quick else ("en-us", "de")
    timings = ("words",) if args.quick else ("phonemes", "words", "none", "energy")
    from lipcore.live import EnergyVisemeEstimator
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            avatar = build(kind, Path(tmp))
            for voice in voices:
                for how in timings:
                    out = Path(tmp) / f"{kind}-{voice}-{how}.mp4"
                    estimator = EnergyVisemeEstimator() if how == "energy" else None
                    asyncio.run(
                        ex.render_live_mp4(
                            avatar, SENTENCES[voice], out, voice=voice,
                            timings="none" if how == "energy" else how, engine=engine,
                            estimator=estimator,
                        )
                    )
                    data = load_timings(out.with_suffix(".timings.json"))
                    track = engine.mapper().track_from_phonemes(
                        phonemes_from_timings(data), language=data["language"]
                    )
                    report, _, _ = evaluate_sync(
                        measure_apertures(out),
                        track,
                        fps=data["fps"],
                        audio_offset_ms=data["audio_offset_ms"],
                    )
                    ok = (
                        -60.0 <= report.offset_ms <= 40.0
                        and report.closure_rate == 1.0
                        and report.frames_with_face == report.frames
                    )
                    rows.append(
                        [
                            kind,
                            voice,
                            how,
                            f"{report.offset_ms:+.1f}",
                            f"{report.bilabials_closed}/{report.bilabials}",
                            f"{report.open_vowel_aperture:.3f}",
                            f"{report.peak_correlation:.2f}",
                            "✅" if ok else "❌",
                        ]
                    )
                    print(rows[-1], flush=True)
    body = (
        "The live renderer's output written to MP4 and measured like `lipcore say`'s videos "
        "(bounds: −60 ≤ offset ≤ +40 ms, every /p b m/ closed). `words`: word spans only "
        "(as LiveKit TTS plugins send them), through the mapper's G2P; `none`: no timings, "
        "the engine's audio-only estimator (the shipped model, the default); `energy`: no "
        "timings, the loudness fallback (`EnergyVisemeEstimator`, used where no estimator is "
        "installed), side by side.\n\n"
        + _report.table(
            [
                "back end",
                "voice",
                "timings",
                "offset ms",
                "/p b m/ closed",
                "open-vowel ap.",
                "r",
                "in bounds",
            ],
            rows,
        )
        + "\n"
    )
    _report.write("live_sync", "Live renderer lip sync (lipcore.live → MP4 → eval sync)", body)


if __name__ == "__main__":
    main()
