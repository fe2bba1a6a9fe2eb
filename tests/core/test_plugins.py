"""The plugin system, proven with real distributions installed by the test (see
``tests/fixtures/dists``): discovery through entry points, per-avatar back-end selection,
isolation of broken plugins, the environment switches and ``lipcore plugins``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lipcore
from lipcore import hookspecs
from lipcore.errors import PluginNotFoundError
from lipcore.plugins import PluginRegistry, get_plugin_manager

REPO = Path(__file__).resolve().parents[2]
DISTS = REPO / "tests" / "fixtures" / "dists"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the three test distributions into a private site directory (real wheels built
    by pip, with their entry points), once per test session."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(DISTS / "good"),
            str(DISTS / "broken"),
            str(DISTS / "badhook"),
        ],
        check=True,
    )
    return target


@pytest.fixture
def with_test_plugins(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(plugin_site))
    importlib.invalidate_caches()
    for var in ("LIPCORE_PLUGINS", "LIPCORE_DISABLE_PLUGINS", "LIPCORE_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    yield plugin_site
    for mod in [m for m in sys.modules if m.startswith("lipcore_testplugin")]:
        del sys.modules[mod]


def test_installed_plugin_is_discovered_with_its_version(with_test_plugins: Path) -> None:
    registry = PluginRegistry(get_plugin_manager())
    flat = registry.get("lipsync_backends", "flat")
    assert flat.distribution == "lipcore-testplugin-good"
    assert flat.version == "1.2.3"
    assert registry.get("lipsync_backends", "flat2d") is flat  # alias
    assert "silent" in registry.names("tts_sources")
    # built-ins register through the same hooks
    assert "espeak" in registry.names("tts_sources")
    assert "default" in registry.names("viseme_mappers")
    assert "websocket" in registry.names("transports")


def test_broken_plugins_are_isolated_with_a_warning(
    with_test_plugins: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lipcore.plugins"):
        pm = get_plugin_manager()
        registry = PluginRegistry(pm)
    broken = {b.name: b for b in pm.broken}
    assert "lipcore_dependency_that_is_not_installed" in broken["testbroken"].error
    assert "registration always fails" in broken["testbadhook"].error
    assert broken["testbadhook"].distribution == "lipcore-testplugin-badhook"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "testbroken" in messages and "testbadhook" in messages
    # ...and the working plugin and the built-ins are unaffected
    assert "flat" in registry.names("lipsync_backends")
    assert "espeak" in registry.names("tts_sources")
    rows = {r["name"]: r for r in registry.describe()}
    assert rows["testbroken"]["status"].startswith("broken: ModuleNotFoundError")
    assert rows["testgood"]["registers"] == {
        "tts_sources": ["silent"],
        "lipsync_backends": ["flat"],
    }


def test_backend_is_selected_per_avatar(with_test_plugins: Path) -> None:
    engine = lipcore.Engine()
    manifests = {"a1": {"type": "flat"}, "a2": {"type": "flat2d"}}
    backends = {aid: engine.lipsync_backend(m["type"], avatar=aid) for aid, m in manifests.items()}
    assert type(backends["a1"]).__name__ == "FlatBackend"
    assert backends["a1"].type == "flat"


def test_missing_backend_error_names_avatar_installed_and_pip_line(
    with_test_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIPCORE_PLUGINS", "testgood")
    engine = lipcore.Engine()
    with pytest.raises(PluginNotFoundError) as err:
        engine.lipsync_backend("mesh", avatar="hopper-1")
    text = str(err.value)
    assert "'mesh'" in text
    assert "avatar 'hopper-1'" in text
    assert "Installed lipsync back ends: flat" in text
    assert "pip install <distribution>" in text and "LIPCORE_PLUGINS may hide" in text


def test_allow_list_block_list_and_builtins_only(
    with_test_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIPCORE_PLUGINS", "lipcore-testplugin-good")  # by distribution name
    pm = get_plugin_manager()
    assert pm.has_plugin("testgood") and not pm.broken  # the broken ones were never imported

    monkeypatch.setenv("LIPCORE_PLUGINS", "")  # set but empty: built-ins only
    registry = PluginRegistry(get_plugin_manager())
    assert "flat" not in registry.names("lipsync_backends")
    assert "espeak" in registry.names("tts_sources")

    monkeypatch.delenv("LIPCORE_PLUGINS")
    monkeypatch.setenv("LIPCORE_DISABLE_PLUGINS", "testgood,testbroken")
    pm = get_plugin_manager()
    PluginRegistry(pm)  # runs the hooks: only the (not blocked) bad hook breaks
    assert not pm.has_plugin("testgood")
    assert [b.name for b in pm.broken] == ["testbadhook"]


def test_trace_switch_logs_every_hook_call(
    with_test_plugins: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LIPCORE_TRACE_PLUGINS", "1")
    monkeypatch.setenv("LIPCORE_PLUGINS", "testgood")
    with caplog.at_level(logging.INFO, logger="lipcore.plugins"):
        PluginRegistry(get_plugin_manager())
    messages = [r.getMessage() for r in caplog.records]
    assert "hook register_lipsync_backends -> testgood" in messages
    assert any(m.startswith("registered lipsync back end 'flat' from testgood") for m in messages)


async def test_tts_source_is_selected_per_session(with_test_plugins: Path) -> None:
    engine = lipcore.Engine()
    steps = [s async for s in engine.speak("hello", voice="quiet", tts="silent")]
    assert steps[0].chunk.sample_rate == 16000
    with pytest.raises(lipcore.UnknownVoiceError, match="available: quiet"):
        await engine.utterance("hello", voice="nobody", tts="silent")


def test_engines_do_not_share_plugins() -> None:
    class Inline:
        @staticmethod
        @lipcore.hookimpl
        def register_transports(register: hookspecs.Register) -> None:
            register("carrier-pigeon", lambda: object())  # a factory function

    a = lipcore.Engine(plugin_manager=get_plugin_manager(load_entrypoints=False, plugins=[Inline]))
    b = lipcore.Engine(plugin_manager=get_plugin_manager(load_entrypoints=False))
    assert "carrier-pigeon" in a.registry.names("transports")
    assert "carrier-pigeon" not in b.registry.names("transports")


def test_installed_plugin_may_replace_a_builtin_but_two_plugins_do_not_fight(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def first_factory() -> object:  # factory functions (classes must be Transports)
        return {}

    def second_factory() -> object:
        return []

    class First:
        @staticmethod
        @lipcore.hookimpl
        def register_transports(register: hookspecs.Register) -> None:
            register("websocket", first_factory)

    class Second:
        @staticmethod
        @lipcore.hookimpl
        def register_transports(register: hookspecs.Register) -> None:
            register("websocket", second_factory)

    registry = PluginRegistry(get_plugin_manager(load_entrypoints=False, plugins=[First]))
    assert registry.get("transports", "websocket").factory is first_factory  # replaced it

    with caplog.at_level(logging.WARNING, logger="lipcore.plugins"):
        registry = PluginRegistry(
            get_plugin_manager(load_entrypoints=False, plugins=[First, Second])
        )
    assert registry.get("transports", "websocket").factory is first_factory
    assert "registered by both First and Second" in caplog.text


def test_cli_lists_plugins_with_versions_and_registrations(plugin_site: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(plugin_site))
    env.pop("LIPCORE_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-m", "lipcore.cli", "plugins", "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["testgood"]["version"] == "1.2.3"
    assert rows["testgood"]["registers"]["lipsync_backends"] == ["flat"]
    assert rows["testbroken"]["status"].startswith("broken")
    assert rows["lipcore.default_plugins.espeak"]["builtin"] is True
    # the warning about the broken plugin goes to stderr, the JSON stays clean
    assert "testbroken" in out.stderr


def test_every_hook_is_documented_and_tested() -> None:
    """A hook without docs or a test is a hook nobody can rely on."""
    docs = (REPO / "docs" / "plugins.md").read_text()
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert len(hooks) == 5
    for hook in hooks:
        assert getattr(hookspecs, hook).__doc__
        assert f"`{hook}`" in docs, f"{hook} is not documented in docs/plugins.md"
        family = hook.removeprefix("register_")
        assert family in tests, f"{hook} has no test"


def test_a_wrong_registration_is_a_clear_error_when_it_is_made(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Typed registration: a class that is not a back end, or one whose ``type`` is not the
    name it registers, breaks its plugin at start-up with an error naming both."""
    import lipcore
    from lipcore.interfaces import LipsyncBackend

    class NotABackend:
        pass

    class Misnamed(LipsyncBackend):
        type = "flat"

        def build_assets(self, mouth_model: Any, out_dir: Any) -> dict[str, Any]:
            return {}

        def open_renderer(self, avatar: Any) -> Any:
            return None

    class WrongClass:
        @staticmethod
        @lipcore.hookimpl
        def register_lipsync_backends(register: Any) -> None:
            register("nope", NotABackend)

    class WrongName:
        @staticmethod
        @lipcore.hookimpl
        def register_lipsync_backends(register: Any) -> None:
            register("flat-ish", Misnamed)

    pm = get_plugin_manager(load_entrypoints=False, plugins=[WrongClass, WrongName])
    registry = PluginRegistry(pm)
    errors = {b.name: b.error for b in pm.broken}
    assert "NotABackend registered as 'nope' is not a lipcore.interfaces.LipsyncBackend" in (
        errors["WrongClass"]
    )
    assert "Misnamed.type is 'flat' but it is registered as 'flat-ish'" in errors["WrongName"]
    assert "nope" not in registry.names("lipsync_backends")
