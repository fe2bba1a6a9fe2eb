"""The web client in real headless Chromium against the fixture server (known audio: tone
bursts with the mouth open exactly during them). What is asserted is what a viewer sees: the
mouth region of the page (screenshots of the composited page, not the page's own variables)
moves during speech and returns to rest; the mouth follows the sound it plays; barge-in."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fixture_server import BURSTS
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture()
def page_for(browser: Any, fixture_url: str) -> Iterator[Any]:
    pages = []

    def open_page(kind: str = "sprites") -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors
        page.goto(f"{fixture_url}/?avatar=fixture_{kind}")
        page.wait_for_function("window.lipcore && window.lipcore.state.ready", timeout=30_000)
        # Let the idle loop run a few frames so the overlay is placed.
        page.wait_for_function("window.lipcore.mouthRegion() !== null", timeout=10_000)
        pages.append(page)
        return page

    yield open_page
    for p in pages:
        assert not p.errors, p.errors
        p.context.close()


def mouth_clip(page: Any) -> dict[str, float]:
    r = page.evaluate("window.lipcore.mouthRegion()")
    pad = 6  # the idle loop moves the head by a few pixels
    return {
        "x": r["x"] - pad,
        "y": r["y"] - pad,
        "width": r["w"] + 2 * pad,
        "height": r["h"] + 2 * pad,
    }


def grab(page: Any, clip: dict[str, float]) -> np.ndarray:
    png = page.screenshot(clip=clip, animations="allow")
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def watch_mouth(page: Any, seconds: float) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Hold the idle loop on one frame (so only the mouth can change the pixels), speak, and
    sample (seconds since start, mean |difference| to the rest image, page's mouth activity).
    Returns the rest image and the samples."""
    page.evaluate("window.lipcore.holdIdle(0.5)")
    clip = mouth_clip(page)
    rest = grab(page, clip)
    out = []
    t0 = time.monotonic()
    page.evaluate("window.lipcore.speak('one two three')")
    while time.monotonic() - t0 < seconds:
        img = grab(page, clip)
        out.append(
            (
                time.monotonic() - t0,
                diff(img, rest),
                page.evaluate("window.lipcore.state.lastActivity"),
            )
        )
    return rest, out


@pytest.mark.parametrize("kind", ["sprites", "mesh"])
def test_mouth_moves_during_speech_and_returns_to_rest(page_for: Any, kind: str) -> None:
    page = page_for(kind)
    rest, samples = watch_mouth(page, 2.6)
    # An opened mouth changes the region by far more than anything else could (the idle frame
    # is held, so a closed mouth leaves it exactly as it was).
    speaking = [d for _, d, a in samples if a > 0.9]
    assert speaking, f"the mouth never opened: {samples}"
    assert max(speaking) > 15, samples
    shut = [d for _, d, a in samples if a < 0.05]
    if shut:
        assert np.median(speaking) > 3 * max(np.median(shut), 1.0), samples
    # After the utterance (1.7 s of audio + ~0.1 s buffering) the mouth is back at rest.
    page.wait_for_function("window.lipcore.state.lastActivity === 0", timeout=5000)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    after = diff(grab(page, mouth_clip(page)), rest)
    state = page.evaluate("window.lipcore.state")
    assert state["lastActivity"] == 0
    assert after < 0.5, after
    assert any(e["type"] == "utterance_end" for e in state["events"])
    # The readout shows the measurements.
    assert page.inner_text("#stat-first-audio").endswith("ms")
    assert page.inner_text("#stat-first-mouth").endswith("ms")


