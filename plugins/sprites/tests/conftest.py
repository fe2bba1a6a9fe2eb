"""The sprites suite's avatar: real atlas assets in an avatar directory with a head-moving mouth
track (the shared fixtures are in plugins/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from lipcore_sprites.backend import SpritesBackend

from lipcore.avatar.mouth import MouthModel
from lipcore.avatar.store import Avatar
from lipcore.testing import backend_test_avatar


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
