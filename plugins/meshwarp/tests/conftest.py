"""The meshwarp suite's avatar: real meshdef assets in an avatar directory with a head-moving mouth
track (the shared fixtures are in plugins/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from lipcore_meshwarp.backend import MeshWarpBackend

from lipcore.avatar.mouth import MouthModel
from lipcore.avatar.store import Avatar
from lipcore.testing import backend_test_avatar


@pytest.fixture(scope="session")
def avatar(
    tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray, mouth_model: MouthModel
) -> Avatar:
    """A mesh avatar directory (real meshdef and layers; the idle file is not needed here)."""
    return backend_test_avatar(
        tmp_path_factory.mktemp("mesh-avatar"),
        photo,
        mouth_model,
        MeshWarpBackend(),
        avatar_id="hopper-mesh",
    )
