"""The web client in a real browser: headless Chromium (Debian's, driven by Playwright) against
the real server (``create_app`` under uvicorn on loopback, as ``lipcore serve`` runs it) with the
offline TTS (espeak-ng) and an avatar built from ``grace_hopper.jpg`` for each back end.

Per sentence, as the page itself measures it (``window.lipcore.state``, see app.js):

- speak → first audio: from the speak call to the first sample at the speaker (the Web Audio
  output timestamp), in ms;
- speak → first mouth: to the first displayed overlay frame whose mouth is open
  (Σ non-Rest weights > 0.05);
- mouth-vs-audio offset, + = mouth early: the server's mouth lead (``hello.lead_ms``, already
  in the viseme frames' pts) plus the render offset (pts of the drawn mouth − pts heard at the
  speaker when that frame is on screen, per frame). Target (issue 8): 0–40 ms early, never late
  (5th percentile ≥ 0). As an independent check, the lag that best aligns the drawn mouth's
  activity with the output's RMS envelope (cross-correlation; noisy on real speech);
- overlay frame time: CPU time of one overlay draw (canvas 2D for sprites, WebGL submission for
  the mesh; the GPU here is SwiftShader on the CPU), and the display interval while speaking.

    .venv/bin/python benchmarks/bench_browser.py            # both back ends, 5 sentences each
    .venv/bin/python benchmarks/bench_browser.py --quick    # smoke run: 1 short sentence each
    .venv/bin/python benchmarks/bench_browser.py --screenshot docs/img/web_client.png
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _report

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("sprites", "mesh")
SENTENCES = [
    "Hello, my name is Grace. I wrote the first compiler.",
    "Bob paid for the lamp by the pump, and we went home.",
    "Maybe we can swim in the bay tomorrow morning.",
    "A ship in port is safe, but that is not what ships are built for.",
    "The most dangerous phrase is: we have always done it this way.",
]
QUICK_SENTENCES = ["Hello, I am Grace."]
# Headless Chromium with its audio clock running and WebGL on the CPU (as in the tests).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
FIRST_MS_TARGET = 1000.0  # speak → first audio / first mouth on loopback with the offline TTS
LEAD_MIN_MS, LEAD_MAX_MS = 0.0, 40.0
FRAME_BUDGET_MS = 1000.0 / 60  # the overlay fits in one 60 Hz frame (p95)


def chromium() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("chromium is not installed: run scripts/setup.sh --dev")


def build_avatars(data_dir: Path, backends: tuple[str, ...]) -> dict[str, str]:
    import matplotlib.cbook

    from lipcore.avatar.store import build_avatar

    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    ids = {}
    for backend in backends:
        avatar_id = f"bench_{backend}_grace"
        build_avatar(photo, data_dir / "avatars" / avatar_id, backend=backend, seconds=3.0,
                     avatar_id=avatar_id)
        ids[backend] = avatar_id
    return ids


@contextmanager
def serve(data_dir: Path) -> Iterator[str]:
    """The real server app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(settings=ServerSettings(data_dir=data_dir))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if xs else float("nan")


def speak_and_measure(page: Any, text: str, screenshot: Path | None) -> dict[str, Any]:
    """Speak one sentence, wait until it has been heard to the end, and read the page's
    measurements."""
    n_before = page.evaluate(
        "window.lipcore.state.events.filter(e => e.type === 'utterance_start').length")
    rest = None
    if screenshot is not None:
        # The idle loop held on one frame while the screenshots are taken, so the one with the
        # mouth region farthest from the rest image is the one with the mouth most open.
        page.evaluate("window.lipcore.holdIdle(1.0)")
        r = page.evaluate("window.lipcore.mouthRegion()")
        clip = {"x": r["x"], "y": r["y"], "width": r["w"], "height": r["h"]}
        rest = grey(page.screenshot(clip=clip))
    page.fill("#text", text)
    page.evaluate(f"window.lipcore.speak({text!r})")
    page.wait_for_function(
        f"window.lipcore.state.events.filter(e => e.type === 'utterance_start').length > "
        f"{n_before}", timeout=30_000)
    uid = page.evaluate("window.lipcore.session().current")
    if screenshot is not None and rest is not None:
        # Mid-sentence, with the mouth open: what the README shows.
        best: tuple[float, bytes] = (-1.0, b"")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.0 and page.evaluate(
                f"(window.lipcore.session().audio.ptsHeard({uid}) ?? 0) < "
                f"(window.lipcore.state.events.find(e => e.type === 'utterance_end' && "
                f"e.utterance === {uid})?.duration_ms ?? 1e9)"):
            png = page.screenshot()
            img = grey(png)
            x, y = int(clip["x"]), int(clip["y"])
            mouth = img[y:y + rest.shape[0], x:x + rest.shape[1]]
            d = float(np.abs(mouth - rest[:mouth.shape[0], :mouth.shape[1]]).mean())
            if d > best[0]:
                best = (d, png)
        save_screenshot(best[1], screenshot)
        page.evaluate("window.lipcore.holdIdle(null)")
    page.wait_for_function(
        f"window.lipcore.state.events.some(e => e.type === 'utterance_end' && "
        f"e.utterance === {uid})", timeout=60_000)
    duration = page.evaluate(
        f"window.lipcore.state.events.find(e => e.type === 'utterance_end' && "
        f"e.utterance === {uid}).duration_ms")
    page.wait_for_function(
        f"(window.lipcore.session().audio.ptsHeard({uid}) ?? 0) > {duration} + 200 && "
        "window.lipcore.state.lastActivity === 0", timeout=60_000)
    got = page.evaluate(f"""(() => {{
        const L = window.lipcore, s = L.state, u = L.session().audio.get({uid});
        const gaps = [];
        for (let i = 1; i < u.schedule.length; i++)
            gaps.push(Math.abs(u.schedule[i][0] - u.schedule[i - 1][1]) * 1000);
        const iv = [];
        for (let i = 1; i < s.frames.length; i++) iv.push(s.frames[i].t - s.frames[i - 1].t);
        return {{first_audio: s.firstAudioMs, first_mouth: s.firstMouthMs,
                 offsets: s.clockOffsetsMs, frame_ms: s.frameTimeMs, intervals: iv,
                 env: L.envelopeLagMs(), lead: L.session().hello.lead_ms,
                 underruns: u.underruns, max_gap_ms: gaps.length ? Math.max(...gaps) : 0,
                 chunks: u.schedule.length}};
    }})()""")
    out: dict[str, Any] = dict(got)
    out["text"] = text
    out["duration_ms"] = duration
    return out