def test_mouth_follows_the_audio_clock(page_for: Any) -> None:
    page = page_for("sprites")
    page.evaluate("window.lipcore.speak('one two three')")
    page.wait_for_function(
        "window.lipcore.state.events.some(e => e.type === 'utterance_end')", timeout=10_000
    )
    page.wait_for_function(
        "window.lipcore.state.lastActivity === 0 && window.lipcore.state.frames.length > 40",
        timeout=10_000,
    )
    st = page.evaluate("({s: window.lipcore.state, lag: window.lipcore.envelopeLagMs()})")
    s = st["s"]
    lag = st["lag"]
    # The sound (RMS at the speaker, from an analyser on the output) and the drawn mouth have the
    # same envelope here; their best alignment is the mouth-vs-audio offset (+ = mouth early).
    assert lag is not None and lag["r"] > 0.8, lag
    assert -10 <= lag["lagMs"] <= 40, lag
    # Frame by frame: the pts drawn vs the pts heard when that frame is on screen.
    offsets = np.array(s["clockOffsetsMs"])
    assert len(offsets) > 40
    assert -5 <= float(np.median(offsets)) <= 30, np.percentile(offsets, [5, 50, 95])
    # The audio is scheduled gap-free: every chunk starts where the one before it ends (to the
    # sample). The only exception is an underrun (a chunk that came too late to be played on
    # time, on a very busy machine): then the timeline slides later, counted, never overlapping.
    u = page.evaluate("(() => { const u = window.lipcore.session().audio.get(1); "
                      "return {schedule: u.schedule, underruns: u.underruns}; })()")
    sched = u["schedule"]
    assert len(sched) >= 15, sched
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(sched)]
    slides = [g for g in gaps if abs(g) >= 1 / 22050]
    assert all(g > 0 for g in slides), gaps
    assert len(slides) == u["underruns"], (gaps, u["underruns"])
    assert len(slides) <= len(gaps) // 4, gaps
    # Clock sync by ping/pong: a round trip and the one-way server → page time in the readout.
    starts = [e for e in s["events"] if e["type"] == "utterance_start"]
    one_way = starts[0]["server_to_page_ms"]
    assert one_way is not None and -20 < one_way < 200, one_way
    assert page.inner_text("#stat-rtt").endswith("ms")
    assert page.inner_text("#stat-net").endswith("ms")
    # The mouth opened first at the first burst's start (plus buffering), not at arrival.
    first_burst_ms = BURSTS[0][0]
    assert s["firstAudioMs"] is not None and s["firstAudioMs"] < 400
    assert s["firstMouthMs"] >= first_burst_ms - 45, s["firstMouthMs"]
    assert s["firstMouthMs"] - s["firstAudioMs"] == pytest.approx(first_burst_ms, abs=60)


def test_barge_in_ramps_the_mouth_to_rest_and_silences_the_audio(page_for: Any) -> None:
    page = page_for("sprites")
    page.evaluate("window.lipcore.speak('one two three')")
    # Stop early in the third burst (900–1180 ms), with the mouth wide open: the button's own
    # click handler, called in the page so the moment is known.
    page.wait_for_function(
        "window.lipcore.state.audioClockMs > 930 && window.lipcore.state.lastActivity > 0.9",
        timeout=10_000,
        polling="raf",
    )
    t_stop = page.evaluate(
        "(() => { document.querySelector('#stop').click(); return performance.now(); })()"
    )
    page.wait_for_function("window.lipcore.state.lastActivity === 0", timeout=2000)
    st = page.evaluate("window.lipcore.state")
    t_rest = max(f["t"] for f in st["frames"] if f["act"] > 0)
    # 150 ms ramp, plus one frame of display delay, plus the poll.
    assert t_rest - t_stop < 260, t_rest - t_stop
    ramp = [f["act"] for f in st["frames"] if f["t"] >= t_stop + 20]
    assert any(0 < a < 0.9 for a in ramp), "no ramp: the mouth jumped to rest"
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(ramp)), ramp
    stopped = [e for e in st["events"] if e["type"] == "stopped"]
    assert stopped and stopped[0]["by"] == "client"
    # The audio fades: 300 ms later the output is silent although the burst went on.
    time.sleep(0.3)
    rms = page.evaluate("""() => { const a = window.lipcore.state.audio;
        return a.length ? a[a.length - 1].rms : 0; }""")
    level = page.evaluate("window.lipcore.session().audio.get(1).gain.gain.value")
    assert level == 0
    assert rms < 0.01
    # The server's own stop for that utterance does not restart anything; the session lives on.
    page.evaluate("window.lipcore.speak('again', true)")
    page.wait_for_function("window.lipcore.state.lastActivity > 0.9", timeout=5000)


