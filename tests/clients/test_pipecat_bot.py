"""lipcore's web client as a Pipecat client: examples/pipecat_bot.py (a Pipecat pipeline on
FastAPIWebsocketTransport with LipcoreFrameSerializer, a scripted LLM and LipcoreTTSService on
espeak-ng) serves the page in headless Chromium on loopback. The page's own checks, as against
lipcore's server (test_web_real_server.py): typed text is answered, the answer plays (audio at
the speaker) and moves the mouth on screen, the mouth returns to rest; the stop button cuts the
answer mid-sentence (Pipecat's interruption → the serializer's stop)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixture_server import serve_in_thread
from test_web_real_server import (
    HOLD_AT_S,
    build_test_avatar,
    clip_of,
    grab,
    mean_diff,
    next_frames,
    open_page,
)

pytest.importorskip("lipcore_pipecat")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LONG = ("Hello, my name is Grace. I wrote the first compiler, and I like to talk about "
        "computers for a very long time.")


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path,
        face_model_path: Path) -> Iterator[tuple[str, str]]:
    from pipecat_bot import create_bot_app

    data_dir = tmp_path_factory.mktemp("pipecat-bot")
    avatar = build_test_avatar(grace_hopper_path, data_dir, "sprites")
    with serve_in_thread(create_bot_app(data_dir, greeting=None)) as url:
        yield url, avatar


def test_the_bot_answers_and_the_mouth_moves(browser: Any, bot: tuple[str, str]) -> None:
    url, avatar = bot
    page = open_page(browser, url, avatar)
    try:
        page.evaluate(f"window.lipcore.holdIdle({HOLD_AT_S})")
        clip = clip_of(page)
        rest = grab(page, clip)
        page.fill("#text", "Hello there, how are you?")
        page.click("#speak")
        diffs = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            diffs.append(mean_diff(grab(page, clip), rest))
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'utterance_end') && "
            "window.lipcore.state.lastActivity === 0", timeout=30_000)
        next_frames(page, 3)
        after = mean_diff(grab(page, clip), rest)
        s = page.evaluate("window.lipcore.state")
        start = next(e for e in s["events"] if e["type"] == "utterance_start")
        assert start["text"].startswith("You said: Hello there"), start
        # The answer is heard: audio at the speaker.
        assert max(a["rms"] for a in s["audio"]) > 0.02
        assert s["firstAudioMs"] is not None and s["firstAudioMs"] < 2000, s["firstAudioMs"]
        assert s["firstMouthMs"] is not None and s["firstMouthMs"] < 2000, s["firstMouthMs"]
        # What a viewer sees: the mouth region changes while it speaks, on several
        # screenshots, and is the rest image again after.
        assert max(diffs) > 5.0, diffs
        assert sum(d > 3.0 for d in diffs) >= 3, diffs
        assert after < 0.5, after
        # The mouth follows the audio clock (drawn pts vs heard pts): never late by a frame.
        offsets = sorted(s["clockOffsetsMs"])
        assert len(offsets) > 30 and offsets[len(offsets) // 2] >= -5
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_stop_cuts_the_answer(browser: Any, bot: tuple[str, str]) -> None:
    url, avatar = bot
    page = open_page(browser, url, avatar)
    try:
        page.evaluate(f"window.lipcore.holdIdle({HOLD_AT_S})")
        clip = clip_of(page)
        rest = grab(page, clip)
        page.evaluate(f"window.lipcore.speak({LONG!r})")
        page.wait_for_function("window.lipcore.state.audioClockMs > 800", timeout=30_000)
        t_stop = page.evaluate("(() => { document.querySelector('#stop').click(); "
                               "return performance.now(); })()")
        page.wait_for_function("window.lipcore.state.lastActivity === 0", timeout=3000)
        # The pipeline's interruption reaches the page as the serializer's stop.
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'stop_received' && "
            "e.utterance === 1)", timeout=3000)
        time.sleep(0.5)
        s = page.evaluate("window.lipcore.state")
        stop = next(e for e in s["events"] if e["type"] == "stop_received")
        assert stop["reason"] == "client" and stop["at_pts_ms"] > 700
        # Mid-sentence: the answer (~7 s) never finished.
        assert not [e for e in s["events"] if e["type"] == "utterance_end"]
        moving_after = [f for f in s["frames"] if f["t"] > t_stop + 200 and f["act"] > 0]
        assert not moving_after, moving_after[:5]
        after = [a["rms"] for a in s["audio"] if a["t"] > t_stop + 200]
        assert len(after) > 10 and max(after) < 0.005, max(after)
        assert mean_diff(grab(page, clip), rest) < 0.5
        # The bot lives on: the next message is answered.
        page.evaluate("window.lipcore.speak('Yes?')")
        page.wait_for_function("window.lipcore.state.utterance === 2 && "
                               "window.lipcore.state.lastActivity > 0.3", timeout=15_000)
        assert not page.errors, page.errors
    finally:
        page.context.close()
