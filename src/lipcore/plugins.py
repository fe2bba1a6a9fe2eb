"""Plugin discovery and the typed registry the rest of lipcore uses.

* :func:`get_plugin_manager` builds a fresh pluggy manager (no module global: an embedding
  service may run two engines side by side). Built-ins register through the same hooks as
  third parties; installed plugins come from the entry-point group ``lipcore``.
* A plugin that fails to import, or whose hook raises, is isolated: a warning names it and the
  error, the others carry on, and ``lipcore plugins`` lists it as broken.
* Environment switches:

  ``LIPCORE_PLUGINS``          allow-list of entry-point or distribution names (comma separated);
                               set but empty means "built-ins only".
  ``LIPCORE_DISABLE_PLUGINS``  block-list, same names.
  ``LIPCORE_TRACE_PLUGINS=1``  log every hook call and registration.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from lipcore import hookspecs
from lipcore.errors import PluginNotFoundError

__all__ = [
    "BrokenPlugin",
    "Family",
    "PluginRegistry",
    "Registration",
    "get_plugin_manager",
]

logger = logging.getLogger("lipcore.plugins")

ENTRY_POINT_GROUP = "lipcore"

Family = Literal[
    "tts_sources", "viseme_mappers", "lipsync_backends", "transports", "audio_viseme_estimators"
]
FAMILIES: tuple[Family, ...] = (
    "tts_sources",
    "viseme_mappers",
    "lipsync_backends",
    "transports",
    "audio_viseme_estimators",
)

_FAMILY_NOUN: dict[Family, str] = {
    "tts_sources": "TTS source",
    "viseme_mappers": "viseme mapper",
    "lipsync_backends": "lipsync back end",
    "transports": "transport",
    "audio_viseme_estimators": "audio viseme estimator",
}


@dataclass(frozen=True, slots=True)
class Registration:
    family: Family
    name: str
    factory: Callable[..., Any]
    plugin: str  # the plugin's name in the manager ("lipcore.default_plugins.espeak", "sprites")
    distribution: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokenPlugin:
    name: str
    distribution: str | None
    error: str


@dataclass
class _PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False


def _env_names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _trace_enabled() -> bool:
    return os.environ.get("LIPCORE_TRACE_PLUGINS", "").lower() in {"1", "true", "yes", "on"}


class LipcorePluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from and which ones broke."""

    def __init__(self) -> None:
        super().__init__("lipcore")
        self.add_hookspecs(hookspecs)
        self.plugin_info: dict[str, _PluginInfo] = {}
        self.broken: list[BrokenPlugin] = []

    def register_builtin(self, plugin: object, name: str) -> None:
        self.register(plugin, name=name)
        self.plugin_info[name] = _PluginInfo(name=name, builtin=True)

    def load_entrypoints(self) -> None:
        allow = _env_names("LIPCORE_PLUGINS")
        block = _env_names("LIPCORE_DISABLE_PLUGINS") or set()
        for ep in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        ):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            names = {ep.name} | ({dist} if dist else set())
            if allow is not None and not names & allow:
                logger.debug("plugin %s skipped: not in LIPCORE_PLUGINS", ep.name)
                continue
            if names & block:
                logger.debug("plugin %s skipped: in LIPCORE_DISABLE_PLUGINS", ep.name)
                continue
            if self.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as exc:
                self._mark_broken(ep.name, dist, exc)
                continue
            self.plugin_info[ep.name] = _PluginInfo(
                name=ep.name, distribution=dist, version=version
            )
        self.check_pending()

    def _mark_broken(self, name: str, dist: str | None, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        logger.warning("lipcore plugin %r (%s) is broken and was skipped: %s", name, dist, message)
        self.broken.append(BrokenPlugin(name=name, distribution=dist, error=message))
        if self.has_plugin(name):
            self.unregister(name=name)


def get_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[object] = ()
) -> LipcorePluginManager:
    """A new plugin manager with the built-ins, the installed plugins (unless
    ``load_entrypoints`` is false) and any extra ``plugins`` objects (handy in tests)."""
    from lipcore.default_plugins import BUILTIN_PLUGINS

    pm = LipcorePluginManager()
    block = _env_names("LIPCORE_DISABLE_PLUGINS") or set()
    for name, module in BUILTIN_PLUGINS():
        if name not in block:
            pm.register_builtin(module, name)
    if load_entrypoints:
        pm.load_entrypoints()
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"inline-{i}-{id(plugin):x}"
        pm.register(plugin, name=name)
        pm.plugin_info[name] = _PluginInfo(name=name)
    if _trace_enabled():
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def _interface_of(family: str) -> type | None:
    from lipcore import interfaces

    return {
        "tts_sources": interfaces.TTSSource,
        "viseme_mappers": interfaces.VisemeMapper,
        "lipsync_backends": interfaces.LipsyncBackend,
        "transports": interfaces.Transport,
    }.get(family)


