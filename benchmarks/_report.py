"""Shared by the benchmark scripts: the machine a result was measured on, and one place to put
each result so ``benchmarks/collect.py`` can assemble ``docs/benchmarks.md``.

Every script writes ``benchmarks/results/<name>.md``: a markdown body (tables, notes) headed by
the machine, date and command line. Nothing here measures anything itself.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU model, logical cores, memory, OS, Python."""
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024**2:.0f} GiB RAM"
    except OSError:
        pass
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical cores{mem}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def header(title: str) -> str:
    """The lines that open every result: what ran, where, when, and the load it ran under."""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cmd = " ".join(["python", *[Path(sys.argv[0]).as_posix().split("/main/")[-1], *sys.argv[1:]]])
    return (
        f"### {title}\n\n"
        f"- Machine: {machine()}; no GPU\n"
        f"- Date: {now}; load average before the run: {load:.2f}\n"
        f"- Command: `{cmd}`\n"
    )


def write(name: str, title: str, body: str) -> Path:
    """Write ``results/<name>.md`` (header + body; ``results/quick/`` for a ``--quick`` run) and
    echo it to stdout."""
    # A --quick smoke run never replaces a measured result: it goes to results/quick/ (ignored
    # by git and by collect.py).
    folder = RESULTS / "quick" if "--quick" in sys.argv else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    text = header(title) + "\n" + body.strip() + "\n"
    path = folder / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    print(text)
    return path


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats get 2 decimals unless already strings."""

    def cell(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)
