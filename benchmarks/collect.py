"""Assemble ``docs/benchmarks.md`` from ``benchmarks/results/*.md``.

Each section of the page lists the result files that belong to it (by name prefix), in order.
Run after the benchmark scripts: ``.venv/bin/python benchmarks/collect.py``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INTRO = ROOT / "benchmarks" / "intro.md"

SECTIONS: list[tuple[str, str]] = [
    ("Speech and viseme mapping", "speech"),
    ("Avatarize (photo → avatar)", "avatarize"),
    ("Rendering (sprites, mesh) and offline `say`", "render"),
    ("Lip-sync quality", "sync"),
    ("Realtime server", "server"),
    ("ElevenLabs path", "elevenlabs"),
    ("Wav2Lip (variant C)", "wav2lip"),
    ("Browser client", "browser"),
    ("Live video (lipcore.live, LiveKit)", "live"),
    ("Pipecat (serializer path, video path)", "pipecat"),
    ("Several workers: HAProxy, object storage", "cluster"),
]


def main() -> None:
    parts = [INTRO.read_text(encoding="utf-8").strip(), ""]
    for title, prefix in SECTIONS:
        parts.append(f"## {title}\n")
        files = sorted(RESULTS.glob(f"{prefix}*.md"))
        if not files:
            parts.append("_Not measured yet._\n")
        for f in files:
            parts.append(f.read_text(encoding="utf-8").strip() + "\n")
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
