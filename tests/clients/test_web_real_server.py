"""The web client in headless Chromium against the REAL server (``create_app``, as ``lipcore
serve`` runs it) on loopback, with an avatar built from ``grace_hopper.jpg`` and the offline TTS
(espeak-ng): the overlay sits on the moving head; speak a sentence, the mouth moves during speech
and returns to rest; speak → first mouth movement and the mouth-vs-audio offset as the page sees
them; barge-in mid-sentence.

What a viewer sees is checked on screenshots of the composited page. The idle loop moves the head
(and the mouth with it) by a few pixels, which alone changes a screenshot of the mouth region by
~10 grey levels: the mouth comparisons therefore hold the idle loop on one frame
(``lipcore.holdIdle``), so that the only thing that can change the pixels is the mouth overlay."""

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
#: Where the idle loop is held for the mouth comparisons (seconds into the 3 s loop).
HOLD_AT_S = 1.0


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
    # bypass_csp: Playwright's wait_for_function evaluates its predicate string with eval,
    # which the page's Content-Security-Policy forbids (the page itself is checked under its
    # CSP in test_web_token.py).
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
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


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def next_frames(page: Any, n: int = 2) -> None:
    page.evaluate(f"""new Promise(r => {{ let k = {n};
        const f = () => (--k <= 0 ? r() : requestAnimationFrame(f));
        requestAnimationFrame(f); }})""")


@pytest.mark.parametrize("backend", ["sprites", "mesh"])
def test_the_overlay_sits_on_the_moving_head(browser: Any, real_server: Any,
                                             backend: str) -> None:
    """At Rest the overlay is invisible wherever the idle loop is: it is placed by the mouth
    track of the frame on screen, so it covers the photo's own mouth without a seam."""
    url, ids = real_server
    page = open_page(browser, url, ids[backend])
    layer = "#overlay-gl" if backend == "mesh" else "#overlay"
    try:
        seams, bare = [], []
        for t in (0.0, 0.75, 1.5, 2.25):
            page.evaluate(f"window.lipcore.holdIdle({t})")
            clip = clip_of(page)
            with_overlay = grab(page, clip)
            page.evaluate(f"document.querySelector('{layer}').style.visibility = 'hidden'")
            next_frames(page)
            bare.append((clip, grab(page, clip)))
            page.evaluate(f"document.querySelector('{layer}').style.visibility = ''")
            next_frames(page)
            seams.append(mean_diff(with_overlay, bare[-1][1]))
        # How much the head moves the mouth region between those frames: what a misplaced
        # overlay (one that did not follow the track) would show at worst.
        ref_clip = bare[0][0]
        motion = []
        for t in (0.75, 1.5, 2.25):
            page.evaluate(f"window.lipcore.holdIdle({t})")
            page.evaluate(f"document.querySelector('{layer}').style.visibility = 'hidden'")
            next_frames(page)
            motion.append(mean_diff(grab(page, ref_clip), bare[0][1]))
        assert max(seams) < 3.0, seams
        assert max(seams) < 0.5 * max(motion), (seams, motion)
        # The overlay's box moves with the head (the track is not constant).
        assert len({(round(c["x"], 1), round(c["y"], 1)) for c, _ in bare}) > 1
        assert not page.errors, page.errors
    finally:
        page.context.close()


