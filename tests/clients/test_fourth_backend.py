"""A fourth lip-sync back end added by plugin alone (issue 12).

``tests/fixtures/dists/flatmouth`` is a distribution lipcore knows nothing about: a flat-colour
mouth with its own web renderer module, registered through the ``lipcore`` entry point. It is
installed (a real wheel, built by pip) into a private site directory, and then, with no file of
the core or the shipped clients changed for it:

* ``lipcore avatarize --backend flat-colour`` (its alias) builds an avatar of kind ``flatmouth``;
* ``lipcore say`` renders a talking video with its mouth;
* the real server describes the avatar (the back end's declared asset, its renderer module's
  URL), serves the module, and speaks through the WebSocket;
* the web client in headless Chromium imports the module and draws the mouth with it;
* an avatar whose kind nobody installed plays its idle loop with a visible notice.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fixture_server import serve_in_thread

from lipcore.testing import LipsyncBackendConformance

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "tests" / "fixtures" / "dists" / "flatmouth"
AVATAR_ID = "flat_grace"

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def flatmouth_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test distribution installed into a private site directory, on sys.path for this
    module (the in-process server's engine finds it by its entry point)."""
    target = tmp_path_factory.mktemp("flatmouth-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(DIST)],
        check=True,
    )
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    for mod in [m for m in sys.modules if m.startswith("lipcore_flatmouth")]:
        del sys.modules[mod]


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site))
    cli = "import sys; from lipcore.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", cli, *args], env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def data_dir(flatmouth_site: Path, tmp_path_factory: pytest.TempPathFactory,
             grace_hopper_path: Path, face_model_path: Path) -> Path:
    """A server data directory holding one flatmouth avatar built by ``lipcore avatarize``
    (through the back end's alias), and a copy of it whose kind nobody installed."""
    data = tmp_path_factory.mktemp("flatmouth-data")
    out = data / "avatars" / AVATAR_ID
    run = _cli(flatmouth_site, "avatarize", str(grace_hopper_path), "--out", str(out),
               "--backend", "flat-colour", "--seconds", "3", "--id", AVATAR_ID)
    assert run.returncode == 0, run.stderr
    unknown = data / "avatars" / "hologram_grace"
    shutil.copytree(out, unknown)
    manifest = json.loads((unknown / "manifest.json").read_text())
    manifest["avatar_id"] = "hologram_grace"
    manifest["lipsync"] = {"type": "hologram"}
    (unknown / "manifest.json").write_text(json.dumps(manifest))
    return data


def test_avatarize_writes_the_canonical_kind_and_the_back_ends_asset(data_dir: Path) -> None:
    d = data_dir / "avatars" / AVATAR_ID
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["lipsync"] == {"type": "flatmouth", "flatmouth": "flatmouth.json"}
    info = json.loads((d / "flatmouth.json").read_text())
    assert info["roi"] == manifest["roi"] and len(info["colour"]) == 3


def test_say_renders_the_flat_mouth(flatmouth_site: Path, data_dir: Path,
                                    tmp_path: Path) -> None:
    from lipcore.media import read_frames

    video = tmp_path / "talk.mp4"
    run = _cli(flatmouth_site, "say", "Hello, how are you today?", "--avatar",
               str(data_dir / "avatars" / AVATAR_ID), "--voice", "en-us", "--out", str(video))
    assert run.returncode == 0, run.stderr
    d = data_dir / "avatars" / AVATAR_ID
    info = json.loads((d / "flatmouth.json").read_text())
    roi = info["roi"]
    timings = json.loads(video.with_suffix(".timings.json").read_text())
    assert timings  # the viseme timeline of the utterance
    frames = list(read_frames(video))
    colour = np.array(info["colour"], dtype=np.float32)

    def share_of_mouth_colour(frame: np.ndarray) -> float:
        x, y, w, h = roi["x"], roi["y"], roi["w"], roi["h"]
        box = frame[y:y + h, x:x + w].astype(np.float32)
        return float((np.abs(box - colour).max(axis=2) < 24).mean())

    shares = [share_of_mouth_colour(f) for f in frames]
    # The lead-in (idle, mouth closed) shows none of the flat colour; while speaking the
    # ellipse covers a good part of the mouth box.
    assert max(shares[:5]) < 0.05, shares[:5]
    assert max(shares) > 0.15, max(shares)