def grey(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def save_screenshot(png: bytes, path: Path, limit: int = 300_000) -> None:
    """Save a page screenshot; colour-quantized if the full-colour PNG is over ``limit``."""
    from PIL import Image

    if len(png) > limit:
        img = Image.open(io.BytesIO(png)).convert("RGB")
        buf = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                     dither=Image.Dither.FLOYDSTEINBERG).save(
            buf, format="PNG", optimize=True)
        png = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    print(f"screenshot: {path} ({len(png) / 1000:.0f} kB)", file=sys.stderr)


def run(backends: tuple[str, ...], sentences: list[str],
        screenshot: Path | None) -> dict[str, list[dict[str, Any]]]:
    from playwright.sync_api import sync_playwright

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="lipcore-bench-browser-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        ids = build_avatars(data_dir, backends)
        print(f"avatars built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        with serve(data_dir) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), headless=True,
                                        args=CHROMIUM_ARGS)
            try:
                for backend in backends:
                    # bypass_csp: Playwright's wait_for_function evals its predicate, which
                    # the page's Content-Security-Policy forbids.
                    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                                  bypass_csp=True)
                    page = context.new_page()
                    errors: list[Any] = []

                    def on_error(e: Any, errors: list[Any] = errors) -> None:
                        errors.append(e)

                    page.on("pageerror", on_error)
                    page.goto(f"{url}/?avatar={ids[backend]}&voice=en-us")
                    page.wait_for_function("window.lipcore && window.lipcore.state.ready",
                                           timeout=60_000)
                    page.wait_for_function("window.lipcore.mouthRegion() !== null",
                                           timeout=30_000)
                    time.sleep(1.0)  # a few pings: the clock sync has samples
                    rows = []
                    for i, text in enumerate(sentences):
                        # The second sentence: the readouts already show the first one's.
                        shot = screenshot if (i == min(1, len(sentences) - 1)
                                              and backend == backends[0]) else None
                        rows.append(speak_and_measure(page, text, shot))
                        r = rows[-1]
                        print(f"{backend}: {text[:40]!r}: first audio {r['first_audio']:.0f} ms,"
                              f" first mouth {r['first_mouth']:.0f} ms", file=sys.stderr)
                        time.sleep(0.3)
                    if errors:
                        raise RuntimeError(f"page errors: {[str(e) for e in errors]}")
                    results[backend] = rows
                    context.close()
            finally:
                browser.close()
    return results


def ok(flag: bool) -> str:
    return "✅" if flag else "❌"


