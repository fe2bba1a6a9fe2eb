"""What a new user hit first in the web client (issue 18), in headless Chromium against the REAL
server on loopback: switching voices keeps the sound (one session at a time), the default voice
follows the browser's language, the page fits a phone, back ends the server cannot run are not
offered and their avatars never open by themselves, and avatars are listed by name with a
thumbnail."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixture_server import serve_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LONG = ("Hello, my name is Grace. I wrote the first compiler, and I like to talk about it for "
        "a long time.")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path,
           face_model_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The real app with a sprites avatar and, built after it (so the newest), a Wav2Lip avatar
    on a server that has no Wav2Lip model configured."""
    from lipcore.avatar.store import build_avatar
    from lipcore.server.app import create_app
    from lipcore.server.settings import ServerSettings

    saved = os.environ.pop("LIPCORE_WAV2LIP_MODEL", None)
    data_dir = tmp_path_factory.mktemp("lipcore-data-i18")
    ids = {"sprites": "test_i18_sprites", "onnx": "test_i18_onnx"}
    names = {"sprites": "Grace (sprites)", "onnx": "Grace (Wav2Lip)"}
    for kind in ("sprites", "onnx"):
        build_avatar(grace_hopper_path, data_dir / "avatars" / ids[kind], backend=kind,
                     seconds=3.0, avatar_id=ids[kind], name=names[kind],
                     face_model=face_model_path)
        time.sleep(0.05)  # distinct manifest times: the Wav2Lip avatar is the newest
    app = create_app(settings=ServerSettings(data_dir=data_dir))
    try:
        with serve_in_thread(app) as url:
            yield url, ids
    finally:
        if saved is not None:
            os.environ["LIPCORE_WAV2LIP_MODEL"] = saved


def healthz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


def open_page(browser: Any, url: str, query: str = "", *, width: int = 1280,
              locale: str = "en-US", ready: bool = True) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 800}, locale=locale,
                                  bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(f"{url}/{query}")
    page.wait_for_function("window.lipcore !== undefined", timeout=30_000)
    if ready:
        page.wait_for_function("window.lipcore.state.ready", timeout=30_000)
    return page


def speak_and_hear(page: Any, text: str) -> dict[str, Any]:
    """Speak through the page's own form; wait until the utterance has been heard for 1.2 s;
    return what the page played: the utterance, the peak level at the speaker, its schedule."""
    starts = "window.lipcore.state.events.filter(e => e.type === 'utterance_start')"
    n = page.evaluate(f"{starts}.length")
    page.fill("#text", text)
    page.click("#speak")
    # Heard 1.2 s into this sentence's own utterance (the page's figures of the previous one
    # can still stand for a frame or two after the click).
    page.wait_for_function(f"(() => {{ const st = {starts}; const s = window.lipcore.state; "
                           f"return st.length > {n} && s.utterance === st[st.length - 1].utterance "
                           "&& s.audioClockMs > 1200; })()", timeout=30_000)
    return page.evaluate("""(() => {
        const s = window.lipcore.state;
        const u = window.lipcore.session().audio.get(s.utterance);
        return { utterance: s.utterance, peak: Math.max(0, ...s.audio.map(a => a.rms)),
                 scheduled: u ? u.schedule.length : 0, stopped: u ? u.stopped : null,
                 firstAudioMs: s.firstAudioMs, sessionId: s.sessionId };
    })()""")


