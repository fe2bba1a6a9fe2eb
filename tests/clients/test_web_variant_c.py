"""Variant C in the web client: headless Chromium against the REAL server with a Wav2Lip avatar
(``lipcore-wav2lip``, a small generated model of Wav2Lip's signature, so the pictures are not a
real mouth but the pipeline is the product's). The page receives the mouth patches (binary
frames of kind 2), decodes them, and shows the one due at the audio clock, placed by the mouth
track through the mouth mask; before the first patch and after the speech the photo's own mouth
(the idle loop) is seen, nothing of the overlay.

As in test_web_real_server.py, the idle loop is held on one frame for the screenshots, so only
the overlay can change the mouth region's pixels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixture_server import serve_in_thread
from test_web_real_server import HOLD_AT_S, clip_of, grab, mean_diff, next_frames, open_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SENTENCE = "Hello, my name is Grace. I wrote the first compiler."
AVATAR_ID = "test_onnx_grace"


@pytest.fixture(scope="module")
def wav2lip_server(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path,
                   face_model_path: Path) -> Iterator[str]:
    testing = pytest.importorskip("lipcore_wav2lip.testing")
    from lipcore.avatar.store import build_avatar
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    tmp = tmp_path_factory.mktemp("variant-c")
    model = tmp / "tiny.onnx"
    testing.tiny_model(model)
    data_dir = tmp / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPCORE_WAV2LIP_MODEL", str(model))
        build_avatar(grace_hopper_path, data_dir / "avatars" / AVATAR_ID, backend="onnx",
                     seconds=3.0, avatar_id=AVATAR_ID, face_model=face_model_path)
        app = create_app(settings=ServerSettings(data_dir=data_dir))
        with serve_in_thread(app) as url:
            yield url


def test_the_page_draws_server_rendered_mouth_patches_on_the_audio_clock(
    browser: Any, wav2lip_server: str
) -> None:
    page = open_page(browser, wav2lip_server, AVATAR_ID)
    try:
        assert page.evaluate("window.lipcore.state.backend") == "onnx"
        assert page.inner_text("#backend") == "Wav2Lip (server-rendered)"
        page.evaluate(f"window.lipcore.holdIdle({HOLD_AT_S})")
        clip = clip_of(page)
        rest = grab(page, clip)
        # Nothing of the overlay before speech: the photo's own mouth.
        assert page.evaluate("window.lipcore.state.patchesShown") == 0
        page.fill("#text", SENTENCE)
        page.click("#speak")
        diffs = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            diffs.append(mean_diff(grab(page, clip), rest))
        page.wait_for_function(
            "window.lipcore.state.events.some(e => e.type === 'utterance_end') && "
            "window.lipcore.session().isSpeaking === false", timeout=30_000)
        next_frames(page, 3)
        after = mean_diff(grab(page, clip), rest)
        s = page.evaluate("window.lipcore.state")
        events = s["events"]
        end = next(e for e in events if e["type"] == "utterance_end")
        fps = next(e for e in events if e["type"] == "hello")["fps"]
        # The server streamed patches and the page decoded them (no decode failures).
        assert any(e["type"] == "first_patch" for e in events), [e["type"] for e in events]
        assert not [e for e in events if e["type"] in ("patch_error", "protocol_error")]
        # The page showed the patches as the audio clock reached them: most frames of the
        # utterance got their own patch (not only the last one, not a burst at the start).
        frames = end["duration_ms"] * fps / 1000.0
        assert s["patchesShown"] > 0.6 * frames, (s["patchesShown"], frames)
        # The mouth region visibly changed while speaking, on many screenshots...
        assert max(diffs) > 5.0, diffs
        assert sum(d > 3.0 for d in diffs) >= 3, diffs
        # ...and is the photo's own mouth again after the speech.
        assert after < 0.5, after
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_barge_in_returns_to_the_photo_mouth_at_once(browser: Any, wav2lip_server: str) -> None:
    page = open_page(browser, wav2lip_server, AVATAR_ID)
    try:
        page.evaluate(f"window.lipcore.holdIdle({HOLD_AT_S})")
        clip = clip_of(page)
        rest = grab(page, clip)
        page.evaluate(f"window.lipcore.speak({SENTENCE!r})")
        page.wait_for_function("window.lipcore.state.patchesShown > 10", timeout=30_000)
        during = mean_diff(grab(page, clip), rest)
        page.click("#stop")
        next_frames(page, 3)
        shown = page.evaluate("window.lipcore.state.patchesShown")
        after = mean_diff(grab(page, clip), rest)
        # No patch of the stopped utterance is drawn any more, however many are still queued.
        page.wait_for_timeout(400)
        assert page.evaluate("window.lipcore.state.patchesShown") == shown
        assert during > 3.0, during
        assert after < 0.5, after
        assert not page.errors, page.errors
    finally:
        page.context.close()
