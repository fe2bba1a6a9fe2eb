"""Mouth patches and their binary WebSocket frame (protocol v1, kind 2), defined here once.

An audio-driven back end (:class:`lipcore.interfaces.AudioMouthRenderer`) yields
:class:`MouthPatch` es; the server sends each as one kind-2 frame (:meth:`MouthPatch.encode`),
clients and tests read them back with :func:`decode_patch_frame`.

Layout (little-endian), 32 bytes of header then the image::

    0  u8   kind = 2            (the common 16-byte header of docs/protocol.md)
    1  u8   version = 1
    2  u16  flags = 0
    4  u32  utterance
    8  f64  pts_ms              the frame's time on the utterance's audio timeline
    16 u32  idle_index          the idle-loop frame the server rendered the patch for
    20 u16  x                   the patch box in PHOTO pixels (the avatar's mouth ROI): the client
    22 u16  y                   places it with the mouth track of the idle frame it shows, exactly
    24 u16  w                   like a sprite-atlas cell, and blends it through mask_mouth.png
    26 u16  h
    28 u8   format              1 = JPEG, 2 = WebP, 3 = PNG
    29 u8   reserved = 0
    30 u16  reserved = 0
    32 ...  the encoded image, w×h pixels, RGB
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from lipcore.errors import InputError

__all__ = [
    "FORMATS",
    "HEADER",
    "HEADER_SIZE",
    "KIND_MOUTH_PATCH",
    "MouthPatch",
    "PatchFrame",
    "decode_patch_frame",
    "encode_image",
    "pack_patch_frame",
]

KIND_MOUTH_PATCH = 2
PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHIdIHHHHBBH")
HEADER_SIZE = HEADER.size  # 32
ImageFormat = Literal["jpeg", "webp", "png"]
FORMATS: dict[ImageFormat, int] = {"jpeg": 1, "webp": 2, "png": 3}
_FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
_PIL_NAMES = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}


def encode_image(rgb: npt.NDArray[np.uint8], fmt: ImageFormat = "jpeg", quality: int = 85) -> bytes:
    if fmt not in FORMATS:
        raise InputError(f"patch format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    buf = io.BytesIO()
    kwargs: dict[str, object] = {}
    if fmt in ("jpeg", "webp"):
        kwargs["quality"] = quality
    Image.fromarray(rgb, "RGB").save(buf, _PIL_NAMES[fmt], **kwargs)
    return buf.getvalue()


@dataclass(frozen=True, eq=False)
class MouthPatch:
    """One rendered mouth: the ROI's pixels (photo coordinates) for one video frame."""

    frame: int  # index on the utterance's video timeline (frame * 1000 / fps = pts)
    pts_ms: float
    idle_index: int
    roi: tuple[int, int, int, int]  # x, y, w, h in photo pixels
    rgb: npt.NDArray[np.uint8]  # (h, w, 3)

    def encode(self, *, utterance: int, fmt: ImageFormat = "jpeg", quality: int = 85) -> bytes:
        """The binary WebSocket frame (kind 2) carrying this patch."""
        return pack_patch_frame(
            encode_image(self.rgb, fmt, quality),
            utterance=utterance,
            pts_ms=self.pts_ms,
            idle_index=self.idle_index,
            box=self.roi,
            fmt=fmt,
        )


def pack_patch_frame(
    image: bytes,
    *,
    utterance: int,
    pts_ms: float,
    idle_index: int,
    box: tuple[int, int, int, int],
    fmt: ImageFormat,
) -> bytes:
    """A kind-2 frame around an already encoded ``image`` of the box ``(x, y, w, h)``."""
    x, y, w, h = box
    header = HEADER.pack(
        KIND_MOUTH_PATCH, PROTOCOL_VERSION, 0, utterance, float(pts_ms), idle_index,
        x, y, w, h, FORMATS[fmt], 0, 0,
    )
    return header + image


@dataclass(frozen=True)
class PatchFrame:
    """A decoded kind-2 frame."""

    utterance: int
    pts_ms: float
    idle_index: int
    x: int
    y: int
    w: int
    h: int
    format: ImageFormat
    data: bytes

    def image(self) -> npt.NDArray[np.uint8]:
        img = Image.open(io.BytesIO(self.data)).convert("RGB")
        if img.size != (self.w, self.h):
            raise InputError(
                f"patch image is {img.size[0]}×{img.size[1]} but its header says {self.w}×{self.h}"
            )
        return np.asarray(img)


def decode_patch_frame(data: bytes) -> PatchFrame:
    """Parse a kind-2 binary frame (clear :class:`InputError` for anything else)."""
    if len(data) < HEADER_SIZE:
        raise InputError(f"a mouth-patch frame has at least {HEADER_SIZE} bytes; got {len(data)}")
    kind, version, _flags, utt, pts, idle, x, y, w, h, fmt, _r1, _r2 = HEADER.unpack_from(data)
    if kind != KIND_MOUTH_PATCH:
        raise InputError(f"binary frame kind is {kind}, not {KIND_MOUTH_PATCH} (mouth patch)")
    if version != PROTOCOL_VERSION:
        raise InputError(f"mouth-patch frame version {version} is not supported (only 1)")
    if fmt not in _FORMAT_NAMES:
        raise InputError(f"unknown mouth-patch image format code {fmt}")
    if w < 1 or h < 1:
        raise InputError(f"mouth-patch box of {w}×{h} pixels is empty")
    if len(data) == HEADER_SIZE:
        raise InputError("mouth-patch frame carries no image")
    return PatchFrame(utt, pts, idle, x, y, w, h, _FORMAT_NAMES[fmt], bytes(data[HEADER_SIZE:]))
