"""Fixtures of the meshwarp tests: a real photo's mouth model, its meshdef in an avatar directory,
and a head-moving mouth track with the idle frames it implies (the photo warped per frame)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest
from lipcore_meshwarp.backend import MeshWarpBackend

from lipcore.avatar.face import FaceAnalysis, FaceAnalyzer
from lipcore.avatar.image import load_photo
from lipcore.avatar.mouth import MouthModel, build_mouth_model
from lipcore.avatar.store import Avatar
from lipcore.models import AvatarManifest, IdleInfo, MouthTrack, PhotoInfo


@pytest.fixture(scope="session")
def analyzer(face_model_path: Path) -> Iterator[FaceAnalyzer]:
    """The real MediaPipe landmarker (the root conftest fails loudly when its model is missing)."""
    with FaceAnalyzer(face_model_path) as fa:
        yield fa


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return load_photo(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


@pytest.fixture(scope="session")
def face(analyzer: FaceAnalyzer, photo: np.ndarray) -> FaceAnalysis:
    return analyzer.analyze(photo)


@pytest.fixture(scope="session")
def mouth_model(photo: np.ndarray, face: FaceAnalysis) -> MouthModel:
    return build_mouth_model(photo, face)


def head_motion(photo: np.ndarray, n: int = 8) -> list[tuple[float, ...]]:
    """Affines of a small head motion: ±1.5° roll about the face and sub-pixel shifts."""
    h, w = photo.shape[:2]
    cx, cy = w / 2, h / 2
    out = []
    for i in range(n):
        ph = 2 * math.pi * i / n
        m = cv2.getRotationMatrix2D((cx, cy), 1.5 * math.sin(ph), 1.0 + 0.01 * math.cos(ph))
        m[0, 2] += 2.3 * math.sin(ph) + 0.37
        m[1, 2] += 1.7 * math.cos(ph) - 0.61
        out.append(tuple(float(v) for v in m.ravel()))
    return out


@pytest.fixture(scope="session")
def avatar(
    tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray, mouth_model: MouthModel
) -> Avatar:
    """A mesh avatar directory (real meshdef and layers; the idle file is not needed here)."""
    d = tmp_path_factory.mktemp("mesh-avatar")
    mouth_model.save(d)
    assets = MeshWarpBackend().build_assets(mouth_model, d)
    track = MouthTrack(fps=25.0, affines=head_motion(photo))  # type: ignore[arg-type]
    manifest = AvatarManifest(
        avatar_id="hopper-mesh",
        created_at="2026-01-01T00:00:00+00:00",
        photo=PhotoInfo(file="photo.jpg", width=photo.shape[1], height=photo.shape[0]),
        roi=mouth_model.roi,
        lipsync={"type": "mesh", **assets},
        idle=IdleInfo(file="idle.mp4", fps=25.0, frames=8, seconds=0.32, mouth_track="t.json"),
    )
    return Avatar(d, manifest, track)


@pytest.fixture(scope="session")
def idle_frames(photo: np.ndarray, avatar: Avatar) -> list[np.ndarray]:
    """What the idle loop shows: the photo moved by each frame's affine (mouth at rest)."""
    h, w = photo.shape[:2]
    return [
        cv2.warpAffine(photo, np.asarray(a).reshape(2, 3), (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
        for a in avatar.mouth_track.affines
    ]  # fmt: skip
