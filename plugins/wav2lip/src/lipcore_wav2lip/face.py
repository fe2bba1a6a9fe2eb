"""Face crop and paste-back geometry for Wav2Lip.

Everything is placed in **photo pixels**; an idle-loop frame is reached through its mouth-track
affine (photo → frame). That keeps the crop the same face region on every frame, to sub-pixel
accuracy, whatever the head does in the idle loop.

Model input (Wav2Lip's training convention, ``color_syncnet``/``wav2lip_train``): the crop box
resized to 96×96, in **BGR** channel order (the training frames were read with OpenCV), scaled
``/ 255`` to [0, 1], laid out CHW. Channels 0–2 are the target face with its lower half (rows
48–95) set to 0, channels 3–5 the unmasked reference face. The output is a BGR face in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "FACE_SIZE",
    "CropBox",
    "composite_patch",
    "crop_box_from_landmarks",
    "crop_box_from_roi",
    "crop_face",
    "face_input",
    "prediction_to_rgb",
    "roi_from_prediction",
]

FACE_SIZE = 96
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CropBox:
    """The face box fed to the model, in photo pixels (floats: sub-pixel)."""

    x: float
    y: float
    w: float
    h: float

    def as_list(self) -> list[float]:
        return [round(self.x, 3), round(self.y, 3), round(self.w, 3), round(self.h, 3)]


def crop_box_from_landmarks(
    landmarks: npt.ArrayLike,
    image_size: tuple[int, int],
    *,
    roi: tuple[int, int, int, int] | None = None,
    chin_pad: float = 0.05,
) -> CropBox:
    """The face box Wav2Lip expects, from MediaPipe's 478 landmarks.

    Wav2Lip was trained on face-detector boxes (S3FD) padded a little below the chin: about
    eyebrow-to-chin high and cheek-to-cheek wide, with the mouth in the lower half. MediaPipe's
    mesh spans the upper forehead to the chin, which puts the mouth at ~75% of the height, inside
    the masked half as the model needs. The box is the landmarks' extent plus ``chin_pad`` of its
    height below the chin, grown to contain the mouth ``roi`` (x, y, w, h) and clipped to the
    image.
    """
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    y1 += chin_pad * (y1 - y0)
    if roi is not None:
        rx, ry, rw, rh = roi
        x0, y0 = min(x0, rx), min(y0, ry)
        x1, y1 = max(x1, rx + rw), max(y1, ry + rh)
    width, height = image_size
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(width), x1), min(float(height), y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError(f"face box {x0:.0f},{y0:.0f}–{x1:.0f},{y1:.0f} is too small or outside")
    return CropBox(float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def crop_box_from_roi(roi: tuple[int, int, int, int], image_size: tuple[int, int]) -> CropBox:
    """A fallback face box when no landmarks are at hand, from the mouth ROI alone (a padded box
    around lips and jaw): as wide as the ROI plus 10 %, about twice its height, ending at its
    bottom. On grace_hopper.jpg it lands within ~10 % of the landmark box."""
    rx, ry, rw, rh = roi
    w = 1.1 * rw
    h = max(1.9 * rh, 1.25 * w)
    width, height = image_size
    left = max(0.0, rx + rw / 2 - w / 2)
    bottom = min(float(height), float(ry + rh))
    top = max(0.0, bottom - h)
    right = min(float(width), left + w)
    return CropBox(left, top, right - left, bottom - top)


def _compose(affine: Any, m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``affine`` (photo → frame, 6 numbers) after ``m`` (2×3, something → photo)."""
    a = np.asarray(affine, dtype=np.float64).reshape(2, 3)
    full_a = np.vstack([a, [0.0, 0.0, 1.0]])
    full_m = np.vstack([m, [0.0, 0.0, 1.0]])
    out: npt.NDArray[np.float64] = (full_a @ full_m)[:2]
    return out


