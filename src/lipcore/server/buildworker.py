"""What an avatar build worker process has ready the moment it is forked.

The build workers of :class:`lipcore.server.avatars.AvatarStore` fork from a fork server that
preloads this module: the avatar code, numpy, OpenCV and a default :class:`lipcore.Engine`
with its plugins are imported once there, not once per build. Imported by the fork server
and by build workers only (never needed in the serving process).
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["engine"]

_ENGINE: Any = None


def engine() -> Any:
    """The worker's default engine (its plugins found through their entry points)."""
    global _ENGINE
    if _ENGINE is None:
        from lipcore.engine import Engine

        _ENGINE = Engine()
    return _ENGINE


def _warm_up() -> None:
    # What every build imports (mediapipe alone takes ~2 s, pulling in matplotlib).
    import importlib

    for name in ("lipcore.avatar.store", "lipcore.avatar.face", "lipcore.avatar.mouth",
                 "lipcore.avatar.preview", "lipcore.avatar.idle", "mediapipe",
                 "mediapipe.tasks.python.vision"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        engine()


_warm_up()
