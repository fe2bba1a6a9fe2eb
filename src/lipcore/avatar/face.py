"""Face analysis with MediaPipe's FaceLandmarker: 478 landmarks, 52 blendshapes and head pose.

One :class:`FaceAnalyzer` owns one landmarker (and one face detector from the same bundle) and
is meant to be reused: creating them costs ~0.1-0.2 s, analysing a photo ~20 ms.

Why a second detector: the landmarker fits a mesh to anything its internal detector scores just
above 0.5, and some non-faces get there (a colour wheel does, at ~0.51-0.56). Real faces score
0.9 and more. The bundle's ``face_detector.tflite`` is run on its own to read that score, and
:meth:`FaceAnalyzer.analyze` rejects faces below :data:`MIN_DETECTION_SCORE`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lipcore.avatar.errors import (
    FaceModelError,
    FaceTooSmallError,
    HeadTurnedError,
    ImageError,
    MultipleFacesError,
    NoFaceError,
    NotAFaceError,
)
from lipcore.avatar.modelfetch import resolve_face_model

__all__ = [
    "MAX_PITCH_DEG",
    "MAX_ROLL_DEG",
    "MAX_YAW_DEG",
    "MIN_DETECTION_SCORE",
    "MIN_FACE_PX",
    "FaceAnalysis",
    "FaceAnalyzer",
    "FaceLimits",
]

log = logging.getLogger(__name__)

# What MediaPipe's native runtime (TFLite/LiteRT, absl logging) prints straight to the process's
# stderr while it builds a graph and runs it the first time: status chatter, not news.
_NATIVE_NOISE = re.compile(
    r"^(INFO: |WARNING: All log messages before absl|WARNING: Logging before InitGoogle|"
    r"[IW]\d{4} |"
    r"Created TensorFlow Lite|Feedback manager)"
)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hold back the native runtime's start-up chatter on fd 2 (it bypasses Python's logging).

    Anything else written to stderr meanwhile (another thread's log line, a real native error)
    is passed through afterwards; the chatter goes to lipcore's debug log. With
    ``LIPCORE_NATIVE_LOGS=1`` nothing is held back.
    """
    if os.environ.get("LIPCORE_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to quieten
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
    passed = []
    for line in text.splitlines():
        if _NATIVE_NOISE.match(line):
            log.debug("mediapipe: %s", line)
        else:
            passed.append(line)
    if passed:
        sys.stderr.write("\n".join(passed) + "\n")

#: Face-detector score below which a fitted mesh is not believed to be a face. Real photos
#: score 0.92-0.95 (grace_hopper, astronaut); a colour wheel the landmarker accepts, 0.51-0.56.
MIN_DETECTION_SCORE = 0.75
#: Smallest usable face: width of the landmark extent in pixels. At 64 px the mouth is ~25 px
#: wide, the least that still gives a readable mouth overlay (skimage's astronaut is 90 px).
MIN_FACE_PX = 64
#: Head pose bounds (degrees) for a 2D avatar: beyond them one side of the mouth is hidden or
#: foreshortened, and a frontal lip shape no longer fits.
MAX_YAW_DEG = 30.0
MAX_PITCH_DEG = 25.0
MAX_ROLL_DEG = 30.0

_DETECTOR_MEMBER = "face_detector.tflite"


@dataclass(frozen=True)
class FaceLimits:
    """What :meth:`FaceAnalyzer.analyze` accepts as a usable face."""

    min_face_px: float = MIN_FACE_PX
    min_detection_score: float = MIN_DETECTION_SCORE
    max_yaw_deg: float = MAX_YAW_DEG
    max_pitch_deg: float = MAX_PITCH_DEG
    max_roll_deg: float = MAX_ROLL_DEG


@dataclass(frozen=True)
class FaceAnalysis:
    """One face in one image.

    ``landmarks`` is (478, 3) float32: x, y in image pixels, z in pixels on x's scale
    (MediaPipe's relative depth, smaller = nearer the camera). ``blendshapes`` holds MediaPipe's
    52 ARKit-style coefficients in [0, 1]. ``bbox`` is the landmark extent (x, y, w, h).
    Pose angles are degrees: yaw > 0 turns the face toward the image's right... see
    :func:`_pose_from_matrix` for the exact convention.
    """

    landmarks: npt.NDArray[np.float32]
    blendshapes: dict[str, float]
    bbox: tuple[float, float, float, float]
    image_size: tuple[int, int]
    detection_score: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    transform: npt.NDArray[np.float64] | None = field(default=None, repr=False, compare=False)

    @property
    def area(self) -> float:
        """Landmark-extent area in square pixels (how "large" the face is)."""
        return self.bbox[2] * self.bbox[3]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no landmarks) for manifests and logs."""
        return {
            "bbox": [round(v, 2) for v in self.bbox],
            "image_size": list(self.image_size),
            "detection_score": round(self.detection_score, 4),
            "yaw_deg": round(self.yaw_deg, 2),
            "pitch_deg": round(self.pitch_deg, 2),
            "roll_deg": round(self.roll_deg, 2),
        }


def _pose_from_matrix(m: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Yaw, pitch, roll in degrees from MediaPipe's facial transformation matrix.

    The rotation is decomposed as ``R = Ry(yaw) · Rx(pitch) · Rz(roll)`` so that yaw (the head
    turn that hides half the mouth) does not depend on pitch. Roll is positive for a
    counter-clockwise tilt as seen in the image.
    """
    r = m[:3, :3]
    yaw = math.degrees(math.atan2(r[0, 2], r[2, 2]))
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, -r[1, 2]))))
    roll = math.degrees(math.atan2(r[1, 0], r[1, 1]))
    return yaw, pitch, roll


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _close_tasks(*tasks: Any) -> None:
    with _quiet_native_stderr():
        for task in tasks:
            task.close()


