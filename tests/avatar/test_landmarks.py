"""Landmark index sets and the geometry helpers, checked on a real face."""

from __future__ import annotations

import numpy as np
import pytest

from lipcore.avatar import landmarks as lmk
from lipcore.avatar.face import FaceAnalyzer


def test_index_sets_are_consistent() -> None:
    for name in ("LIPS_OUTER", "LIPS_INNER", "LEFT_EYE", "RIGHT_EYE", "FACE_OVAL", "JAW"):
        idx = getattr(lmk, name)
        assert len(idx) == len(set(idx)), f"{name} repeats an index"
        assert all(0 <= i < lmk.NUM_LANDMARKS for i in idx)
    assert len(lmk.LIPS_OUTER) == 20 and len(lmk.LIPS_INNER) == 20
    assert lmk.MOUTH_CORNERS == (61, 291)
    assert set(lmk.MOUTH_CORNERS) <= set(lmk.LIPS_OUTER)
    assert set(lmk.MOUTH_INNER_CORNERS) <= set(lmk.LIPS_INNER)
    assert set(lmk.UPPER_LIP_INNER) | set(lmk.LOWER_LIP_INNER) == set(lmk.LIPS_INNER)
    assert set(lmk.JAW) <= set(lmk.FACE_OVAL) and lmk.CHIN in lmk.JAW


def test_index_sets_match_mediapipe_connections() -> None:
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections as C

    lips = {i for c in C.FACE_LANDMARKS_LIPS for i in (c.start, c.end)}
    assert lips == set(lmk.LIPS_OUTER) | set(lmk.LIPS_INNER)
    left = {i for c in C.FACE_LANDMARKS_LEFT_EYE for i in (c.start, c.end)}
    right = {i for c in C.FACE_LANDMARKS_RIGHT_EYE for i in (c.start, c.end)}
    assert left == set(lmk.LEFT_EYE) and right == set(lmk.RIGHT_EYE)
    oval = {i for c in C.FACE_LANDMARKS_FACE_OVAL for i in (c.start, c.end)}
    assert oval == set(lmk.FACE_OVAL)


def test_geometry_on_real_face(analyzer: FaceAnalyzer, grace_rgb: np.ndarray) -> None:
    lm = analyzer.analyze(grace_rgb).landmarks
    # grace_hopper: closed mouth ~68 px wide (DESIGN probe), eyes open.
    assert 55 < lmk.mouth_width(lm) < 85
    assert lmk.mouth_aperture(lm) < 0.05
    assert 0.15 < lmk.eye_aspect(lm) < 0.45
    # The subject's right eye is on the image's left.
    assert lmk.points(lm, lmk.RIGHT_EYE)[:, 0].mean() < lmk.points(lm, lmk.LEFT_EYE)[:, 0].mean()
    cx, cy = lmk.mouth_center(lm)
    nose_y = lm[lmk.NOSE_TIP, 1]
    assert nose_y < cy < lm[lmk.CHIN, 1]
    assert lm[61, 0] < cx < lm[291, 0]


def test_aperture_follows_inner_lip_gap() -> None:
    lm = np.zeros((478, 3))
    lm[61], lm[291] = (100, 200, 0), (200, 200, 0)
    for up, low in ((82, 87), (13, 14), (312, 317)):
        lm[up] = (150, 195, 0)
        lm[low] = (150, 215, 0)
    assert lmk.inner_lip_gap(lm) == pytest.approx(20.0)
    assert lmk.mouth_aperture(lm) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="478"):
        lmk.mouth_width(np.zeros((10, 2)))