def test_switching_voices_keeps_the_sound_and_one_session(browser: Any,
                                                          server: Any) -> None:
    """Speak, Interrupt, change the voice, speak twice: both sentences are heard (audio really
    scheduled and loud at the speaker), the first-audio figure is measured again, and the server
    holds one session, however many switches."""
    url, ids = server
    page = open_page(browser, url, f"?avatar={ids['sprites']}")
    try:
        hellos = "window.lipcore.state.events.filter(e => e.type === 'hello').length"
        page.fill("#text", LONG)
        page.click("#speak")
        page.wait_for_function("window.lipcore.state.audioClockMs > 600", timeout=30_000)
        page.click("#stop")
        n = page.evaluate(hellos)
        page.select_option("#voice", "en")
        page.wait_for_function(f"window.lipcore.state.ready && {hellos} > {n}", timeout=30_000)
        # The figures of the old session are gone, not left standing.
        assert page.inner_text("#stat-first-audio") == "–"
        a = speak_and_hear(page, "The first sentence after the switch.")
        page.wait_for_function("!window.lipcore.session().isSpeaking", timeout=30_000)
        b = speak_and_hear(page, "And the second one, which must be heard too.")
        for heard in (a, b):
            assert heard["scheduled"] > 3 and heard["stopped"] is False, heard
            assert heard["peak"] > 0.02, heard
            assert heard["firstAudioMs"] is not None and heard["firstAudioMs"] < 3000, heard
        assert b["utterance"] == a["utterance"] + 1, (a, b)
        assert page.inner_text("#stat-first-audio") != "–"
        # A second switch; then exactly one session is left on the server.
        n = page.evaluate(hellos)
        page.select_option("#voice", "de")
        page.wait_for_function(f"window.lipcore.state.ready && {hellos} > {n}", timeout=30_000)
        deadline = time.monotonic() + 5
        while healthz(url)["sessions"] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthz(url)["sessions"] == 1, healthz(url)
        assert not page.errors, page.errors
    finally:
        page.context.close()
    deadline = time.monotonic() + 5
    while healthz(url)["sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize(("locale", "voice"), [("fr-FR", "fr-fr"), ("de-DE", "de"),
                                               ("en-US", "en-us"), ("ja-JP", "ja")])
def test_the_default_voice_follows_the_browser_language(browser: Any, server: Any, locale: str,
                                                        voice: str) -> None:
    url, ids = server
    page = open_page(browser, url, f"?avatar={ids['sprites']}", locale=locale)
    try:
        got = page.eval_on_selector("#voice", "el => el.value")
        lang = page.evaluate("navigator.language")
        assert got.split("-")[0] == voice.split("-")[0], (locale, lang, got)
        assert got != "af", got
        # Grouped by language, groups in order of their names, voices sorted inside.
        groups = page.eval_on_selector_all(
            "#voice optgroup",
            "els => els.map(g => ({label: g.label, "
            "voices: [...g.querySelectorAll('option')].map(o => o.textContent)}))")
        labels = [g["label"] for g in groups]
        assert len(groups) > 20, labels
        collate = page.evaluate("labels => [...labels].sort((a, b) => a.localeCompare(b))",
                                labels)
        assert labels == collate
        for g in groups:
            assert g["voices"] == page.evaluate(
                "v => [...v].sort((a, b) => a.localeCompare(b))", g["voices"])
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_without_a_browser_language_voice_it_is_en_us(browser: Any, server: Any) -> None:
    url, ids = server
    page = open_page(browser, url, f"?avatar={ids['sprites']}", locale="en-US")
    try:
        # The page's own rule with the browser's language unknown to the voice list.
        got = page.evaluate("""(async () => {
            const m = await import('./choices.js');
            const voices = [...document.querySelectorAll('#voice option')]
                .map(o => ({id: o.value, language: o.value}));
            return m.defaultVoice(voices, {languages: ['xx-YY']});
        })()""")
        assert got == "en-us"
    finally:
        page.context.close()


@pytest.mark.parametrize("width", [360, 375, 420])
def test_the_page_fits_a_phone(browser: Any, server: Any, width: int) -> None:
    url, ids = server
    page = open_page(browser, url, f"?avatar={ids['sprites']}", width=width)
    try:
        m = page.evaluate("""(() => {
            const d = document.documentElement;
            const up = document.querySelector('label[for=upload]').getBoundingClientRect();
            const wide = [...document.querySelectorAll('body *')]
                .filter(e => e.getClientRects().length && !e.closest('.avatar-list'))
                .map(e => ({tag: e.tagName, id: e.id, cls: e.className,
                            right: e.getBoundingClientRect().right}))
                .filter(e => e.right > window.innerWidth + 0.5);
            return {scroll: d.scrollWidth, inner: window.innerWidth, up: {left: up.left,
                    right: up.right, width: up.width, height: up.height}, wide};
        })()""")
        assert m["scroll"] <= m["inner"], m
        assert not m["wide"], m["wide"][:5]
        up = m["up"]
        assert up["width"] > 40 and up["height"] > 20 and up["left"] >= 0, up
        assert up["right"] <= m["inner"], up
        # It is really there to be pressed (nothing covers it).
        page.locator("label[for=upload]").click(trial=True, timeout=5000)
    finally:
        page.context.close()


