"""Shared fixtures of the idle-loop tests: one landmarker, the photos and their landmarks."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from facedetect import Detection, Detector


@pytest.fixture(scope="session")
def detector(face_model_path: Path) -> Iterator[Detector]:
    det = Detector(face_model_path)
    yield det
    det.close()


@pytest.fixture(scope="session")
def grace_rgb(grace_hopper_path: Path) -> np.ndarray:
    return np.asarray(Image.open(grace_hopper_path).convert("RGB"))


@pytest.fixture(scope="session")
def grace_face(detector: Detector, grace_rgb: np.ndarray) -> Detection:
    found = detector.detect(grace_rgb)
    assert found is not None
    return found