def test_a_new_sentence_with_barge_in_replaces_the_current_one(page_for: Any) -> None:
    page = page_for("sprites")
    page.evaluate("window.lipcore.speak('first')")
    page.wait_for_function("window.lipcore.state.audioClockMs > 300", timeout=10_000)
    page.evaluate("window.lipcore.speak('second', true)")
    page.wait_for_function("window.lipcore.state.utterance === 2", timeout=5000)
    page.wait_for_function("window.lipcore.state.events.some(e => e.type === 'stop_received')",
                           timeout=5000)
    events = page.evaluate("window.lipcore.state.events.map(e => [e.type, e.utterance ?? null])")
    # The page cut the first sentence at once, then the server confirmed (although it had sent
    # all of it by then) and started the second.
    assert ["stopped", 1] in events
    assert ["stop_received", 1] in events
    assert events.index(["stopped", 1]) < events.index(["stop_received", 1])
    assert ["utterance_start", 2] in events


def test_typing_while_it_speaks_barges_in_even_between_words(page_for: Any) -> None:
    page = page_for("sprites")
    page.fill("#text", "first")
    page.press("#text", "Enter")
    # Between the first two bursts (420–560 ms) the mouth is shut, but the sentence goes on:
    # submit right then (in the page, so the moment is exact).
    page.wait_for_function("window.lipcore.state.audioClockMs > 440 && "
                           "window.lipcore.state.audioClockMs < 500 && "
                           "window.lipcore.state.lastActivity === 0", timeout=10_000,
                           polling="raf")
    shut = page.evaluate("""(() => { const act = window.lipcore.state.lastActivity;
        const speaking = window.lipcore.session().isSpeaking;
        document.querySelector('#text').value = 'second';
        document.querySelector('#speak-form').requestSubmit();
        return [act, speaking]; })()""")
    assert shut == [0, True], shut
    page.wait_for_function("window.lipcore.state.utterance === 2", timeout=5000)
    ev = page.evaluate("window.lipcore.state.events.filter(e => e.type === 'speak' || "
                       "e.type === 'stopped').map(e => [e.type, e.barge_in ?? e.utterance])")
    assert ev[:3] == [["speak", False], ["speak", True], ["stopped", 1]], ev
    # Once it has finished, a new sentence is simply spoken (no barge-in).
    page.wait_for_function("window.lipcore.session().isSpeaking === false", timeout=10_000)
    page.fill("#text", "third")
    page.press("#text", "Enter")
    last = page.evaluate("window.lipcore.state.events.filter(e => e.type === 'speak').at(-1)")
    assert last["barge_in"] is False


def test_an_avatar_the_page_cannot_draw_plays_its_idle_loop_with_a_notice(
    browser: Any, fixture_url: str
) -> None:
    """A kind with no built-in renderer and no renderer module from its back end: the idle
    loop plays without a mouth, and a visible notice says why; the page does not break."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{fixture_url}/?avatar=fixture_hologram")
        page.wait_for_function("window.lipcore && window.lipcore.state.notice", timeout=30_000)
        notice = page.evaluate("window.lipcore.state.notice")
        assert '"hologram"' in notice and "idle loop" in notice
        assert page.locator(".kind-notice").is_visible()
        assert page.inner_text(".kind-notice") == notice
        assert page.evaluate("window.lipcore.overlay()") is None
        assert page.evaluate("window.lipcore.state.error") is None
        t0 = page.evaluate("document.querySelector('#idle').currentTime")
        page.wait_for_timeout(500)
        assert page.evaluate("document.querySelector('#idle').currentTime") != t0
        assert not errors, errors
    finally:
        context.close()


def test_a_renderer_module_that_does_not_load_is_a_notice_not_a_broken_page(
    browser: Any, fixture_url: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{fixture_url}/?avatar=fixture_glitch")
        page.wait_for_function("window.lipcore && window.lipcore.state.notice", timeout=30_000)
        notice = page.evaluate("window.lipcore.state.notice")
        assert '"glitch"' in notice and "did not load" in notice
        assert page.locator(".kind-notice").is_visible()
        assert page.evaluate("window.lipcore.overlay()") is None
        assert page.evaluate("window.lipcore.state.error") is None
        assert not errors, errors
    finally:
        context.close()

