"""Avatars for the live renderer tests: grace_hopper cropped to 512×512, built once per back
end (3 s idle loops at 25 fps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipcore.avatar.store import Avatar, build_avatar
from lipcore.engine import Engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="session")
def live_avatars(
    tmp_path_factory: pytest.TempPathFactory,
    grace_hopper_path: Path,
    face_model_path: Path,
    engine: Engine,
) -> dict[str, Avatar]:
    root = tmp_path_factory.mktemp("live-avatars")
    photo = np.asarray(Image.open(grace_hopper_path).convert("RGB"))
    photo = np.ascontiguousarray(photo[40:552, :512])
    return {
        kind: build_avatar(
            photo,
            root / f"grace512-{kind}",
            backend=kind,
            seconds=3.0,
            fps=25.0,
            engine=engine,
            face_model=face_model_path,
            avatar_id=f"grace512-{kind}",
        )
        for kind in ("sprites", "mesh")
    }
