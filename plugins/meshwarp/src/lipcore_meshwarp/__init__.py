"""lipcore variant B: per-viseme control-point offsets on a 16×12 grid over the mouth ROI,
blended by weight at run time; the ROI is warped over a synthesised interior layer."""

from __future__ import annotations

from lipcore_meshwarp.backend import MeshWarpBackend, MeshWarpRenderer, build_meshdef

__all__ = ["MeshWarpBackend", "MeshWarpRenderer", "build_meshdef"]
