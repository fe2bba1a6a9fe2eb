"""A 512×512 lipcore avatar for the LiveKit tests (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipcore.avatar.store import Avatar, build_avatar

# The tests import their fakes as a top-level module (pytest runs with importlib mode).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def lk_avatar(
    tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path, face_model_path: Path
) -> Avatar:
    photo = np.asarray(Image.open(grace_hopper_path).convert("RGB"))
    return build_avatar(
        np.ascontiguousarray(photo[40:552, :512]),
        tmp_path_factory.mktemp("lk") / "grace",
        backend="sprites",
        seconds=3.0,
        fps=25.0,
        face_model=face_model_path,
        avatar_id="grace-lk",
    )
