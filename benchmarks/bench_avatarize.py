"""Avatarize speed: a 1024×1024 photo → a complete avatar (4 s, 25 fps idle loop), by stage,
for both geometric back ends (``sprites`` and ``mesh``). Target (issue 3): < 10 s on the
2-core development machine.

The photo is matplotlib's ``grace_hopper.jpg`` scaled to 1024 px high and padded (edge pixels)
to 1024×1024. Every run builds a fresh avatar directory in one process; the first run of the
process also pays for creating the face landmarker (counted in its ``face`` stage), later runs
reuse nothing but the warm imports. Wall and process CPU seconds (all threads) per stage.

    .venv/bin/python benchmarks/bench_avatarize.py            # both back ends, 3 runs each
    .venv/bin/python benchmarks/bench_avatarize.py --quick    # smoke run: 1 run, 3 s loop
    .venv/bin/python benchmarks/bench_avatarize.py --backend mesh --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _report

TARGET_S = 10.0


def make_photo(path: Path, size: int = 1024) -> Path:
    """grace_hopper scaled to ``size`` px high, edge-padded to a ``size``×``size`` JPEG."""
    import matplotlib.cbook
    from PIL import Image

    src = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    w = round(src.width * size / src.height)
    scaled = np.asarray(src.convert("RGB").resize((w, size), Image.Resampling.LANCZOS))
    left = (size - w) // 2
    padded = np.pad(scaled, ((0, 0), (left, size - w - left), (0, 0)), mode="edge")
    Image.fromarray(padded).save(path, quality=95)
    return path


def run(backend: str, runs: int, seconds: float, fps: float, tmp: Path) -> list[dict[str, Any]]:
    from lipcore.avatar.store import build_avatar

    photo = tmp / "photo1024.jpg"
    if not photo.exists():
        make_photo(photo)
    results: list[dict[str, Any]] = []
    for i in range(runs):
        load = os.getloadavg()[0]
        cpu0, t1 = time.process_time(), time.perf_counter()
        avatar = build_avatar(
            photo, tmp / f"{backend}{i}", backend=backend, seconds=seconds, fps=fps
        )
        wall = time.perf_counter() - t1
        cpu = time.process_time() - cpu0
        results.append(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "load_before": load,
                "stages": dict(avatar.build_seconds or {}),
                "stages_cpu": dict(avatar.build_cpu_seconds or {}),
            }
        )
        print(
            f"{backend} run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU, load {load:.1f}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in results[-1]["stages"].items()),
            flush=True,
        )
    return results


def stage_table(runs: list[dict[str, Any]], stage_order: list[str]) -> str:
    headers = ["stage", *[f"run {i + 1}" for i in range(len(runs))], "median", "share"]
    total_med = statistics.median(r["wall_s"] for r in runs)
    rows: list[list[object]] = []
    for stage in stage_order:
        vals = [r["stages"].get(stage, 0.0) for r in runs]
        cpu = [r["stages_cpu"].get(stage, 0.0) for r in runs]
        med = statistics.median(vals)
        rows.append(
            [
                stage,
                *[f"{v:.2f} ({c:.2f})" for v, c in zip(vals, cpu, strict=True)],
                f"{med:.2f} ({statistics.median(cpu):.2f})",
                f"{100 * med / total_med:.0f} %",
            ]
        )
    walls = [r["wall_s"] for r in runs]
    rows.append(
        [
            "**total**",
            *[f"**{w:.2f}** ({r['cpu_s']:.2f})" for w, r in zip(walls, runs, strict=True)],
            f"**{total_med:.2f}**",
            "",
        ]
    )
    rows.append(["load avg before", *[f"{r['load_before']:.1f}" for r in runs], "", ""])
    return _report.table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sprites", "mesh", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true", help="one run, 3 s loop (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 3.0
    backends = ["sprites", "mesh"] if args.backend == "both" else [args.backend]

    t0 = time.perf_counter()
    from lipcore.avatar.store import STAGES

    import_s = time.perf_counter() - t0
    parts: list[str] = []
    verdicts: list[str] = []
    dominant: dict[str, tuple[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-avatarize-") as tmp:
        for backend in backends:
            runs = run(backend, args.runs, args.seconds, args.fps, Path(tmp))
            # The first run of the process also creates the face landmarker: judge the target
            # on the warm runs when there are any, and show the cold one.
            warm = runs[1:] or runs
            med = statistics.median(r["wall_s"] for r in warm)
            cpu = statistics.median(r["cpu_s"] for r in warm)
            ok = med < TARGET_S
            verdicts.append(
                f"- `{backend}`: median {med:.2f} s wall (process CPU {cpu:.2f} s) — "
                f"{'✅' if ok else '❌'} target < {TARGET_S:g} s"
                + ("" if len(runs) == 1 else f"; first (cold) run {runs[0]['wall_s']:.2f} s")
                + (
                    f". The build only waits on the CPU, so on an idle machine its wall time is "
                    f"at most its CPU time: {cpu:.2f} s "
                    f"{'✅' if cpu < TARGET_S else '❌'} (this run's wall time is "
                    f"{med / cpu:.1f}× its CPU time: other work shared the cores)"
                    if med > 1.2 * cpu
                    else ""
                )
            )
            stage_med = {
                s: statistics.median(r["stages"].get(s, 0.0) for r in warm) for s in STAGES
            }
            top = max(stage_med, key=lambda s: stage_med[s])
            dominant[backend] = (top, stage_med[top] / med)
            parts += [
                f"**{backend}** — seconds wall (process CPU, all threads):",
                "",
                stage_table(runs, list(STAGES)),
                "",
            ]
    body = "\n".join(
        [
            f"1024×1024 photo (grace_hopper.jpg scaled and edge-padded), idle loop "
            f"{args.seconds:g} s @ {args.fps:g} fps, {args.runs} run(s) per back end in one "
            f"process; `import lipcore.avatar.store` took {import_s:.2f} s once.",
            "",
            *verdicts,
            "",
            *parts,
            "Largest stage: "
            + "; ".join(
                f"`{b}` {s} ({100 * f:.0f} % of the wall time)" for b, (s, f) in dominant.items()
            )
            + ". Process CPU above wall means a stage used both cores; a loaded machine "
            "stretches wall times, so compare the CPU figures across runs.",
        ]
    )
    _report.write("avatarize", "Avatarize: photo → avatar", body)


if __name__ == "__main__":
    main()
