"""Fixtures shared by every test area (core, plugins): real photos, the face landmarker model,
and async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent
SHARED_MODELS = REPO.parent / "shared" / "models"


@pytest.fixture(scope="session")
def face_model_path() -> Path:
    """The MediaPipe face landmarker bundle (``../shared/models``, or ``LIPCORE_FACE_MODEL``)."""
    env = os.environ.get("LIPCORE_FACE_MODEL")
    path = Path(env) if env else SHARED_MODELS / "face_landmarker.task"
    if not path.is_file():
        # A missing model is a broken set-up, not a reason to pass: fail loudly.
        pytest.fail(f"face landmarker model not found at {path}: put face_landmarker.task in "
                    "../shared/models or set LIPCORE_FACE_MODEL", pytrace=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def _face_model_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point lipcore's model resolution at the shared model, and its cache at a temp dir, so
    no test ever reaches for the network."""
    shared = SHARED_MODELS / "face_landmarker.task"
    if shared.is_file():
        os.environ.setdefault("LIPCORE_FACE_MODEL", str(shared))
    os.environ.setdefault("LIPCORE_CACHE_DIR", str(tmp_path_factory.mktemp("lipcore-cache")))


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every ``async def`` test runs under anyio (no per-test marker needed)."""
    import inspect

    for item in items:
        fn = getattr(item, "function", None)
        if fn is not None and inspect.iscoroutinefunction(fn):
            item.add_marker(pytest.mark.anyio)
