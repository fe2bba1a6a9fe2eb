"""Live server-rendered video: sessions per CPU core, and memory per avatar and per session.

A 512×512 avatar (matplotlib's ``grace_hopper.jpg`` cropped, 3 s idle loop at 25 fps) is built
per back end. Each session is a :class:`lipcore.live.LiveRenderer` fed real espeak-ng speech
(English, 22.05 kHz chunks with phoneme timings, resampled to 24 kHz) as a TTS would send it,
talking without pause (the worst case), or idle. All sessions run round-robin on **one
thread**, with OpenCV, BLAS and OpenMP limited to one thread: per video frame and session,
the audio chunks due are pushed and one frame is pulled (viseme co-articulation, the mouth
rendered by the back end, conversion to RGBA or I420 of what the mouth changed), and its pixels
are copied into a LiveKit ``rtc.VideoFrame`` when livekit is installed (a bytes copy
otherwise). WebRTC encoding is not included.

Sessions per core = session-seconds of video made / CPU seconds spent (``time.process_time``).
Memory: resident set growth (``/proc/self/statm``) for loading an avatar with its idle frames
converted, and for opening sessions of it and running them.

    .venv/bin/python benchmarks/bench_live.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_live.py --quick    # smoke run (seconds)
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _report

REPO = Path(__file__).resolve().parents[1]
TARGET_SPRITES = 10.0
TEXT = (
    "Good morning! I am your digital assistant, and today I will explain how our new "
    "product works, step by step, with a few examples."
)


def face_model() -> Path:
    env = os.environ.get("LIPCORE_FACE_MODEL")
    return Path(env) if env else REPO.parent / "shared" / "models" / "face_landmarker.task"


def rss() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def build(kind: str, root: Path) -> Any:
    import matplotlib.cbook
    from PIL import Image

    from lipcore.avatar.store import build_avatar

    photo = np.asarray(
        Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert(
            "RGB"
        )
    )
    return build_avatar(
        np.ascontiguousarray(photo[40:552, :512]),
        root / f"grace512-{kind}",
        backend=kind,
        seconds=3.0,
        fps=25.0,
        face_model=face_model(),
        avatar_id=f"grace512-{kind}",
    )


def speech() -> list[Any]:
    from lipcore.engine import Engine

    async def go() -> list[Any]:
        utt = await Engine().utterance(TEXT, voice="en-us")
        return [step.chunk async for step in utt]

    return asyncio.run(go())


def frame_sink() -> Any:
    try:
        from livekit import rtc
    except ImportError:
        return lambda live, f: f.video.tobytes()
    types = {"rgba": rtc.VideoBufferType.RGBA, "i420": rtc.VideoBufferType.I420}

    def sink(live: Any, f: Any) -> Any:
        return rtc.VideoFrame(live.width, live.height, types[live.video_format], f.video.tobytes())

    return sink


class Talker:
    """One session that talks without pause: the utterance's chunks, due at their pts."""

    def __init__(self, live: Any, chunks: list[Any], speaking: bool) -> None:
        self.live = live
        self.chunks = chunks
        self.speaking = speaking
        self.t0 = 0.0  # stream ms where the current utterance started
        self.next = 0

    def tick(self, now_ms: float) -> Any:
        if self.speaking:
            while (
                self.next < len(self.chunks) and self.t0 + self.chunks[self.next].pts_ms <= now_ms
            ):
                c = self.chunks[self.next]
                self.live.push_audio(c.audio, sample_rate=c.sample_rate, phonemes=c.phonemes)
                self.next += 1
            if self.next == len(self.chunks):
                self.live.end_segment()
                self.t0 = now_ms
                self.next = 0
        return self.live.pull()


def run_sessions(
    shared: Any, chunks: list[Any], *, n: int, seconds: float, fmt: str, speaking: bool
) -> dict[str, float]:
    from lipcore.live import LiveRenderer

    sink = frame_sink()
    talkers = [
        Talker(LiveRenderer(shared, sample_rate=24000, video_format=fmt), chunks, speaking)
        for _ in range(n)
    ]
    # Stagger the sessions so they are not all on the same phoneme.
    for i, t in enumerate(talkers):
        t.t0 = -i * 370.0
    frames = round(seconds * 25)
    speech_frames = 0
    gc.collect()
    c0 = time.process_time()
    w0 = time.perf_counter()
    for k in range(frames):
        now = k * 40.0
        for t in talkers:
            f = t.tick(now)
            sink(t.live, f)
            speech_frames += f.audio is not None
    cpu = time.process_time() - c0
    wall = time.perf_counter() - w0
    made = n * seconds
    return {
        "sessions": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "per_frame_ms": cpu / (n * frames) * 1000.0,
        "per_core": made / cpu,
        "speech_share": speech_frames / (n * frames),
    }


