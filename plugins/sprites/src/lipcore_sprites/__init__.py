"""lipcore variant A: each viseme's mouth rendered once into a cell of ``atlas.png``; at run time
the highest-weighted cells are cross-faded (premultiplied alpha) and placed by the mouth track."""

from __future__ import annotations

from lipcore_sprites.backend import SpritesBackend, SpritesRenderer, build_atlas

__all__ = ["SpritesBackend", "SpritesRenderer", "build_atlas"]
