"""The ``lipcore`` entry point of lipcore-wav2lip: registers the ``onnx`` lipsync back end."""

from __future__ import annotations

from lipcore.hookspecs import Register, hookimpl


@hookimpl
def register_lipsync_backends(register: Register) -> None:
    """``onnx`` (alias ``wav2lip``): :class:`lipcore_wav2lip.backend.Wav2LipBackend`."""
    from lipcore_wav2lip.backend import Wav2LipBackend

    register("onnx", Wav2LipBackend, aliases=("wav2lip",))