def _check_rgb(rgb: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise ImageError(
            f"face analysis needs an RGB array of shape (H, W, 3), got {shape}; load the photo "
            "with lipcore.avatar.image.load_photo"
        )
    if rgb.dtype != np.uint8:
        raise ImageError(f"face analysis needs a uint8 RGB array, got dtype {rgb.dtype}")
    return np.ascontiguousarray(rgb)


class FaceAnalyzer:
    """Owns one MediaPipe FaceLandmarker (IMAGE mode) and the bundle's face detector.

    Thread-safe (calls are serialised); reuse one analyzer for many images. Use as a context
    manager or call :meth:`close`.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        max_faces: int = 4,
        limits: FaceLimits | None = None,
    ) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        self.model_path = resolve_face_model(model_path)
        self.max_faces = max_faces
        self.limits = limits or FaceLimits()
        self._lock = threading.Lock()
        try:
            bundle = self.model_path.read_bytes()
            with zipfile.ZipFile(self.model_path) as zf:
                detector_bytes = zf.read(_DETECTOR_MEMBER)
            self._warm = False  # the first detect() still prints start-up chatter
            with _quiet_native_stderr():
                self._landmarker, self._detector = self._create(vision, BaseOptions, bundle,
                                                                detector_bytes, max_faces)
        except (zipfile.BadZipFile, KeyError, RuntimeError, ValueError, OSError) as exc:
            raise FaceModelError(
                f"{self.model_path} is not a usable face landmarker bundle ({exc}); download "
                "face_landmarker.task again or unset LIPCORE_FACE_MODEL"
            ) from exc
        self._closed = False
        # Closed at the latest at interpreter exit (atexit runs finalizers while modules are
        # still intact; MediaPipe's own __del__ at teardown prints errors).
        self._finalizer = weakref.finalize(self, _close_tasks, self._landmarker, self._detector)

    @staticmethod
    def _create(
        vision: Any, BaseOptions: Any, bundle: bytes, detector_bytes: bytes, max_faces: int  # noqa: N803
    ) -> tuple[Any, Any]:
        landmarker = vision.FaceLandmarker.create_from_options(
            vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_buffer=bundle),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=max_faces,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
        )
        detector = vision.FaceDetector.create_from_options(
            vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=detector_bytes),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=0.2,
            )
        )
        return landmarker, detector

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Release the MediaPipe graphs."""
        if not self._closed:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- analysis --------------------------------------------------------------------------
    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[FaceAnalysis]:
        """Every face the landmarker finds, unvalidated, largest first (for measuring renders)."""
        import mediapipe as mp

        if self._closed:
            raise RuntimeError("FaceAnalyzer is closed")
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        with self._lock:
            quiet = contextlib.nullcontext() if self._warm else _quiet_native_stderr()
            with quiet:
                result = self._landmarker.detect(image)
                detections = (
                    self._detector.detect(image).detections if result.face_landmarks else []
                )
                self._warm = self._warm or bool(detections)
        boxes = [
            (
                float(d.bounding_box.origin_x),
                float(d.bounding_box.origin_y),
                float(d.bounding_box.width),
                float(d.bounding_box.height),
                float(d.categories[0].score) if d.categories else 0.0,
            )
            for d in detections
        ]
        faces = []
        for i, pts in enumerate(result.face_landmarks):
            lm = np.array([(p.x * w, p.y * h, p.z * w) for p in pts], dtype=np.float32)
            x0, y0 = float(lm[:, 0].min()), float(lm[:, 1].min())
            bbox = (x0, y0, float(lm[:, 0].max()) - x0, float(lm[:, 1].max()) - y0)
            # The detector box covers the inner face, the landmark extent the whole head
            # outline; any real overlap identifies the pair. No overlap → score 0.
            score = 0.0
            for bx, by, bw, bh, s in boxes:
                if _iou(bbox, (bx, by, bw, bh)) > 0.2:
                    score = max(score, s)
            shapes: Mapping[str, float] = {}
            if result.face_blendshapes and i < len(result.face_blendshapes):
                shapes = {c.category_name: float(c.score) for c in result.face_blendshapes[i]}
            matrix = None
            yaw = pitch = roll = 0.0
            if result.facial_transformation_matrixes and i < len(
                result.facial_transformation_matrixes
            ):
                matrix = np.asarray(result.facial_transformation_matrixes[i], dtype=np.float64)
                yaw, pitch, roll = _pose_from_matrix(matrix)
            faces.append(
                FaceAnalysis(
                    landmarks=lm,
                    blendshapes=dict(shapes),
                    bbox=bbox,
                    image_size=(w, h),
                    detection_score=score,
                    yaw_deg=yaw,
                    pitch_deg=pitch,
                    roll_deg=roll,
                    transform=matrix,
                )
            )
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def analyze(
        self,
        rgb: npt.NDArray[np.uint8],
        *,
        multiple: Literal["largest", "refuse"] = "largest",
        source: str = "the photo",
    ) -> FaceAnalysis:
        """The one usable face of a photo, validated against :attr:`limits`.

        Raises :class:`NoFaceError`, :class:`NotAFaceError` (the detector does not believe the
        fitted mesh), :class:`MultipleFacesError` (``multiple="refuse"``),
        :class:`FaceTooSmallError` or :class:`HeadTurnedError`.
        """
        lim = self.limits
        found = self.detect(rgb)
        h, w = rgb.shape[:2]
        if not found:
            raise NoFaceError(
                f"no face found in {source} ({w}x{h}); use a photo with one person looking "
                "into the camera, face unobstructed and well lit"
            )
        faces = [f for f in found if f.detection_score >= lim.min_detection_score]
        if not faces:
            best = max(f.detection_score for f in found)
            raise NotAFaceError(
                f"{source} ({w}x{h}) does not look like a face: the face detector scores it "
                f"{best:.2f}, below the {lim.min_detection_score:.2f} needed; use a real photo "
                "of a person facing the camera"
            )
        if len(faces) > 1 and multiple == "refuse":
            raise MultipleFacesError(
                f"{len(faces)} faces found in {source}; crop the photo to one person, or allow "
                "several faces (the largest is used)"
            )
        if multiple not in ("largest", "refuse"):
            raise ValueError(f"multiple must be 'largest' or 'refuse', got {multiple!r}")
        face = faces[0]  # largest first
        if len(faces) > 1:
            log.info("%d faces in %s; using the largest", len(faces), source)
        face_w = face.bbox[2]
        if face_w < lim.min_face_px:
            raise FaceTooSmallError(
                f"the face in {source} is {face_w:.0f} px wide; at least {lim.min_face_px:.0f} "
                "px are needed for a usable mouth. Use a closer or larger photo (the face "
                "should span a quarter of the width or more)"
            )
        for axis, value, bound in (
            ("turned sideways (yaw)", face.yaw_deg, lim.max_yaw_deg),
            ("tilted up or down (pitch)", face.pitch_deg, lim.max_pitch_deg),
            ("tilted sideways (roll)", face.roll_deg, lim.max_roll_deg),
        ):
            if abs(value) > bound:
                raise HeadTurnedError(
                    f"the head in {source} is {axis} by {abs(value):.0f}°, more than the "
                    f"{bound:.0f}° a 2D avatar allows; use a frontal photo (looking into the "
                    "camera)"
                )
        return face
