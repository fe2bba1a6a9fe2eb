"""Fixtures of the Wav2Lip tests: a small generated model of Wav2Lip's signature, a real photo's
avatar assets (MediaPipe landmarks, the mouth model) and a head-moving stand-in idle loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from lipcore_wav2lip.backend import Wav2LipBackend
from lipcore_wav2lip.testing import head_motion, tiny_model

from lipcore.models import MouthTrack


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w2l") / "tiny.onnx"
    tiny_model(path)
    return path


@dataclass
class StandInAvatar:
    """The parts of ``lipcore.avatar.store.Avatar`` the renderer uses, over a real asset dir."""

    directory: Path
    photo_rgb: np.ndarray
    mouth_track: MouthTrack
    lipsync: dict[str, Any]
    id: str = "hopper"
    _frames: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def manifest(self) -> Any:
        return SimpleNamespace(lipsync=self.lipsync)

    def asset(self, rel: str) -> Path:
        return self.directory / rel

    def photo(self) -> np.ndarray:
        return self.photo_rgb

    def idle_frames(self) -> list[np.ndarray]:
        if self._frames is None:
            h, w = self.photo_rgb.shape[:2]
            self._frames = [
                cv2.warpAffine(
                    self.photo_rgb,
                    np.asarray(a).reshape(2, 3),
                    (w, h),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                for a in self.mouth_track.affines
            ]
        return self._frames


@pytest.fixture(scope="session")
def hopper_face(grace_hopper_path: Path, face_model_path: Path) -> tuple[np.ndarray, Any, Any]:
    from lipcore.avatar.face import FaceAnalyzer
    from lipcore.avatar.image import load_photo
    from lipcore.avatar.mouth import build_mouth_model

    photo = load_photo(grace_hopper_path)
    with FaceAnalyzer(face_model_path) as analyzer:
        face = analyzer.analyze(photo)
    return photo, face, build_mouth_model(photo, face)


@pytest.fixture(scope="session")
def hopper_avatar(
    hopper_face: tuple[np.ndarray, Any, Any],
    tiny_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> StandInAvatar:
    photo, face, mouth = hopper_face
    out = tmp_path_factory.mktemp("hopper_avatar")
    mouth.save(out)
    assets = Wav2LipBackend(tiny_model_path).build_assets(mouth, out, landmarks=face.landmarks)
    roi = mouth.roi
    center = (roi.x + roi.w / 2, roi.y + roi.h / 2)
    return StandInAvatar(
        directory=out,
        photo_rgb=photo,
        mouth_track=MouthTrack(fps=25.0, affines=head_motion(20, center)),
        lipsync={"type": "onnx", **assets},
    )
