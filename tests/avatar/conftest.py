"""Fixtures of the avatar tests: one shared FaceAnalyzer and real photos made awkward."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from lipcore.avatar.face import FaceAnalyzer
from lipcore.avatar.image import load_photo

RGB = npt.NDArray[np.uint8]


@pytest.fixture(scope="session")
def analyzer(face_model_path: Path) -> Iterator[FaceAnalyzer]:
    """One landmarker for the whole session: creating one costs far more than using it."""
    with FaceAnalyzer(face_model_path) as fa:
        yield fa


@pytest.fixture(scope="session")
def grace_rgb(grace_hopper_path: Path) -> RGB:
    return load_photo(grace_hopper_path)


def colour_wheel(n: int = 512) -> RGB:
    """A hue wheel, saturation rising and value falling outward, on grey, turned a quarter.

    MediaPipe's landmarker fits a face mesh to exactly this image (its internal detector scores
    it ~0.55): the case the separate detector gate exists for.
    """
    from matplotlib.colors import hsv_to_rgb

    y, x = np.mgrid[:n, :n] - n / 2 + 0.5
    hue = ((np.arctan2(y, x) + np.pi / 2) / (2 * np.pi)) % 1.0
    r = np.hypot(x, y) / (n / 2 * 0.95)
    hsv = np.stack([hue, np.clip(r, 0, 1), np.clip(1.5 - r, 0, 1)], axis=-1)
    rgb = hsv_to_rgb(hsv)
    rgb[r > 1] = 0.5
    return (rgb * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def wheel_rgb() -> RGB:
    return colour_wheel()


@pytest.fixture(scope="session")
def two_faces_rgb(grace_rgb: RGB, astronaut_rgb: RGB) -> RGB:
    """grace_hopper (left) and the astronaut's face enlarged to a similar size (right)."""
    crop = Image.fromarray(astronaut_rgb).crop((100, 0, 356, 256)).resize((512, 512))
    h = grace_rgb.shape[0]
    out = np.full((h, 1024, 3), 128, np.uint8)
    out[:, :512] = grace_rgb[:, :512]
    top = (h - 512) // 2
    out[top : top + 512, 512:] = np.asarray(crop)
    return out
