"""Index sets of MediaPipe's canonical face mesh (478 points) and small geometry helpers.

The indices follow MediaPipe's ``FaceLandmarksConnections`` (the 468-point canonical mesh plus
10 iris points). "Left"/"right" are the *subject's* sides, as MediaPipe names them: the subject's
right eye (``RIGHT_EYE``) appears on the left of an unmirrored photo.

Every helper takes a landmark array of shape (478, 2 or 3) in pixels (``FaceAnalysis.landmarks``)
and uses x, y only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHIN",
    "FACE_OVAL",
    "JAW",
    "LEFT_EYE",
    "LEFT_EYE_CORNERS",
    "LEFT_EYE_LOWER",
    "LEFT_EYE_UPPER",
    "LEFT_IRIS",
    "LIPS_INNER",
    "LIPS_OUTER",
    "LOWER_LIP_INNER",
    "LOWER_LIP_OUTER",
    "MOUTH_CORNERS",
    "MOUTH_INNER_CORNERS",
    "NOSE_TIP",
    "NUM_LANDMARKS",
    "RIGHT_EYE",
    "RIGHT_EYE_CORNERS",
    "RIGHT_EYE_LOWER",
    "RIGHT_EYE_UPPER",
    "RIGHT_IRIS",
    "UPPER_LIP_INNER",
    "UPPER_LIP_OUTER",
    "eye_aspect",
    "inner_lip_gap",
    "mouth_aperture",
    "mouth_center",
    "mouth_width",
    "points",
]

NUM_LANDMARKS = 478

# Lips. Each contour runs from the subject's right mouth corner (image left) to the left one.
MOUTH_CORNERS: tuple[int, int] = (61, 291)
MOUTH_INNER_CORNERS: tuple[int, int] = (78, 308)
UPPER_LIP_OUTER: tuple[int, ...] = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_OUTER: tuple[int, ...] = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_LIP_INNER: tuple[int, ...] = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER: tuple[int, ...] = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# Closed polygons (no repeated corner): upper contour forward, lower contour backward.
LIPS_OUTER: tuple[int, ...] = UPPER_LIP_OUTER + LOWER_LIP_OUTER[-2:0:-1]
LIPS_INNER: tuple[int, ...] = UPPER_LIP_INNER + LOWER_LIP_INNER[-2:0:-1]

# Eyes (closed polygons: upper lid corner to corner, then the lower lid back).
RIGHT_EYE_CORNERS: tuple[int, int] = (33, 133)
RIGHT_EYE_UPPER: tuple[int, ...] = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER: tuple[int, ...] = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_CORNERS: tuple[int, int] = (362, 263)
LEFT_EYE_UPPER: tuple[int, ...] = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER: tuple[int, ...] = (362, 382, 381, 380, 374, 373, 390, 249, 263)
RIGHT_EYE: tuple[int, ...] = RIGHT_EYE_UPPER + RIGHT_EYE_LOWER[-2:0:-1]
LEFT_EYE: tuple[int, ...] = LEFT_EYE_UPPER + LEFT_EYE_LOWER[-2:0:-1]
# Irises (the 10 refinement points): centre first, then the four rim points.
RIGHT_IRIS: tuple[int, ...] = (468, 469, 470, 471, 472)
LEFT_IRIS: tuple[int, ...] = (473, 474, 475, 476, 477)

# Face outline, clockwise from the top of the forehead (10) in image coordinates.
FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# The jaw line: the part of the oval below the cheekbones, from the left side of the image
# (subject's right, 132) round the chin (152) to the right side (361).
JAW: tuple[int, ...] = (
    132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
)  # fmt: skip
CHIN = 152
NOSE_TIP = 1

# Vertical pairs across the inner lips (upper, lower), near the middle of the mouth.
_INNER_LIP_PAIRS: tuple[tuple[int, int], ...] = ((82, 87), (13, 14), (312, 317))
# Vertical lid pairs (upper, lower) for the eye aspect ratio.
_EYE_PAIRS: dict[str, tuple[tuple[int, int], ...]] = {
    "right": ((160, 144), (159, 145), (158, 153)),
    "left": ((385, 380), (386, 374), (387, 373)),
}
_EYE_CORNERS: dict[str, tuple[int, int]] = {"right": RIGHT_EYE_CORNERS, "left": LEFT_EYE_CORNERS}

FloatArray = npt.NDArray[np.floating]


def _xy(landmarks: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(landmarks, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < NUM_LANDMARKS - 10 or arr.shape[1] < 2:
        raise ValueError(
            f"expected face landmarks of shape (478, 2|3), got {arr.shape}; pass "
            "FaceAnalysis.landmarks"
        )
    return arr[:, :2]


def _dist(xy: npt.NDArray[np.float64], a: int, b: int) -> float:
    return float(np.hypot(*(xy[a] - xy[b])))


def points(landmarks: npt.ArrayLike, indices: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """The (len(indices), 2) x, y pixel coordinates of ``indices``."""
    return _xy(landmarks)[list(indices)].copy()


def mouth_width(landmarks: npt.ArrayLike) -> float:
    """Distance between the outer mouth corners (61, 291), in pixels."""
    return _dist(_xy(landmarks), *MOUTH_CORNERS)


def mouth_center(landmarks: npt.ArrayLike) -> tuple[float, float]:
    """Midpoint of the outer mouth corners, in pixels."""
    xy = _xy(landmarks)
    c = (xy[MOUTH_CORNERS[0]] + xy[MOUTH_CORNERS[1]]) / 2.0
    return float(c[0]), float(c[1])


def inner_lip_gap(landmarks: npt.ArrayLike) -> float:
    """Mean vertical gap between the inner lips over three central pairs, in pixels.

    Averaging three pairs keeps one noisy landmark from deciding whether the mouth is open.
    """
    xy = _xy(landmarks)
    return float(np.mean([_dist(xy, a, b) for a, b in _INNER_LIP_PAIRS]))


def mouth_aperture(landmarks: npt.ArrayLike) -> float:
    """Inner-lip gap divided by mouth width: ~0 closed, ~0.1 slightly open, >0.3 wide open.

    Scale-free, so it compares photos and renders of any size.
    """
    width = mouth_width(landmarks)
    return inner_lip_gap(landmarks) / width if width > 0 else 0.0


def eye_aspect(landmarks: npt.ArrayLike, side: Literal["left", "right", "both"] = "both") -> float:
    """Eye aspect ratio: mean lid gap / eye width. ~0.25-0.35 open, below ~0.1 closed.

    ``side`` is the subject's side (MediaPipe naming); ``"both"`` averages the two eyes.
    """
    xy = _xy(landmarks)
    sides = ("left", "right") if side == "both" else (side,)
    ratios = []
    for s in sides:
        width = _dist(xy, *_EYE_CORNERS[s])
        gap = float(np.mean([_dist(xy, a, b) for a, b in _EYE_PAIRS[s]]))
        ratios.append(gap / width if width > 0 else 0.0)
    return float(np.mean(ratios))
