"""Built-in plugins. They register through the same hooks as installed ones."""

from __future__ import annotations

import importlib
from types import ModuleType

#: Module names of the built-in plugins, registered in this order.
_BUILTINS = (
    "lipcore.default_plugins.espeak",
    "lipcore.default_plugins.mapper",
    "lipcore.default_plugins.websocket",
    "lipcore.default_plugins.audio_visemes",
)


def BUILTIN_PLUGINS() -> list[tuple[str, ModuleType]]:  # noqa: N802 - reads like a constant
    return [(name, importlib.import_module(name)) for name in _BUILTINS]
