"""Avatarize speed: a 1024×1024 photo → a complete avatar (4 s, 25 fps idle loop), by stage.

The photo is matplotlib's ``grace_hopper.jpg`` scaled to 1024 px high and padded (edge pixels)
to 1024×1024. Each run builds a fresh avatar directory in one process; the first run also pays
for creating the face landmarker, later runs reuse nothing but the warm imports. The load
average is printed because on a shared machine it changes the wall times a lot.

    .venv/bin/python benchmarks/bench_avatarize.py                     # sprites, 3 runs
    .venv/bin/python benchmarks/bench_avatarize.py --backend mesh --runs 5
    .venv/bin/python benchmarks/bench_avatarize.py --json              # machine-readable
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


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


def run(backend: str, runs: int, seconds: float, fps: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    from lipcore.avatar.store import STAGES, build_avatar

    import_s = time.perf_counter() - t0
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-avatarize-") as tmp:
        photo = make_photo(Path(tmp) / "photo1024.jpg")
        for i in range(runs):
            load = os.getloadavg()[0]
            cpu0, t1 = time.process_time(), time.perf_counter()
            avatar = build_avatar(
                photo, Path(tmp) / f"avatar{i}", backend=backend, seconds=seconds, fps=fps
            )
            wall = time.perf_counter() - t1
            cpu = time.process_time() - cpu0
            stages = dict(avatar.build_seconds or {})
            results.append({"wall_s": wall, "cpu_s": cpu, "load_before": load, "stages": stages})
            print(
                f"run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU, load {load:.1f}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()),
                flush=True,
            )
    return {
        "backend": backend,
        "photo": "grace_hopper.jpg scaled+padded to 1024x1024",
        "idle": {"seconds": seconds, "fps": fps},
        "import_s": import_s,
        "runs": results,
        "stage_order": list(STAGES),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    lines = [
        f"Backend `{report['backend']}`, {report['photo']}, idle loop "
        f"{report['idle']['seconds']:g} s @ {report['idle']['fps']:g} fps; "
        f"{report['machine']}; {report['date']}.",
        "",
        "Seconds, wall (CPU of the process, all threads, in brackets).",
        "",
        "| stage | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |",
        "|---|" + "---:|" * (len(runs) + 1),
    ]
    for stage in report["stage_order"]:
        vals = [r["stages"].get(stage, 0.0) for r in runs]
        cpu = [r["stages_cpu"].get(stage, 0.0) for r in runs]
        cells = " | ".join(f"{v:.2f} ({c:.2f})" for v, c in zip(vals, cpu, strict=True))
        lines.append(
            f"| {stage} | {cells} | {statistics.median(vals):.2f} ({statistics.median(cpu):.2f}) |"
        )
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    loads = [r["load_before"] for r in runs]
    lines.append(
        "| **total (wall)** | "
        + " | ".join(f"**{v:.2f}**" for v in walls)
        + f" | **{statistics.median(walls):.2f}** |"
    )
    lines.append(
        "| process CPU | "
        + " | ".join(f"{v:.2f}" for v in cpus)
        + f" | {statistics.median(cpus):.2f} |"
    )
    lines.append("| load avg before | " + " | ".join(f"{v:.1f}" for v in loads) + " | |")
    lines.append("")
    lines.append(f"Importing lipcore.avatar.store: {report['import_s']:.2f} s (once per process).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sprites")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = run(args.backend, args.runs, args.seconds, args.fps)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()
