"""Avatars for the renderer tests: grace_hopper built once per back end (3 s loops), and the
smiling astronaut (teeth showing at rest: the hard case for closures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipcore.avatar.store import Avatar, build_avatar
from lipcore.engine import Engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="session")
def avatars(
    tmp_path_factory: pytest.TempPathFactory,
    grace_hopper_path: Path,
    face_model_path: Path,
    engine: Engine,
) -> dict[str, Avatar]:
    root = tmp_path_factory.mktemp("render-avatars")
    return {
        kind: build_avatar(
            grace_hopper_path,
            root / f"grace-{kind}",
            backend=kind,
            seconds=3.0,
            fps=25.0,
            engine=engine,
            face_model=face_model_path,
            avatar_id=f"grace-{kind}",
        )
        for kind in ("sprites", "mesh")
    }


@pytest.fixture(scope="session")
def smiling_avatars(
    tmp_path_factory: pytest.TempPathFactory,
    astronaut_rgb: np.ndarray,
    face_model_path: Path,
    engine: Engine,
) -> dict[str, Avatar]:
    root = tmp_path_factory.mktemp("render-smiling")
    return {
        kind: build_avatar(
            np.ascontiguousarray(astronaut_rgb),
            root / f"astronaut-{kind}",
            backend=kind,
            seconds=3.0,
            fps=25.0,
            engine=engine,
            face_model=face_model_path,
            avatar_id=f"astronaut-{kind}",
        )
        for kind in ("sprites", "mesh")
    }
