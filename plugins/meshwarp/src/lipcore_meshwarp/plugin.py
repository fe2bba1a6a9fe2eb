"""The ``lipcore`` entry point of lipcore-meshwarp: registers the ``mesh`` lipsync back end."""

from __future__ import annotations

from lipcore.hookspecs import Register, hookimpl


@hookimpl
def register_lipsync_backends(register: Register) -> None:
    """``mesh`` (alias ``meshwarp``): :class:`lipcore_meshwarp.backend.MeshWarpBackend`."""
    from lipcore_meshwarp.backend import MeshWarpBackend

    register("mesh", MeshWarpBackend, aliases=("meshwarp",))
