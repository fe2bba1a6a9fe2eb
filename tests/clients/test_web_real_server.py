"""The web client in headless Chromium against the REAL server (``create_app``, as ``lipcore
serve`` runs it) on loopback, with an avatar built from ``grace_hopper.jpg`` and the offline TTS
(espeak-ng): speak a sentence, the mouth moves during speech and returns to rest; speak →
first mouth movement and the mouth-vs-audio offset as the page sees them; barge-in."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixture_server import serve_in_thread
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SENTENCE = "Hello, my name is Grace. I wrote the first compiler, and I like to talk."


def build_test_avatar(photo: Path, data_dir: Path, backend: str) -> str:
    """Build an avatar into the server's data layout (``<data_dir>/avatars/<id>``)."""
    from lipcore.avatar.store import build_avatar

    avatar_id = f"test_{backend}_grace"
    out = data_dir / "avatars" / avatar_id
    if not (out / "manifest.json").is_file():
        build_avatar(photo, out, backend=backend, seconds=3.0, avatar_id=avatar_id)
    return avatar_id


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path,
                face_model_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    data_dir = tmp_path_factory.mktemp("lipcore-data")
    ids = {b: build_test_avatar(grace_hopper_path, data_dir, b) for b in ("sprites", "mesh")}
    app = create_app(settings=ServerSettings(data_dir=data_dir))
    with serve_in_thread(app) as url:
        yield url, ids


def open_page(browser: Any, url: str, avatar_id: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(f"{url}/?avatar={avatar_id}&voice=en-us")
    page.wait_for_function("window.lipcore && window.lipcore.state.ready", timeout=30_000)
    page.wait_for_function("window.lipcore.mouthRegion() !== null", timeout=10_000)
    return page


def grab(page: Any, clip: dict[str, float]) -> np.ndarray:
    png = page.screenshot(clip=clip)
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def clip_of(page: Any) -> dict[str, float]:
    r = page.evaluate("window.lipcore.mouthRegion()")
    return {"x": r["x"] - 4, "y": r["y"] - 4, "width": r["w"] + 8, "height": r["h"] + 8}


@pytest.mark.parametrize("backend", ["sprites", "mesh"])
def test_speech_moves_the_mouth_on_the_audio_clock(browser: Any, real_server: Any,
                                                   backend: str) -> None:
    url, ids = real_server
    page = open_page(browser, url, ids[backend])
    try:
        clip = clip_of(page)
        rest = grab(page, clip)
        page.fill("#text", SENTENCE)
        page.click("#speak")
        diffs = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            diffs.append(float(np.abs(grab(page, clip) - rest).mean()))
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'utterance_end') && "
            "window.lipcore.state.lastActivity === 0", timeout=30_000)
        time.sleep(0.3)
        after = float(np.abs(grab(page, clip) - rest).mean())
        st = page.evaluate("({s: window.lipcore.state, lag: window.lipcore.envelopeLagMs()})")
        s = st["s"]
        # The mouth region changes clearly while speaking, and comes back after.
        assert max(diffs) > 3 * max(after, 1.0), (diffs, after)
        assert after < 4, after
        # Latency as the page measures it (loopback, offline TTS).
        assert s["firstAudioMs"] is not None and s["firstAudioMs"] < 1500, s["firstAudioMs"]
        assert s["firstMouthMs"] is not None and s["firstMouthMs"] < 1500, s["firstMouthMs"]
        # Drawn pts vs heard pts when the frame shows: never late by more than a frame.
        offsets = np.array(s["clockOffsetsMs"])
        assert len(offsets) > 30
        assert float(np.median(offsets)) >= -5, np.percentile(offsets, [5, 50, 95])
        # Envelope alignment of mouth and sound: the mouth is not late.
        lag = st["lag"]
        assert lag is not None and lag["r"] > 0.3, lag
        assert lag["lagMs"] >= -20, lag
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_barge_in_mid_sentence(browser: Any, real_server: Any) -> None:
    url, ids = real_server
    page = open_page(browser, url, ids["sprites"])
    try:
        page.evaluate(f"window.lipcore.speak({SENTENCE!r})")
        page.wait_for_function("window.lipcore.state.audioClockMs > 800", timeout=30_000)
        t_stop = page.evaluate("(() => { document.querySelector('#stop').click(); "
                               "return performance.now(); })()")
        page.wait_for_function("window.lipcore.state.lastActivity === 0", timeout=3000)
        # The server confirms with its own stop; nothing of the utterance plays after it.
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'stopped')", timeout=3000)
        time.sleep(0.5)
        s = page.evaluate("window.lipcore.state")
        moving_after = [f for f in s["frames"] if f["t"] > t_stop + 260 and f["act"] > 0]
        assert not moving_after
        assert s["audio"][-1]["rms"] < 0.01
        assert not any(e["type"] == "utterance_end" and e.get("reason") == "done"
                       for e in s["events"])
        assert not page.errors, page.errors
    finally:
        page.context.close()