def crop_face(image: U8, box: CropBox, *, affine: Any = None, size: int = FACE_SIZE) -> U8:
    """The crop ``box`` (photo pixels) of ``image`` resized to ``size``×``size``.

    ``image`` is the photo itself, or an idle frame with ``affine`` (its mouth-track entry,
    photo → frame). Sampling goes through an intermediate at photo scale so a large face is
    area-averaged down to 96 px rather than point-sampled.
    """
    w_mid = max(size, round(box.w))
    h_mid = max(size, round(box.h))
    # Pixel centres: destination pixel (u, v) samples photo point box.x + (u + .5) * sx - .5.
    sx, sy = box.w / w_mid, box.h / h_mid
    m = np.array(
        [[sx, 0.0, box.x + 0.5 * sx - 0.5], [0.0, sy, box.y + 0.5 * sy - 0.5]], dtype=np.float64
    )
    if affine is not None:
        m = _compose(affine, m)
    mid = cv2.warpAffine(
        image,
        m,
        (w_mid, h_mid),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if (w_mid, h_mid) == (size, size):
        return np.ascontiguousarray(mid)
    return np.ascontiguousarray(cv2.resize(mid, (size, size), interpolation=cv2.INTER_AREA))


def face_input(target_rgb: U8, reference_rgb: U8) -> F32:
    """The model's 6-channel face input ``(6, 96, 96)`` from two 96×96 RGB crops."""
    masked = target_rgb[:, :, ::-1].astype(np.float32) / 255.0  # RGB → BGR, [0, 1]
    masked[FACE_SIZE // 2 :] = 0.0  # the lower half is what the model paints
    ref = reference_rgb[:, :, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(np.concatenate([masked, ref], axis=2).transpose(2, 0, 1))


def prediction_to_rgb(pred: F32) -> U8:
    """One model output ``(3, 96, 96)`` BGR in [0, 1] → ``(96, 96, 3)`` RGB uint8."""
    bgr = np.clip(pred.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def roi_from_prediction(face_rgb: U8, box: CropBox, roi: tuple[int, int, int, int]) -> U8:
    """Resample the predicted 96×96 face (covering ``box``) onto the mouth ROI's pixel grid."""
    rx, ry, rw, rh = roi
    n = face_rgb.shape[0]
    # ROI pixel (px, py) is photo point (rx + px, ry + py) → face pixel ((x - box.x) * n / w - .5).
    kx, ky = n / box.w, n / box.h
    m = np.array(
        [[kx, 0.0, (rx - box.x + 0.5) * kx - 0.5], [0.0, ky, (ry - box.y + 0.5) * ky - 0.5]],
        dtype=np.float64,
    )
    out = cv2.warpAffine(
        face_rgb,
        m,
        (rw, rh),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.ascontiguousarray(out)


def composite_patch(
    frame: U8,
    patch_rgb: U8,
    mask: F32,
    roi: tuple[int, int, int, int],
    affine: Any = None,
) -> U8:
    """``frame`` with ``patch_rgb`` (the ROI in photo pixels) blended in through the feathered
    ``mask``, placed by ``affine`` (photo → frame; identity when None). Returns a new array."""
    rx, ry, rw, rh = roi
    a = np.asarray(affine if affine is not None else (1, 0, 0, 0, 1, 0), dtype=np.float64)
    a = a.reshape(2, 3)
    corners = np.array([[rx, ry], [rx + rw, ry], [rx, ry + rh], [rx + rw, ry + rh]], float)
    mapped = corners @ a[:, :2].T + a[:, 2]
    fh, fw = frame.shape[:2]
    x0 = max(0, int(np.floor(mapped[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(mapped[:, 1].min())) - 1)
    x1 = min(fw, int(np.ceil(mapped[:, 0].max())) + 2)
    y1 = min(fh, int(np.ceil(mapped[:, 1].max())) + 2)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    # ROI-local pixel → frame pixel, shifted into the destination window.
    m = _compose(a, np.array([[1.0, 0.0, rx], [0.0, 1.0, ry]]))
    m[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(
        patch_rgb, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(
        mask.astype(np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0.0
    )[:, :, None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region + (warped.astype(np.float32) - region) * alpha
    out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
