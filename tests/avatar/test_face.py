"""FaceAnalyzer on real photos, and every kind of unusable face."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipcore.avatar import landmarks as lmk
from lipcore.avatar.errors import (
    FaceModelError,
    FaceTooSmallError,
    HeadTurnedError,
    ImageError,
    MultipleFacesError,
    NoFaceError,
    NotAFaceError,
)
from lipcore.avatar.face import (
    MIN_DETECTION_SCORE,
    FaceAnalyzer,
    FaceLimits,
    _pose_from_matrix,
)


def test_grace_hopper(analyzer: FaceAnalyzer, grace_rgb: np.ndarray) -> None:
    face = analyzer.analyze(grace_rgb)
    assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
    assert face.image_size == (512, 600)
    assert len(face.blendshapes) == 52 and "jawOpen" in face.blendshapes
    assert face.detection_score > 0.9
    x, y, w, h = face.bbox
    assert 150 < w < 230 and 150 < h < 250 and x > 0 and y > 0
    assert (face.landmarks[:, 0] >= x - 1e-3).all() and (face.landmarks[:, 0] <= x + w + 1e-3).all()
    assert max(abs(face.yaw_deg), abs(face.pitch_deg), abs(face.roll_deg)) < 15
    assert face.blendshapes["jawOpen"] < 0.1  # closed mouth


def test_astronaut_smiles(analyzer: FaceAnalyzer, astronaut_rgb: np.ndarray) -> None:
    face = analyzer.analyze(astronaut_rgb)
    assert face.detection_score > 0.9
    smile = (face.blendshapes["mouthSmileLeft"] + face.blendshapes["mouthSmileRight"]) / 2
    assert smile > 0.5
    assert lmk.mouth_aperture(face.landmarks) > 0.05  # teeth show: the rest mouth is open


def test_landscape_has_no_face(analyzer: FaceAnalyzer) -> None:
    from skimage import data

    for img in (np.asarray(data.coffee()), np.asarray(data.rocket())):
        with pytest.raises(NoFaceError, match="no face found") as info:
            analyzer.analyze(img, source="landscape.jpg")
        assert "landscape.jpg" in str(info.value) and info.value.code == "no_face"


def test_colour_wheel_is_not_a_face(analyzer: FaceAnalyzer, wheel_rgb: np.ndarray) -> None:
    raw = analyzer.detect(wheel_rgb)
    assert raw, "the landmarker itself accepts this wheel; the gate below is what refuses it"
    assert max(f.detection_score for f in raw) < MIN_DETECTION_SCORE
    with pytest.raises(NotAFaceError, match=r"does not look like a face.*0\.75"):
        analyzer.analyze(wheel_rgb)


def test_face_too_small(analyzer: FaceAnalyzer, grace_rgb: np.ndarray) -> None:
    small = np.asarray(Image.fromarray(grace_rgb).resize((100, 117)))
    assert analyzer.detect(small), "still detected, just small"
    with pytest.raises(FaceTooSmallError, match=r"\d+ px wide; at least 64 px"):
        analyzer.analyze(small)


def test_two_faces_largest_or_refuse(analyzer: FaceAnalyzer, two_faces_rgb: np.ndarray) -> None:
    raw = analyzer.detect(two_faces_rgb)
    assert len(raw) == 2 and raw[0].area >= raw[1].area
    face = analyzer.analyze(two_faces_rgb)
    assert face.area == raw[0].area
    with pytest.raises(MultipleFacesError, match="2 faces"):
        analyzer.analyze(two_faces_rgb, multiple="refuse")


def test_tilted_head_is_refused(analyzer: FaceAnalyzer, grace_rgb: np.ndarray) -> None:
    tilted = np.asarray(Image.fromarray(grace_rgb).rotate(45, expand=True, fillcolor=(128,) * 3))
    face = analyzer.detect(tilted)[0]
    assert 35 < face.roll_deg < 55  # counter-clockwise in the image is positive roll
    with pytest.raises(
        HeadTurnedError, match=r"tilted sideways \(roll\) by \d+°, more than the 30°"
    ):
        analyzer.analyze(tilted)
    mild = np.asarray(Image.fromarray(grace_rgb).rotate(-15, expand=True, fillcolor=(128,) * 3))
    assert analyzer.analyze(mild).roll_deg == pytest.approx(-15, abs=6)


def test_yaw_gate_on_real_face(face_model_path: Path, grace_rgb: np.ndarray) -> None:
    face_yaw = None
    with FaceAnalyzer(face_model_path, limits=FaceLimits(max_yaw_deg=0.0)) as strict:
        face_yaw = strict.detect(grace_rgb)[0].yaw_deg
        with pytest.raises(HeadTurnedError, match=r"turned sideways \(yaw\)"):
            strict.analyze(grace_rgb)
    with FaceAnalyzer(face_model_path, limits=FaceLimits(max_yaw_deg=abs(face_yaw) + 1)) as ok:
        ok.analyze(grace_rgb)


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = ry @ rx @ rz
    return m


@pytest.mark.parametrize("angles", [(0, 0, 0), (35, 0, 0), (-20, 10, 5), (10, -30, -40)])
def test_pose_decomposition(angles: tuple[float, float, float]) -> None:
    assert _pose_from_matrix(_rot(*angles)) == pytest.approx(angles, abs=1e-6)


def test_bad_arrays_and_closed_analyzer(face_model_path: Path) -> None:
    fa = FaceAnalyzer(face_model_path)
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        fa.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        fa.detect(np.zeros((10, 10, 3), np.float32))
    fa.close()
    fa.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        fa.detect(np.zeros((10, 10, 3), np.uint8))


def test_not_a_model_file(tmp_path: Path) -> None:
    bogus = tmp_path / "face_landmarker.task"
    bogus.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FaceModelError, match="not a usable face landmarker bundle"):
        FaceAnalyzer(bogus)
