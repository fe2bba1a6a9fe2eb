"""Bilabial closures on the mesh back end, measured the way ``lipcore eval sync`` measures
them: on a smiling photo whose rest mouth shows its teeth (``skimage.data.astronaut``), where
closing the lips is hardest. Partial closures must read as nearly closed, and a closure held
for a single frame must survive the talking video's H.264 encode."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from lipcore_meshwarp.backend import MeshWarpRenderer, build_meshdef

from lipcore.avatar.face import FaceAnalyzer
from lipcore.avatar.landmarks import mouth_aperture
from lipcore.avatar.mouth import build_mouth_model
from lipcore.evaluation import CLOSED_APERTURE, measure_apertures
from lipcore.media import VideoWriter
from lipcore.render import TALK_CRF, TALK_X264_PARAMS

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def smiling(
    tmp_path_factory: pytest.TempPathFactory, analyzer: FaceAnalyzer, astronaut_rgb: np.ndarray
) -> MeshWarpRenderer:
    photo = np.ascontiguousarray(astronaut_rgb)
    model = build_mouth_model(photo, analyzer.analyze(photo))
    d = tmp_path_factory.mktemp("astronaut-mesh")
    build_meshdef(model, d)
    return MeshWarpRenderer.from_directory(d, [IDENTITY])


def _aperture(analyzer: FaceAnalyzer, frame: np.ndarray) -> float:
    faces = analyzer.detect(frame)
    assert faces, "the landmarker lost the face"
    return float(mouth_aperture(max(faces, key=lambda f: f.bbox[2] * f.bbox[3]).landmarks))


def test_partial_closures_read_as_nearly_closed(
    smiling: MeshWarpRenderer, analyzer: FaceAnalyzer, astronaut_rgb: np.ndarray
) -> None:
    photo = np.ascontiguousarray(astronaut_rgb)

    def ap(weights: Mapping[str, float]) -> float:
        return _aperture(analyzer, smiling.render(photo, idle_index=0, weights=weights))

    assert ap({}) > 0.1, "the astronaut rests with an open smile"
    assert ap({"MBP": 1.0}) < 0.03
    # 70 % of the way to a closure, rounded vowels around it: the lips nearly touch, so the
    # gap is a contact line, not a window onto the teeth (it measured 0.12 when it was).
    assert ap({"MBP": 0.72, "U": 0.19, "O": 0.09}) < 0.09
    # And the mouth still opens for the vowels themselves.
    assert ap({"O": 1.0}) > 0.25


def test_a_one_frame_closure_survives_the_encode(
    smiling: MeshWarpRenderer, analyzer: FaceAnalyzer, astronaut_rgb: np.ndarray, tmp_path: Path
) -> None:
    photo = np.ascontiguousarray(astronaut_rgb)
    # "a-ba-ba-b…": open vowels with a single closed frame between them, as at 25 fps.
    shapes: list[dict[str, float]] = []
    for _ in range(4):
        shapes += [{"AI": 0.8}, {"AI": 1.0}, {"AI": 0.6, "MBP": 0.4}, {"MBP": 1.0}, {"O": 0.7}]
    path = tmp_path / "closures.mp4"
    with VideoWriter(path, 25.0, crf=TALK_CRF, x264_params=TALK_X264_PARAMS) as writer:
        for w in shapes:
            writer.write(smiling.render(photo, idle_index=0, weights=w))
    apertures = measure_apertures(path, analyzer=analyzer)
    closed = [apertures[i] for i, w in enumerate(shapes) if w == {"MBP": 1.0}]
    opened = [apertures[i] for i, w in enumerate(shapes) if w == {"AI": 1.0}]
    assert len(closed) == 4 and max(closed) < CLOSED_APERTURE, closed
    assert min(opened) > 0.25, opened