def report(results: dict[str, list[dict[str, Any]]], quick: bool) -> str:
    rows, detail = [], []
    for backend, runs in results.items():
        fa = [r["first_audio"] for r in runs]
        fm = [r["first_mouth"] for r in runs]
        lead = runs[0]["lead"]
        offsets = [lead + o for r in runs for o in r["offsets"]]
        frame = [t for r in runs for t in r["frame_ms"]]
        interval = [t for r in runs for t in r["intervals"]]
        env = [r["env"]["lagMs"] for r in runs if r["env"]]
        med, p5, p95 = pct(offsets, 50), pct(offsets, 5), pct(offsets, 95)
        first_ok = max(fa) < FIRST_MS_TARGET and max(fm) < FIRST_MS_TARGET
        lead_ok = LEAD_MIN_MS <= med <= LEAD_MAX_MS and p5 >= 0
        frame_ok = pct(frame, 95) < FRAME_BUDGET_MS
        rows.append([
            backend, len(runs),
            f"{statistics.median(fa):.0f} (max {max(fa):.0f})",
            f"{statistics.median(fm):.0f} (max {max(fm):.0f})", ok(first_ok),
            f"{med:+.1f} [{p5:+.1f}, {pct(offsets, 95):+.1f}]", ok(lead_ok),
            f"{statistics.median(env):+.0f}" if env else "–",
            f"{statistics.fmean(frame):.2f} / {pct(frame, 95):.2f}", ok(frame_ok),
            f"{pct(interval, 50):.1f} / {pct(interval, 95):.1f}",
        ])
        for r in runs:
            o = [lead + x for x in r["offsets"]]
            detail.append([
                backend, r["text"], f"{r['duration_ms']:.0f}", f"{r['first_audio']:.0f}",
                f"{r['first_mouth']:.0f}", f"{pct(o, 50):+.1f}", f"{pct(o, 5):+.1f}",
                f"{r['env']['lagMs']:+.0f} (r {r['env']['r']:.2f})" if r["env"] else "–",
                f"{statistics.fmean(r['frame_ms']):.2f}", r["chunks"], r["underruns"],
                f"{r['max_gap_ms']:.3f}",
            ])
        del p95
    lead = next(iter(results.values()))[0]["lead"]
    body = [
        "Targets (issue 8): the mouth 0–40 ms early, never late (median of the per-frame "
        f"offset in [{LEAD_MIN_MS:.0f}, {LEAD_MAX_MS:.0f}] ms and its 5th percentile ≥ 0); "
        f"speak → first audio and first mouth < {FIRST_MS_TARGET:.0f} ms on loopback (our "
        f"target); overlay draw p95 < {FRAME_BUDGET_MS:.1f} ms (one 60 Hz frame).",
        "",
        _report.table(
            ["back end", "sentences", "speak → first audio ms (median)",
             "speak → first mouth ms (median)", "< 1 s", "mouth lead ms median [p5, p95]",
             "0–40, never late", "envelope lag ms", "overlay draw ms mean / p95", "p95 < 16.7",
             "display interval ms p50 / p95"],
            rows),
        "",
        f"The mouth lead is the server's `lead_ms` ({lead:.0f} ms, in the viseme pts) plus the "
        "page's render offset (pts drawn − pts heard when the frame is on screen, per frame). "
        "Envelope lag: the shift that best aligns the drawn mouth activity with the output RMS "
        "(+ = mouth early); it follows the phonemes, not the pts, so it is a rough check.",
        "",
        _report.table(
            ["back end", "sentence", "audio ms", "first audio", "first mouth", "lead p50",
             "lead p5", "envelope lag", "draw ms", "chunks", "underruns", "max gap ms"],
            detail),
    ]
    if quick:
        body.insert(0, "**Quick run** (one short sentence per back end): a smoke test, not a "
                    "measurement.\n")
    body.append("")
    body.append(interpret(results))
    return "\n".join(body)


def interpret(results: dict[str, list[dict[str, Any]]]) -> str:
    all_runs = [r for runs in results.values() for r in runs]
    fa = statistics.median(r["first_audio"] for r in all_runs)
    dm = statistics.median(r["first_mouth"] - r["first_audio"] for r in all_runs)
    under = sum(r["underruns"] for r in all_runs)
    verdict = {
        name: pct([runs[0]["lead"] + o for r in runs for o in r["offsets"]], 5)
        for name, runs in results.items()
    }
    late = [n for n, p5 in verdict.items() if p5 < 0]
    return (
        f"Reading: the first sound reaches the speaker ~{fa:.0f} ms after the speak call (TTS "
        "start, the first chunk, the page's 50 ms jitter buffer and the output latency); the "
        f"mouth first moves {abs(dm):.0f} ms {'before' if dm < 0 else 'after'} it (median): "
        "its lead plus the 40 ms ease-in toward the first shape, or the sentence's own "
        "onset. The mouth is drawn on the audio clock, so its offset against the sound is the "
        "server's lead plus at most a display frame, whatever the network does; "
        f"{under} underrun(s) across all sentences (chunks scheduled back to back). "
        + (f"Late frames ({', '.join(late)}): long display frames (dropped frames while "
           "other jobs load the 2 cores; the mesh's WebGL runs on SwiftShader, on the CPU) "
           "show a mouth that was drawn for an earlier moment. "
           if late else "")
        + "Other engineers' jobs share the 2 cores, so frame times here are pessimistic."
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short sentence per back end")
    ap.add_argument("--backend", choices=BACKENDS, action="append")
    ap.add_argument("--screenshot", type=Path, default=None,
                    help="save a PNG of the page mid-sentence (first back end, first sentence)")
    args = ap.parse_args(argv)
    shared = REPO.parent / "shared" / "models" / "face_landmarker.task"
    if shared.is_file():
        os.environ.setdefault("LIPCORE_FACE_MODEL", str(shared))
    backends = tuple(args.backend or BACKENDS)
    sentences = QUICK_SENTENCES if args.quick else SENTENCES
    results = run(backends, sentences, args.screenshot)
    _report.write("browser", "Web client in headless Chromium (real server, offline TTS)",
                  report(results, args.quick))


if __name__ == "__main__":
    main()