def test_back_ends_the_server_cannot_run_are_not_offered(browser: Any, server: Any) -> None:
    """No Wav2Lip model: the upload chooser offers only sprites and mesh and says why not
    Wav2Lip; the newest avatar (a Wav2Lip one) is shown as unusable with the reason and is not
    opened; the sprites avatar is; picking the unusable one says why and keeps the live one."""
    url, ids = server
    page = open_page(browser, url, "")
    try:
        s = page.evaluate("window.lipcore.state")
        assert s["avatar"] == ids["sprites"], s["avatar"]
        offered = page.eval_on_selector_all("#upload-backend option",
                                            "els => els.map(e => e.value)")
        assert "onnx" not in offered and {"sprites", "mesh"} <= set(offered), offered
        note = page.inner_text("#backend-note")
        assert "Wav2Lip" in note and "LIPCORE_WAV2LIP_MODEL" in note, note
        item = page.locator(f".avatar-item[data-id='{ids['onnx']}']")
        assert item.get_attribute("data-usable") == "false"
        assert "LIPCORE_WAV2LIP_MODEL" in item.inner_text()
        assert "can't run" in page.inner_text(f"#avatar option[value='{ids['onnx']}']")
        sid = s["sessionId"]
        item.click()
        page.wait_for_function("document.querySelector('#toast').classList.contains('show')",
                               timeout=5000)
        assert "can't run here" in page.inner_text("#toast")
        s = page.evaluate("window.lipcore.state")
        assert s["avatar"] == ids["sprites"] and s["ready"] and s["sessionId"] == sid, s
        assert page.inner_text("#status") == "live"
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_an_unusable_avatar_asked_for_by_url_is_not_opened(browser: Any, server: Any) -> None:
    url, ids = server
    before = healthz(url)["sessions"]
    page = open_page(browser, url, f"?avatar={ids['onnx']}", ready=False)
    try:
        page.wait_for_function("document.querySelector('#status').textContent.includes("
                               "\"can't run\")", timeout=30_000)
        assert "LIPCORE_WAV2LIP_MODEL" in page.inner_text("#toast")
        assert page.evaluate("window.lipcore.state.ready") is False
        assert healthz(url)["sessions"] == before
    finally:
        page.context.close()


def test_avatars_are_listed_by_name_with_a_thumbnail(browser: Any, server: Any) -> None:
    url, ids = server
    page = open_page(browser, url, f"?avatar={ids['sprites']}")
    try:
        page.wait_for_function("[...document.querySelectorAll('.avatar-item img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
        items = page.eval_on_selector_all(".avatar-item", """els => els.map(e => ({
            id: e.dataset.id, name: e.querySelector('.name').textContent,
            thumb: e.querySelector('img') ? e.querySelector('img').naturalWidth : 0,
            current: e.classList.contains('current')}))""")
        by_id = {i["id"]: i for i in items}
        assert by_id[ids["sprites"]]["name"] == "Grace (sprites)", items
        assert by_id[ids["onnx"]]["name"] == "Grace (Wav2Lip)", items
        assert all(i["thumb"] >= 100 for i in items), items
        assert by_id[ids["sprites"]]["current"] and not by_id[ids["onnx"]]["current"]
        options = page.eval_on_selector_all("#avatar option", "els => els.map(e => e.textContent)")
        assert "Grace (sprites)" in options, options
    finally:
        page.context.close()


def test_the_small_things(browser: Any, server: Any) -> None:
    """Empty text says so; the caption goes when speech ends; speech started through the REST
    API updates the page's figures."""
    url, ids = server
    page = open_page(browser, url, f"?avatar={ids['sprites']}")
    try:
        page.fill("#text", "   ")
        page.click("#speak")
        page.wait_for_function("document.querySelector('#toast').classList.contains('show')",
                               timeout=5000)
        assert "say" in page.inner_text("#toast").lower()

        page.fill("#text", "Short.")
        page.click("#speak")
        page.wait_for_function("document.querySelector('#caption').classList.contains('show')",
                               timeout=15_000)
        page.wait_for_function("!document.querySelector('#caption').classList.contains('show')",
                               timeout=15_000)

        sid = page.evaluate("window.lipcore.state.sessionId")
        page.evaluate("window.lipcore.resetMeasurements()")
        page.evaluate("document.querySelector('#stat-first-audio').textContent = '–'")
        req = urllib.request.Request(f"{url}/session-2d/{sid}/speak", method="POST",
                                     data=json.dumps({"text": "Hello from the API."}).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        page.wait_for_function("window.lipcore.state.firstAudioMs !== null", timeout=15_000)
        first = page.evaluate("window.lipcore.state.firstAudioMs")
        assert 0 < first < 3000, first
        assert page.inner_text("#stat-first-audio") != "–"
        assert not page.errors, page.errors
    finally:
        page.context.close()
