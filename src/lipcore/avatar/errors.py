"""Errors of the photo → avatar pipeline. Each says what is wrong, with which input, and what to
do; all are :class:`lipcore.errors.InputError` (HTTP 422) unless they are about a bound
(:class:`ImageTooLargeError`, HTTP 413) or the model file."""

from __future__ import annotations

from lipcore.errors import InputError, LimitError, LipcoreError

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


class ImageError(InputError):
    """The photo cannot be turned into an avatar."""

    code = "bad_image"


class CorruptImageError(ImageError):
    """The bytes are not a readable image (truncated, damaged, or not an image at all)."""

    code = "corrupt_image"


class UnsupportedImageError(ImageError):
    """A readable image in a mode or format lipcore cannot normalise to RGB."""

    code = "unsupported_image"


class ImageTooLargeError(ImageError, LimitError):
    """The file or its pixel count is over the configured bound (decompression bombs included)."""

    code = "image_too_large"
    http_status = 413


class NoFaceError(ImageError):
    """No face was found in the photo."""

    code = "no_face"


class NotAFaceError(NoFaceError):
    """The landmarker fitted a mesh, but the face detector does not believe it is a face."""

    code = "not_a_face"


class FaceTooSmallError(ImageError):
    """The face is too small for a usable mouth region."""

    code = "face_too_small"


class MultipleFacesError(ImageError):
    """Several faces were found and the caller asked to refuse such photos."""

    code = "multiple_faces"


class HeadTurnedError(ImageError):
    """The head is turned or tilted too far from frontal for a 2D avatar."""

    code = "head_turned"


class FaceModelError(LipcoreError):
    """The face landmarker model could not be found, downloaded or verified."""

    code = "face_model_unavailable"
    http_status = 503


class AvatarLoadError(InputError):
    """An avatar directory is missing, incomplete or has an invalid manifest."""

    code = "bad_avatar"
    http_status = 404