def test_the_server_describes_serves_and_speaks_it(flatmouth_site: Path,
                                                   data_dir: Path) -> None:
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    app = create_app(settings=ServerSettings(data_dir=data_dir))
    with serve_in_thread(app) as url, httpx.Client(timeout=30) as c:
        listed = {a["avatar_id"]: a for a in c.get(f"{url}/avatars").json()["avatars"]}
        av = listed[AVATAR_ID]
        assert av["usable"] is True
        lip = av["lipsync_assets"]
        assert lip["type"] == "flatmouth"
        assert set(lip["files"]) >= {"flatmouth", "idle", "mouth_track", "mask"}
        assert json.loads(c.get(lip["flat_url"]).text)["roi"] == lip["roi"]
        r = c.get(lip["renderer_url"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert "export default" in r.text
        assert c.get(f"{url}/plugins/flatmouth/static/../__init__.py").status_code == 404
        assert listed["hologram_grace"]["usable"] is False
        s = c.post(f"{url}/session-2d", json={"avatar_id": AVATAR_ID, "voice_id": "en-us"})
        assert s.status_code == 200, s.text
        ws_url = s.json()["ws_url"]
        session_id = s.json()["session_id"]

        async def talk() -> tuple[dict[str, Any], list[str], int]:
            import websockets

            kinds: list[str] = []
            audio = 0
            async with websockets.connect(ws_url) as ws:
                hello = json.loads(await ws.recv())
                await asyncio.to_thread(
                    c.post, f"{url}/session-2d/{session_id}/speak", json={"text": "Hello there."}
                )
                while "utterance_end" not in kinds:
                    msg = await asyncio.wait_for(ws.recv(), 30)
                    if isinstance(msg, bytes):
                        audio += 1
                    else:
                        kinds.append(json.loads(msg)["type"])
            return hello, kinds, audio

        hello, kinds, audio = asyncio.run(talk())
        assert hello["lipsync"]["type"] == "flatmouth"
        assert hello["lipsync"]["renderer_url"] == lip["renderer_url"]
        assert audio > 0 and ("visemes" in kinds or "viseme" in kinds)


@pytest.mark.browser
def test_the_web_client_draws_it_with_the_plugins_renderer(browser: Any, flatmouth_site: Path,
                                                           data_dir: Path) -> None:
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    app = create_app(settings=ServerSettings(data_dir=data_dir))
    with serve_in_thread(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{url}/?avatar={AVATAR_ID}&voice=en-us")
            page.wait_for_function("window.lipcore && window.lipcore.state.ready",
                                   timeout=30_000)
            assert page.evaluate("window.lipcore.overlay().kind") == "flatmouth"
            assert page.inner_text("#backend") == "Flat mouth (plugin)"
            assert page.evaluate("window.lipcore.state.notice") is None
            page.evaluate("window.lipcore.speak('Hello, how are you today?')")
            # The plugin's overlay opens the mouth while the avatar speaks...
            page.wait_for_function("window.lipcore.overlay().lastOpening > 0.2",
                                   timeout=20_000)
            # ...and closes it again after.
            page.wait_for_function("window.lipcore.overlay().lastOpening === 0",
                                   timeout=20_000)
            assert not errors, errors
        finally:
            page.close()


@pytest.mark.browser
def test_an_unknown_kind_plays_the_idle_loop_with_a_notice(browser: Any, flatmouth_site: Path,
                                                           data_dir: Path) -> None:
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    app = create_app(settings=ServerSettings(data_dir=data_dir))
    with serve_in_thread(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{url}/?avatar=hologram_grace&voice=en-us")
            page.wait_for_function("window.lipcore && window.lipcore.state.notice",
                                   timeout=30_000)
            notice = page.locator(".kind-notice")
            assert notice.is_visible()
            assert "hologram" in notice.inner_text()
            assert page.evaluate("window.lipcore.overlay()") is None
            # The idle loop plays.
            t0 = page.evaluate("document.querySelector('#idle').currentTime")
            page.wait_for_timeout(600)
            assert page.evaluate("document.querySelector('#idle').currentTime") != t0
            assert not errors, errors
        finally:
            page.close()


# ---------------------------------------------------------------------- the shared bar


@pytest.fixture(scope="module")
def backend(flatmouth_site: Path) -> Any:
    from lipcore.engine import Engine

    return Engine().lipsync_backend("flatmouth")


@pytest.fixture(scope="module")
def avatar(data_dir: Path) -> Any:
    from lipcore.avatar.store import load_avatar

    return load_avatar(data_dir / "avatars" / AVATAR_ID)


@pytest.fixture(scope="module")
def idle_frames(avatar: Any) -> list[np.ndarray]:
    return avatar.idle_frames()[:8]


@pytest.fixture(scope="module")
def photo(avatar: Any) -> np.ndarray:
    return avatar.photo()  # type: ignore[no-any-return]


class TestFlatMouthConformance(LipsyncBackendConformance):
    """The bar lipcore's own back ends pass, passed by the plugin's back end too (it does not
    promise sub-pixel placement: its ellipse is drawn at whole pixels)."""

    kind = "flatmouth"
    aliases = ("flat-colour",)
    distribution = "lipcore-testplugin-flatmouth"


def test_the_plugin_guide_shows_this_back_ends_code() -> None:
    """docs/plugins.md's walk-through is this distribution: every file it shows is shown as it
    is, so the guide's code is the code these tests run."""
    import re

    guide = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    shown = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```\n", guide, re.S))
    assert set(shown) == {
        f"tests/fixtures/dists/flatmouth/{rel}"
        for rel in ("pyproject.toml", "lipcore_flatmouth/__init__.py",
                    "lipcore_flatmouth/plugin.py", "lipcore_flatmouth/static/flatmouth.js")
    }
    for rel, text in shown.items():
        assert (REPO / rel).read_text(encoding="utf-8") == text, f"{rel} differs from the guide"