def memory(avatar_dir: str, n: int) -> dict[str, float]:
    """Run in a fresh process (``--memory``), so freed memory of other runs is not reused."""
    from lipcore.live import LiveRenderer, shared_avatar

    chunks = speech()
    gc.collect()
    r0 = rss()
    shared = shared_avatar(avatar_dir)
    gc.collect()
    r1 = rss()
    for i in range(len(shared.idle)):  # what sessions convert on first use, done once
        shared.idle_rgba(i)
    gc.collect()
    r2 = rss()
    sessions = [Talker(LiveRenderer(shared, video_format="rgba"), chunks, True) for _ in range(n)]
    for k in range(50):  # 2 s: every buffer and stream allocated
        for s in sessions:
            s.tick(k * 40.0)
    gc.collect()
    r3 = rss()
    return {
        "avatar_mb": (r1 - r0) / 2**20,
        "rgba_mb": (r2 - r1) / 2**20,
        "session_mb": (r3 - r2) / n / 2**20,
    }


def memory_in_child(avatar_dir: Path, n: int) -> dict[str, float]:
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, __file__, "--memory", str(avatar_dir), str(n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    ap.add_argument("--memory", nargs=2, metavar=("AVATAR_DIR", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory:
        import json

        print(json.dumps(memory(args.memory[0], int(args.memory[1]))))
        return
    cv2.setNumThreads(1)
    from lipcore.live import shared_avatar

    kinds = ("sprites",) if args.quick else ("sprites", "mesh")
    fmts = ("rgba",) if args.quick else ("rgba", "i420")
    seconds = 2.0 if args.quick else 20.0
    n = 3 if args.quick else 10
    chunks = speech()
    rows: list[list[object]] = []
    mem_rows: list[list[object]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            avatar = build(kind, Path(tmp))
            shared = shared_avatar(avatar)
            run_sessions(shared, chunks, n=1, seconds=1.0, fmt="rgba", speaking=True)  # warm-up
            for fmt in fmts:
                for speaking in (True, False):
                    r = run_sessions(
                        shared, chunks, n=n, seconds=seconds, fmt=fmt, speaking=speaking
                    )
                    results[f"{kind}/{fmt}/{'talking' if speaking else 'idle'}"] = r
                    target = ""
                    if kind == "sprites" and speaking:
                        target = "✅" if r["per_core"] >= TARGET_SPRITES else "❌"
                    rows.append(
                        [
                            kind,
                            fmt,
                            "talking" if speaking else "idle",
                            n,
                            f"{r['speech_share']:.0%}",
                            f"{r['per_frame_ms']:.2f}",
                            f"{r['per_core']:.0f}",
                            target,
                        ]
                    )
            m = memory_in_child(avatar.directory, 3 if args.quick else 20)
            mem_rows.append(
                [
                    kind,
                    f"{m['avatar_mb']:.0f}",
                    f"{m['rgba_mb']:.0f}",
                    f"{m['session_mb']:.1f}",
                ]
            )
    body = (
        "Sessions per core at 25 fps, 512×512 (target: ≥ 10 for sprites while talking); "
        f"{n} sessions round-robin on one thread for {seconds:g} s of video each.\n\n"
        + _report.table(
            [
                "back end",
                "format",
                "sessions",
                "n",
                "frames with speech",
                "CPU ms / frame",
                "sessions / core",
                "target",
            ],
            rows,
        )
        + "\n\nMemory (resident set growth, measured in a fresh process): one avatar loaded "
        "(idle loop decoded, the back end's renderer), its idle frames converted to RGBA (both "
        "shared by all its sessions), and each RGBA session of it, talking.\n\n"
        + _report.table(
            ["back end", "per avatar MB", "+ RGBA idle frames MB", "per session MB"], mem_rows
        )
        + "\n"
    )
    _report.write("live", "Live video sessions per core (lipcore.live)", body)


if __name__ == "__main__":
    main()
