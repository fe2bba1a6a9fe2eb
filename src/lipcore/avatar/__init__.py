"""Photo → avatar: image loading, face analysis, the mouth model, and the avatar directory.

Heavy modules (MediaPipe, OpenCV) load on first use, so ``import lipcore.avatar`` stays cheap.
"""

from __future__ import annotations

from lipcore.avatar.errors import (
    AvatarLoadError,
    CorruptImageError,
    FaceModelError,
    FaceTooSmallError,
    HeadTurnedError,
    ImageError,
    ImageTooLargeError,
    MultipleFacesError,
    NoFaceError,
    NotAFaceError,
    UnsupportedImageError,
)

__all__ = [
    "AvatarLoadError",
    "CorruptImageError",
    "FaceModelError",
    "FaceTooSmallError",
    "HeadTurnedError",
    "ImageError",
    "ImageTooLargeError",
    "MultipleFacesError",
    "NoFaceError",
    "NotAFaceError",
    "UnsupportedImageError",
]