def _check_registration(
    family: str, name: object, factory: object, aliases: object
) -> None:
    """Refuse a registration that cannot work, when it is made (a clear error naming the
    hook, the name and what is wrong) rather than when an avatar or a session first needs it.
    A class must implement the family's interface; a back end class's ``type`` is its name."""
    hook = f"register_{family}"
    if not isinstance(name, str) or not name:
        raise TypeError(f"{hook}: the name must be a non-empty string, got {name!r}")
    if not isinstance(aliases, tuple) or not all(isinstance(a, str) for a in aliases):
        raise TypeError(f"{hook}: aliases of {name!r} must be a tuple of strings")
    if not callable(factory):
        raise TypeError(
            f"{hook}: the factory of {name!r} must be a class or a function that returns "
            f"one, got {type(factory).__name__}"
        )
    interface = _interface_of(family)
    if isinstance(factory, type) and interface is not None:
        if not issubclass(factory, interface):
            raise TypeError(
                f"{hook}: {factory.__qualname__} registered as {name!r} is not a "
                f"lipcore.interfaces.{interface.__name__}; subclass it"
            )
        kind = getattr(factory, "type", name) if family == "lipsync_backends" else name
        if kind != name:
            raise ValueError(
                f"{hook}: {factory.__qualname__}.type is {kind!r} but it is registered as "
                f"{name!r}; a back end's type is the name it registers (add {kind!r} as an "
                "alias instead)"
            )


