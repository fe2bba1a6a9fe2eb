"""The web client's auth (issue 17) in headless Chromium against the real server with an API
key: the page takes a client token from ``?token=``, sends it as ``Authorization: Bearer``,
drops it from the address bar, sees only its own avatar, never stores a ``?key=``, and loads
under the server's Content-Security-Policy without violations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixture_server import serve_in_thread

pytestmark = [pytest.mark.browser]

KEY = "k-7c1e9b-browser-test-api-key-55aa0f3d"
MINE, OTHER = "a_token_avatar_mine", "a_token_avatar_other"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings
    from lipcore.testing import testing_engine, write_test_avatar

    data_dir = tmp_path_factory.mktemp("lipcore-token-data")
    write_test_avatar(data_dir, MINE)
    write_test_avatar(data_dir, OTHER)
    app = create_app(testing_engine(), ServerSettings(data_dir=data_dir, api_key=KEY))
    with serve_in_thread(app) as url:
        yield url


def _open(browser: Any, url: str) -> tuple[Any, list[dict[str, str]], list[str]]:
    context = browser.new_context()
    page = context.new_page()
    sent: list[dict[str, str]] = []
    problems: list[str] = []
    page.on("request", lambda r: sent.append({"url": r.url, **r.headers}))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text)
            if "Content Security Policy" in m.text or "Refused to" in m.text else None)
    page.goto(url)
    return page, sent, problems


def test_the_page_uses_a_client_token_and_never_the_key(browser: Any, keyed_server: str) -> None:
    token = httpx.post(f"{keyed_server}/tokens", json={"avatar_id": MINE, "ttl_s": 600},
                       headers={"x-api-key": KEY}).json()["token"]
    page, sent, problems = _open(browser, f"{keyed_server}/?token={token}")
    # Polled from here: wait_for_function would eval its predicate in the page, which the
    # page's CSP (rightly) refuses.
    deadline = time.monotonic() + 30
    while not page.evaluate("document.querySelectorAll('#avatar option').length"):
        assert time.monotonic() < deadline, "the avatar list never filled"
        page.wait_for_timeout(100)
    options = page.eval_on_selector_all("#avatar option", "els => els.map(e => e.value)")
    assert options == [MINE]  # the token sees its own avatar only
    assert "token" not in page.evaluate("location.href")  # out of the address bar
    assert page.evaluate("sessionStorage.getItem('lipcore.client_token')") == token
    rest = [r for r in sent if "/avatars" in r["url"] and "/files/" not in r["url"]]
    assert rest and all(r.get("authorization") == f"Bearer {token}" for r in rest)
    assert not any("x-api-key" in r for r in sent)
    assert not problems, problems
    page.context.close()

    # a key in the URL is dropped unused: nothing stores or sends it
    page, sent, problems = _open(browser, f"{keyed_server}/?key={KEY}")
    page.wait_for_timeout(1500)
    assert KEY not in page.evaluate("location.href")
    assert KEY not in page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    assert not any(KEY in str(r) for r in sent[1:])  # only the navigation itself carried it
    assert page.eval_on_selector_all("#avatar option", "els => els.length") == 0
    page.context.close()


def test_dart_client_takes_tokens(tmp_path: Path) -> None:
    """The Flutter client's API class sends a client token as a Bearer header and has no
    API-key parameter (parsed, as Dart cannot run here)."""
    src = (Path(__file__).resolve().parents[2] / "flutter_client" / "lib" / "src" /
           "assets.dart").read_text()
    assert "'Authorization': 'Bearer $token'" in src or "'Authorization': 'Bearer ${token" in src
    assert "apiKey" not in src and "X-API-Key" not in src
