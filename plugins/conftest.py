"""Fixtures shared by the lipsync back-end test suites (plugins/sprites, plugins/meshwarp): a real
photo's mouth model, and the idle frames a head-moving mouth track implies. Each suite's own
conftest adds the ``avatar`` fixture with its back end's assets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest

from lipcore.avatar.face import FaceAnalysis, FaceAnalyzer
from lipcore.avatar.image import load_photo
from lipcore.avatar.mouth import MouthModel, build_mouth_model
from lipcore.avatar.store import Avatar
from lipcore.testing import moved_frames


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
def idle_frames(photo: np.ndarray, avatar: Avatar) -> list[np.ndarray]:
    """What the idle loop shows: the photo moved by each frame's affine (mouth at rest)."""
    return moved_frames(photo, avatar.mouth_track.affines)