class PluginRegistry:
    """What the installed plugins registered, by family and name.

    The typed facade over the manager: the rest of lipcore asks this, never ``pm.hook``.
    Name clashes: an installed plugin may replace a built-in (on purpose, with an info log); two
    installed plugins claiming one name keep the first by plugin name, with a warning.
    """

    def __init__(self, pm: LipcorePluginManager) -> None:
        self.pm = pm
        self._by_family: dict[Family, dict[str, Registration]] = {f: {} for f in FAMILIES}
        self._aliases: dict[Family, dict[str, str]] = {f: {} for f in FAMILIES}
        for family in FAMILIES:
            self._collect(family)

    # -- collection -----------------------------------------------------------------------

    def _collect(self, family: Family) -> None:
        caller = getattr(self.pm.hook, f"register_{family}")

        def order(impl: Any) -> tuple[bool, str]:
            # Built-ins first (in registration order: sort is stable), then the others by
            # plugin name, so "the first one wins" is deterministic.
            name = self.pm.get_name(impl.plugin) or ""
            builtin = self.pm.plugin_info.get(name, _PluginInfo(name)).builtin
            return (not builtin, "" if builtin else name)

        # Call each implementation on its own, so one raising hook is isolated.
        for impl in sorted(caller.get_hookimpls(), key=order):
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            info = self.pm.plugin_info.get(plugin_name, _PluginInfo(name=plugin_name))
            pending: list[Registration] = []

            def register(
                name: str,
                factory: Callable[..., Any],
                *,
                aliases: tuple[str, ...] = (),
                _pending: list[Registration] = pending,
                _info: _PluginInfo = info,
                _family: Family = family,
            ) -> None:
                _check_registration(_family, name, factory, aliases)
                _pending.append(
                    Registration(
                        family=family,
                        name=name,
                        factory=factory,
                        plugin=_info.name,
                        distribution=_info.distribution,
                        version=_info.version,
                        aliases=tuple(aliases),
                    )
                )

            try:
                if _trace_enabled():
                    logger.info("hook register_%s -> %s", family, plugin_name)
                impl.function(register=register)
            except Exception as exc:
                self.pm._mark_broken(plugin_name, info.distribution, exc)
                continue
            for reg in pending:
                self._add(reg, builtin=info.builtin)

    def _add(self, reg: Registration, *, builtin: bool) -> None:
        table = self._by_family[reg.family]
        existing = table.get(reg.name)
        if existing is not None:
            existing_builtin = self.pm.plugin_info.get(
                existing.plugin, _PluginInfo(existing.plugin)
            ).builtin
            if existing_builtin and not builtin:
                logger.info(
                    "%s %r from %s replaces the built-in one",
                    _FAMILY_NOUN[reg.family],
                    reg.name,
                    reg.plugin,
                )
            else:
                if not (builtin and not existing_builtin):
                    logger.warning(
                        "%s %r is registered by both %s and %s; keeping %s",
                        _FAMILY_NOUN[reg.family],
                        reg.name,
                        existing.plugin,
                        reg.plugin,
                        existing.plugin,
                    )
                return
        table[reg.name] = reg
        if _trace_enabled():
            logger.info("registered %s %r from %s", _FAMILY_NOUN[reg.family], reg.name, reg.plugin)
        for alias in reg.aliases:
            self._aliases[reg.family].setdefault(alias, reg.name)

    # -- lookup ----------------------------------------------------------------------------

    def names(self, family: Family) -> list[str]:
        return sorted(self._by_family[family])

    def registrations(self, family: Family) -> list[Registration]:
        return [self._by_family[family][n] for n in self.names(family)]

    def get(self, family: Family, name: str, *, context: str = "") -> Registration:
        """The registration for ``name`` (or an alias), or a :class:`PluginNotFoundError` that
        says what was asked, for what, what is installed and how to install the missing one."""
        table = self._by_family[family]
        key = self._aliases[family].get(name, name)
        if key in table:
            return table[key]
        noun = _FAMILY_NOUN[family]
        installed = ", ".join(self.names(family)) or "none"
        where = f" for {context}" if context else ""
        # No table of well-known distributions: a new plugin needs no core edit. The hint
        # names what can be checked instead (the switches that hide installed plugins).
        filtered = [
            var for var in ("LIPCORE_PLUGINS", "LIPCORE_DISABLE_PLUGINS") if os.environ.get(var)
        ]
        install = (
            " Install the plugin distribution that provides it (pip install <distribution>; "
            "docs/plugins.md lists lipcore's own), or pick an installed one"
            + (f"; {' and '.join(filtered)} may hide an installed one" if filtered else "")
            + ". `lipcore plugins` shows what is installed."
        )
        broken = [b for b in self.pm.broken if b.name == name]
        broken_note = (
            f" (a plugin named {broken[0].name!r} is installed but broken: {broken[0].error})"
            if broken
            else ""
        )
        raise PluginNotFoundError(
            f"No {noun} named {name!r}{where}{broken_note}. "
            f"Installed {noun}s: {installed}.{install}"
        )

    def create(self, family: Family, name: str, *, context: str = "", **kwargs: Any) -> Any:
        return self.get(family, name, context=context).factory(**kwargs)

    def describe(self) -> list[dict[str, Any]]:
        """Installed plugins with versions and what each registers (``lipcore plugins``)."""
        rows: dict[str, dict[str, Any]] = {}
        for name, info in self.pm.plugin_info.items():
            if not self.pm.has_plugin(name):
                continue
            rows[name] = {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "registers": {},
                "status": "ok",
            }
        for family in FAMILIES:
            for reg in self.registrations(family):
                row = rows.setdefault(
                    reg.plugin,
                    {
                        "name": reg.plugin,
                        "distribution": reg.distribution,
                        "version": reg.version,
                        "builtin": False,
                        "registers": {},
                        "status": "ok",
                    },
                )
                row["registers"].setdefault(family, []).append(reg.name)
        for b in self.pm.broken:
            rows[b.name] = {
                "name": b.name,
                "distribution": b.distribution,
                "version": None,
                "builtin": False,
                "registers": {},
                "status": f"broken: {b.error}",
            }
        return sorted(rows.values(), key=lambda r: (not r["builtin"], r["name"]))