@pytest.mark.parametrize("backend", ["sprites", "mesh"])
def test_speech_moves_the_mouth_on_the_audio_clock(browser: Any, real_server: Any,
                                                   backend: str) -> None:
    url, ids = real_server
    page = open_page(browser, url, ids[backend])
    try:
        page.evaluate(f"window.lipcore.holdIdle({HOLD_AT_S})")
        clip = clip_of(page)
        rest = grab(page, clip)
        page.fill("#text", SENTENCE)
        page.click("#speak")
        samples = []  # (|screenshot − rest|, the page's mouth activity)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            samples.append((mean_diff(grab(page, clip), rest),
                            page.evaluate("window.lipcore.state.lastActivity")))
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'utterance_end') && "
            "window.lipcore.state.lastActivity === 0", timeout=30_000)
        next_frames(page, 3)
        after = mean_diff(grab(page, clip), rest)
        st = page.evaluate("({s: window.lipcore.state, lag: window.lipcore.envelopeLagMs()})")
        s = st["s"]
        # Same idle frame throughout: only the mouth can change the pixels. It changes clearly
        # (an opened mouth: ~10 grey levels over the whole region) while speaking, on several
        # screenshots, and is back to exactly the rest image after.
        diffs = [d for d, _ in samples]
        assert max(diffs) > 5.0, samples
        assert sum(d > 3.0 for d in diffs) >= 3, samples
        assert after < 0.5, after
        # Screenshots with the mouth wide open (by the page's weights) differ more than those at
        # rest: the pixels follow the weights.
        open_d = [d for d, a in samples if a > 0.8]
        shut_d = [d for d, a in samples if a < 0.1]
        assert open_d, samples
        assert np.median(open_d) > 3.0, samples
        if shut_d:
            assert np.median(open_d) > np.median(shut_d), samples
        # Latency as the page measures it (loopback, offline TTS).
        assert s["firstAudioMs"] is not None and s["firstAudioMs"] < 1500, s["firstAudioMs"]
        assert s["firstMouthMs"] is not None and s["firstMouthMs"] < 1500, s["firstMouthMs"]
        # Clock sync: the server's utterance_start stamp, on the page's clock, is recent.
        start = next(e for e in s["events"] if e["type"] == "utterance_start")
        assert start["server_to_page_ms"] is not None, start
        assert -20 < start["server_to_page_ms"] < 500, start
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
        page.evaluate(f"window.lipcore.holdIdle({HOLD_AT_S})")
        clip = clip_of(page)
        rest = grab(page, clip)
        page.evaluate(f"window.lipcore.speak({SENTENCE!r})")
        page.wait_for_function("window.lipcore.state.audioClockMs > 800", timeout=30_000)
        t_stop = page.evaluate("(() => { document.querySelector('#stop').click(); "
                               "return performance.now(); })()")
        page.wait_for_function("window.lipcore.state.lastActivity === 0", timeout=3000)
        # The server confirms with its own stop for the utterance (its last word on it). It may
        # have sent the whole sentence (and utterance_end "done") long before: espeak is far
        # faster than real time, and the page plays what it buffered.
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'stop_received' && "
            "e.utterance === 1)", timeout=3000)
        time.sleep(0.5)
        s = page.evaluate("window.lipcore.state")
        stopped = [e for e in s["events"] if e["type"] == "stopped"]
        assert stopped and stopped[0]["by"] == "client" and stopped[0]["at_pts_ms"] > 700
        ends = [e for e in s["events"] if e["type"] == "utterance_end"]
        if ends:  # mid-sentence: most of the sentence was still to be heard
            assert ends[0]["duration_ms"] > stopped[0]["at_pts_ms"] + 1500, (ends, stopped)
        # The mouth ramps to Rest within the 150 ms ramp (+ a display frame) and stays there.
        moving_after = [f for f in s["frames"] if f["t"] > t_stop + 200 and f["act"] > 0]
        assert not moving_after, moving_after[:5]
        # The audio at the speaker fades out and stays silent although the sentence went on.
        before = [a["rms"] for a in s["audio"] if a["t"] < t_stop]
        after = [a["rms"] for a in s["audio"] if a["t"] > t_stop + 200]
        assert max(before) > 0.02, max(before)
        assert len(after) > 10 and max(after) < 0.005, max(after)
        assert page.evaluate("window.lipcore.session().audio.get(1).gain.gain.value") == 0
        # What a viewer sees: the mouth region is the rest image again.
        assert mean_diff(grab(page, clip), rest) < 0.5
        # The session lives on: the next sentence is spoken and moves the mouth.
        page.evaluate("window.lipcore.speak('Yes?')")
        page.wait_for_function("window.lipcore.state.utterance === 2 && "
                               "window.lipcore.state.lastActivity > 0.3", timeout=10_000)
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_uploading_a_photo_builds_and_shows_a_new_avatar(browser: Any, real_server: Any,
                                                         grace_hopper_path: Path,
                                                         tmp_path: Path) -> None:
    """The page's own upload: pick the lip-sync back end, choose a photo, and the new avatar is
    built by the server, listed, selected and live. A file that is not a photo is refused with
    the server's reason, and the avatar on screen stays."""
    url, ids = real_server
    page = open_page(browser, url, ids["sprites"])
    try:
        page.select_option("#upload-backend", "mesh")
        page.set_input_files("#upload", str(grace_hopper_path))
        # While it builds, the header says so (not "no avatar yet", not the old "live").
        page.wait_for_function("document.querySelector('#status').textContent === "
                               "'building avatar…'", timeout=10_000)
        page.wait_for_function(
            f"window.lipcore.state.avatar !== {ids['sprites']!r} && window.lipcore.state.ready",
            timeout=120_000)
        s = page.evaluate("window.lipcore.state")
        new_id = s["avatar"]
        assert s["backend"] == "mesh" and page.inner_text("#backend") == "Mesh warp"
        assert page.eval_on_selector("#avatar", "el => el.value") == new_id
        options = page.eval_on_selector_all("#avatar option", "els => els.map(e => e.value)")
        assert new_id in options and ids["sprites"] in options
        # Listed by name (no name typed: the photo's file name) with a thumbnail.
        item = page.locator(f".avatar-item[data-id='{new_id}']")
        assert item.locator(".name").inner_text() == grace_hopper_path.stem
        page.wait_for_function(f"(() => {{ const i = document.querySelector("
                               f"\".avatar-item[data-id='{new_id}'] img\"); "
                               f"return i && i.complete && i.naturalWidth > 0; }})()",
                               timeout=10_000)
        # It speaks like any other.
        page.evaluate("window.lipcore.speak('Hello there.')")
        page.wait_for_function("window.lipcore.state.lastActivity > 0.3", timeout=15_000)

        bogus = tmp_path / "notes.png"
        bogus.write_bytes(b"this is not an image at all\n" * 20)
        page.set_input_files("#upload", str(bogus))
        page.wait_for_function(
            "document.querySelector('#toast').classList.contains('show') && "
            "document.querySelector('#toast').textContent.length > 0", timeout=30_000)
        toast = page.inner_text("#toast")
        assert "image" in toast.lower(), toast
        assert page.evaluate("window.lipcore.state.avatar") == new_id
        assert page.evaluate("window.lipcore.state.ready") is True
        assert not page.errors, page.errors
    finally:
        page.context.close()
