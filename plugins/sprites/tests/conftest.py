"""Fixtures of the sprites tests: a real photo's mouth model, its atlas in an avatar directory,
and a head-moving mouth track with the idle frames it implies (the photo warped per frame)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from lipcore_sprites.backend import SpritesBackend

from lipcore.avatar.face import FaceAnalysis, FaceAnalyzer
from lipcore.avatar.image import load_photo
from lipcore.avatar.mouth import MouthModel, build_mouth_model
from lipcore.avatar.store import Avatar
from lipcore.testing import backend_test_avatar, moved_frames


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


@pytest.fixture(scope="session")
def avatar(
    tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray, mouth_model: MouthModel
) -> Avatar:
    """A sprites avatar directory (real atlas; the manifest's idle file is not needed here)."""
    return backend_test_avatar(
        tmp_path_factory.mktemp("sprites-avatar"),
        photo,
        mouth_model,
        SpritesBackend(),
        avatar_id="hopper-sprites",
    )


@pytest.fixture(scope="session")
def idle_frames(photo: np.ndarray, avatar: Avatar) -> list[np.ndarray]:
    """What the idle loop shows: the photo moved by each frame's affine (mouth at rest)."""
    return moved_frames(photo, avatar.mouth_track.affines)
