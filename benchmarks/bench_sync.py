"""Lip-sync quality, measured on rendered videos: both back ends × German and English.

For each photo (matplotlib's ``grace_hopper.jpg``; ``skimage.data.astronaut()``, a smiling
mouth with teeth showing) an avatar is built per back end (sprites, mesh; 3 s idle loop at
25 fps). Every sentence is spoken by the offline espeak-ng voice and rendered with
:func:`lipcore.render.render_talk` into an H.264/AAC MP4; :mod:`lipcore.evaluation` then
re-detects the face with MediaPipe on every decoded frame and compares the mouth's aperture
with the phoneme timeline, exactly as ``lipcore eval sync`` does:

* offset (ms; positive = mouth late) — target: never late by more than one frame (40 ms),
  never early by more than 60 ms;
* bilabial closure rate (share of /p b m/ whose lips close within ±1 frame) — target ≥ 90 %;
* open-vowel aperture (inner-lip gap / mouth width at AI and O; the closed photo mouth
  measures ~0.004), reported, with the rest aperture beside it.

The full run also writes one plot per back end (aperture vs. expected openness) to
``docs/img/sync-<backend>.png``.

    .venv/bin/python benchmarks/bench_sync.py            # full: 2 photos × 2 back ends × 6
    .venv/bin/python benchmarks/bench_sync.py --quick    # smoke run: grace, one sentence each
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _report

REPO = Path(__file__).resolve().parent.parent
IMG = REPO / "docs" / "img"
BACKENDS = ("sprites", "mesh")
FPS = 25.0

#: Several bilabials in every sentence; the first of each language is the test suite's.
SENTENCES: dict[str, list[str]] = {
    "de": [
        "Mama und Papa bauen am Meer ein Boot.",
        "Bitte bring mir morgen die blaue Mappe mit.",
        "Im Sommer baden wir oft am Meer bei Bremen.",
    ],
    "en-us": [
        "My mother bought a big blue map.",
        "Bob paid for the lamp by the pump.",
        "Maybe we can swim in the bay tomorrow morning.",
    ],
}

LATE_MS = 1000.0 / FPS  # one frame
EARLY_MS = 60.0
CLOSURE = 0.9


@dataclass
class Row:
    photo: str
    backend: str
    voice: str
    text: str
    frames: int
    offset_ms: float
    closed: int
    bilabials: int
    open_vowel: float
    rest: float
    r: float
    seconds: float

    @property
    def offset_ok(self) -> bool:
        return -EARLY_MS <= self.offset_ms <= LATE_MS

    @property
    def closure_rate(self) -> float:
        return self.closed / self.bilabials if self.bilabials else math.nan

    @property
    def closure_ok(self) -> bool:
        return not self.bilabials or self.closure_rate >= CLOSURE


def _photos(quick: bool, tmp: Path) -> dict[str, Path]:
    import matplotlib.cbook

    grace = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    photos = {"grace_hopper": Path(grace)}
    if not quick:
        from PIL import Image
        from skimage import data

        path = tmp / "astronaut.png"
        Image.fromarray(np.asarray(data.astronaut())).save(path)  # type: ignore[no-untyped-call]
        photos["astronaut"] = path
    return photos


def run(quick: bool, plots: bool) -> list[Row]:
    from lipcore.avatar.face import FaceAnalyzer
    from lipcore.avatar.store import build_avatar
    from lipcore.engine import Engine
    from lipcore.evaluation import (
        evaluate_sync,
        load_timings,
        measure_apertures,
        phonemes_from_timings,
        plot_sync,
    )
    from lipcore.render import render_talk

    engine = Engine()
    analyzer = FaceAnalyzer()
    rows: list[Row] = []
    sentences = {v: s[:1] for v, s in SENTENCES.items()} if quick else SENTENCES
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp_name:
            tmp = Path(tmp_name)
            for photo, path in _photos(quick, tmp).items():
                for backend in BACKENDS:
                    avatar = build_avatar(
                        path,
                        tmp / f"{photo}-{backend}",
                        backend=backend,
                        seconds=3.0,
                        fps=FPS,
                        engine=engine,
                        avatar_id=f"{photo.replace('_', '-')}-{backend}",
                        analyzer=analyzer,
                    )
                    for voice, texts in sentences.items():
                        for i, text in enumerate(texts):
                            t0 = time.perf_counter()
                            out = tmp / f"{photo}-{backend}-{voice}-{i}.mp4"
                            result = render_talk(avatar, text, out, engine=engine, voice=voice)
                            data = load_timings(result.timings)
                            track = engine.mapper().track_from_phonemes(
                                phonemes_from_timings(data), language=data["language"]
                            )
                            apertures = measure_apertures(result.video, analyzer=analyzer)
                            report, times, expected = evaluate_sync(
                                apertures,
                                track,
                                fps=float(data["fps"]),
                                audio_offset_ms=float(data["audio_offset_ms"]),
                            )
                            row = Row(
                                photo=photo,
                                backend=backend,
                                voice=voice,
                                text=text,
                                frames=report.frames,
                                offset_ms=report.offset_ms,
                                closed=report.bilabials_closed,
                                bilabials=report.bilabials,
                                open_vowel=report.open_vowel_aperture,
                                rest=report.rest_aperture,
                                r=report.peak_correlation,
                                seconds=time.perf_counter() - t0,
                            )
                            rows.append(row)
                            print(
                                f"{photo:12s} {backend:7s} {voice:5s}"
                                f"  offset {row.offset_ms:+6.1f} ms"
                                f"  closure {row.closed}/{row.bilabials}"
                                f"  open {row.open_vowel:.3f}  r {row.r:.2f}"
                                f"  ({row.seconds:.1f} s)  {text}",
                                flush=True,
                            )
                            if plots and photo == "grace_hopper" and voice == "de" and i == 0:
                                IMG.mkdir(parents=True, exist_ok=True)
                                plot_sync(
                                    IMG / f"sync-{backend}.png",
                                    times,
                                    apertures,
                                    expected,
                                    track,
                                    report,
                                    title=f"{backend} · grace_hopper · de · “{text}”",
                                )
    finally:
        analyzer.close()
    return rows


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def body(rows: list[Row], quick: bool) -> str:
    detail = _report.table(
        ["photo", "back end", "lang", "sentence", "frames", "offset ms", "closure",
         "open-vowel ap.", "rest ap.", "r", "targets"],
        [
            [
                r.photo, r.backend, r.voice, r.text, r.frames, f"{r.offset_ms:+.1f}",
                f"{r.closed}/{r.bilabials}", f"{r.open_vowel:.3f}", f"{r.rest:.3f}",
                f"{r.r:.2f}", _mark(r.offset_ok and r.closure_ok),
            ]
            for r in rows
        ],
    )  # fmt: skip
    groups: list[list[object]] = []
    all_ok = True
    for backend in BACKENDS:
        for voice in SENTENCES:
            sel = [r for r in rows if r.backend == backend and r.voice == voice]
            if not sel:
                continue
            early = min(r.offset_ms for r in sel)
            late = max(r.offset_ms for r in sel)
            closed = sum(r.closed for r in sel)
            total = sum(r.bilabials for r in sel)
            rate = closed / total if total else math.nan
            offset_ok = all(r.offset_ok for r in sel)
            closure_ok = all(r.closure_ok for r in sel)
            all_ok &= offset_ok and closure_ok
            groups.append(
                [
                    backend, voice, len(sel), f"{early:+.1f} … {late:+.1f}",
                    _mark(offset_ok), f"{rate:.0%} ({closed}/{total})", _mark(closure_ok),
                    f"{np.mean([r.open_vowel for r in sel]):.3f}",
                ]
            )  # fmt: skip
    summary = _report.table(
        ["back end", "lang", "videos", "offset ms (min … max)",
         f"−{EARLY_MS:.0f} ≤ offset ≤ +{LATE_MS:.0f}", "closure rate", "≥ 90 % (every video)",
         "open-vowel ap. (mean)"],
        groups,
    )  # fmt: skip
    offsets = [r.offset_ms for r in rows]
    opens = [r.open_vowel for r in rows]
    rest_text = " and ".join(
        f"{float(np.median([r.rest for r in rows if r.photo == photo])):.3f} ({photo})"
        for photo in dict.fromkeys(r.photo for r in rows)
    )
    verdict = "Every video meets both targets" if all_ok else "Not every video meets the targets"
    text = (
        f"{'Smoke run (--quick): grace_hopper only, one sentence per language. ' if quick else ''}"
        "Targets (issue 4): the mouth is never late by more than one frame "
        f"(+{LATE_MS:.0f} ms at {FPS:g} fps) nor early by more than {EARLY_MS:.0f} ms, and at "
        "least 90 % of /p b m/ close (aperture < 0.05 within ±1 frame), in every video.\n\n"
        + summary
        + "\n\n"
        + detail
        + "\n\n"
        + f"{verdict}. Offsets range {min(offsets):+.1f} … {max(offsets):+.1f} ms: the mouth "
        "runs slightly early, as designed (the engine leads the audio by 20 ms; ITU-R BT.1359 "
        "finds a late mouth far more objectionable than an early one). Open vowels open the "
        f"mouth to an aperture of {min(opens):.2f}–{max(opens):.2f} (per video) against "
        f"{rest_text} at rest, so the closure rate is not met by a mouth that simply never "
        "opens. The offset is a cross-correlation of "
        "measured aperture with expected openness, resolved to sub-frame by parabolic "
        "interpolation, so single values carry a few ms of noise."
    )
    if not quick:
        text += (
            "\n\nPlots (aperture vs. expected openness, grace_hopper, German): "
            "`docs/img/sync-sprites.png`, `docs/img/sync-mesh.png`."
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="grace_hopper, one sentence each")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = run(args.quick, plots=not args.quick)
    if args.json:
        payload: list[dict[str, Any]] = [dict(vars(r)) for r in rows]
        print(json.dumps(payload, indent=1, ensure_ascii=False))
    print(f"total {time.perf_counter() - t0:.0f} s")
    title = "Lip-sync quality (measured on rendered videos)"
    if args.quick:
        # A smoke run never replaces the full result that docs/benchmarks.md is built from.
        print(_report.header(title) + "\n" + body(rows, quick=True))
        return
    _report.write("sync_quality", title, body(rows, quick=False))


if __name__ == "__main__":
    main()
