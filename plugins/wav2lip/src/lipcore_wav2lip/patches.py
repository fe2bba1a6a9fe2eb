"""Mouth patches and their kind-2 frame: defined once in :mod:`lipcore.patches` (every
audio-driven back end shares them); re-exported here for this plugin's users."""

from __future__ import annotations

from lipcore.patches import (
    FORMATS,
    HEADER_SIZE,
    KIND_MOUTH_PATCH,
    ImageFormat,
    MouthPatch,
    PatchFrame,
    decode_patch_frame,
    encode_image,
)

__all__ = [
    "FORMATS",
    "HEADER_SIZE",
    "KIND_MOUTH_PATCH",
    "ImageFormat",
    "MouthPatch",
    "PatchFrame",
    "decode_patch_frame",
    "encode_image",
]
