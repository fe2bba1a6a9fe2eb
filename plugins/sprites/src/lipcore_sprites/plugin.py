"""The ``lipcore`` entry point of lipcore-sprites: registers the ``sprites`` lipsync back end."""

from __future__ import annotations

from lipcore.hookspecs import Register, hookimpl


@hookimpl
def register_lipsync_backends(register: Register) -> None:
    """``sprites`` (alias ``atlas``): :class:`lipcore_sprites.backend.SpritesBackend`."""
    from lipcore_sprites.backend import SpritesBackend

    register("sprites", SpritesBackend, aliases=("atlas",))
