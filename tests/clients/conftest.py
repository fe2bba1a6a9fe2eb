"""Fixtures of the client tests: headless Chromium (Debian's, driven by Playwright) and the
servers the web client talks to."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib puts no test directory on sys.path; the browser tests share the
# fixture server module.
sys.path.insert(0, str(Path(__file__).resolve().parent))

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Audio starts without a user gesture; headless Chromium then plays into a fake output
    # whose clock advances in real time, which is all the audio clock needs.
    "--autoplay-policy=no-user-gesture-required",
    # WebGL (the mesh overlay) on the CPU.
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def chromium_path() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Module scope, not session: while Playwright's sync API is open it keeps an event loop running
# in this thread, and every later asyncio.run() in the session would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        # The set-up installs it: a missing browser is a broken set-up, not a pass.
        pytest.fail("chromium is not installed: run scripts/setup.sh --dev (it installs "
                    "Debian's chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def fixture_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from fixture_server import create_fixture_app, serve_in_thread

    app = create_fixture_app(Path(tmp_path_factory.mktemp("fixture-avatars")))
    with serve_in_thread(app) as url:
        yield url
