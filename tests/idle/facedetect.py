"""Landmarks and blendshapes for measuring idle frames: the FACE engineer's FaceAnalyzer when it
exists, else MediaPipe's FaceLandmarker directly (same model, IMAGE mode)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Detection:
    landmarks: np.ndarray  # (478, 3) pixels
    blendshapes: dict[str, float]


class Detector:
    def __init__(self, model_path: Path) -> None:
        self._analyzer = None
        self._mp = None
        try:
            from lipcore.avatar.face import FaceAnalyzer

            self._analyzer = FaceAnalyzer(model_path)
        except ImportError:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision

            opts = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(model_path)),
                running_mode=vision.RunningMode.IMAGE,
                output_face_blendshapes=True,
                num_faces=1,
            )
            self._mp = (mp, vision.FaceLandmarker.create_from_options(opts))

    def detect(self, rgb: np.ndarray) -> Detection | None:
        if self._analyzer is not None:
            found = self._analyzer.detect(rgb)
            if not found:
                return None
            f = found[0]
            return Detection(np.asarray(f.landmarks, np.float64), dict(f.blendshapes))
        assert self._mp is not None
        mp, lm = self._mp
        h, w = rgb.shape[:2]
        res = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        if not res.face_landmarks:
            return None
        pts = np.array([[p.x * w, p.y * h, p.z * w] for p in res.face_landmarks[0]])
        bs = {c.category_name: c.score for c in res.face_blendshapes[0]}
        return Detection(pts, bs)

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()
        elif self._mp is not None:
            self._mp[1].close()
