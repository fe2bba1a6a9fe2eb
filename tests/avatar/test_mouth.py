"""The mouth model, measured: each viseme is composited into the photo and the real MediaPipe
landmarker re-detects the mouth geometry on it."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lipcore.avatar import landmarks as lmk
from lipcore.avatar.face import FaceAnalyzer
from lipcore.avatar.mouth import (
    LIP_SHAPES,
    VISEME_CLASSES,
    MouthModel,
    MouthModelError,
    build_mouth_model,
)
from lipcore.errors import InputError

RGB = npt.NDArray[np.uint8]


def composite(photo: RGB, model: MouthModel, weights: dict[str, float]) -> RGB:
    patch = model.render(weights).astype(np.float32)
    r = model.roi
    out = photo.astype(np.float32).copy()
    a = patch[..., 3:] / 255.0
    region = out[r.y : r.y + r.h, r.x : r.x + r.w]
    out[r.y : r.y + r.h, r.x : r.x + r.w] = region * (1 - a) + patch[..., :3] * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Measured:
    aperture: float
    width: float  # relative to the photo's own mouth width
    jaw_open: float


@dataclass
class Subject:
    photo: RGB
    model: MouthModel
    measured: dict[str, Measured]


def _measure(analyzer: FaceAnalyzer, img: RGB, width0: float) -> Measured:
    faces = analyzer.detect(img)
    assert faces, "the landmarker lost the face on a rendered viseme"
    lm = faces[0].landmarks
    return Measured(
        aperture=lmk.mouth_aperture(lm),
        width=lmk.mouth_width(lm) / width0,
        jaw_open=faces[0].blendshapes.get("jawOpen", 0.0),
    )


@pytest.fixture(scope="module", params=["grace_hopper", "astronaut"])
def subject(
    request: pytest.FixtureRequest, analyzer: FaceAnalyzer, grace_rgb: RGB, astronaut_rgb: RGB
) -> Subject:
    photo = grace_rgb if request.param == "grace_hopper" else np.ascontiguousarray(astronaut_rgb)
    face = analyzer.analyze(photo)
    model = build_mouth_model(photo, face)
    width0 = lmk.mouth_width(face.landmarks)
    measured = {v: _measure(analyzer, composite(photo, model, {v: 1.0}), width0)
                for v in VISEME_CLASSES}  # fmt: skip
    measured["_photo"] = _measure(analyzer, photo, width0)
    return Subject(photo=photo, model=model, measured=measured)


def test_classes_follow_the_contract_order() -> None:
    assert VISEME_CLASSES == (
        "Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH"
    )  # fmt: skip
    assert set(LIP_SHAPES) == set(VISEME_CLASSES) - {"Rest"}


def test_rest_is_the_photos_own_mouth(subject: Subject) -> None:
    m = subject.model
    r = m.roi
    patch = m.render({})
    assert patch.shape == (r.h, r.w, 4) and patch.dtype == np.uint8
    assert np.array_equal(patch[..., :3], subject.photo[r.y : r.y + r.h, r.x : r.x + r.w])
    # Rest measured like the photo itself.
    rest, photo = subject.measured["Rest"], subject.measured["_photo"]
    assert rest.aperture == pytest.approx(photo.aperture, abs=0.01)
    assert rest.width == pytest.approx(1.0, abs=0.01)
    assert m.rest["aperture"] == pytest.approx(photo.aperture, abs=0.01)


def test_mask_is_feathered_and_covers_the_mouth(subject: Subject) -> None:
    m = subject.model
    assert m.mask.shape == (m.roi.h, m.roi.w) and m.mask.dtype == np.float32
    border = np.concatenate([m.mask[0], m.mask[-1], m.mask[:, 0], m.mask[:, -1]])
    assert float(border.max()) < 0.02  # the patch never shows its edge
    # Full opacity over the lips, and a soft ramp (many intermediate values), not a hard cut.
    lips = lmk.points(subject.model.landmarks, lmk.LIPS_OUTER) - [m.roi.x, m.roi.y]
    xs, ys = np.round(lips[:, 0]).astype(int), np.round(lips[:, 1]).astype(int)
    assert float(m.mask[ys, xs].min()) > 0.98
    assert np.count_nonzero((m.mask > 0.1) & (m.mask < 0.9)) > 0.05 * m.mask.size


def test_open_vowels_open_wider_than_e(subject: Subject) -> None:
    ms = subject.measured
    assert ms["AI"].aperture > ms["E"].aperture + 0.08, ms
    assert ms["O"].aperture > ms["E"].aperture + 0.08, ms
    assert ms["AI"].aperture > 0.25 and ms["O"].aperture > 0.25
    # The jaw really drops (the landmarker's own blendshape agrees).
    assert ms["AI"].jaw_open > ms["MBP"].jaw_open + 0.04


def test_bilabial_closes_the_mouth(subject: Subject) -> None:
    assert subject.measured["MBP"].aperture < 0.03, subject.measured["MBP"]


def test_e_is_wider_than_rounded_visemes(subject: Subject) -> None:
    ms = subject.measured
    for rounded in ("U", "WQ", "O"):
        assert ms["E"].width > ms[rounded].width + 0.12, (rounded, ms)
    assert ms["E"].width > 0.97  # spread (a broad smile is already near its widest)


def test_every_viseme_keeps_a_detectable_face(subject: Subject) -> None:
    for v in VISEME_CLASSES:
        m = subject.measured[v]
        assert 0.6 < m.width < 1.25, (v, m)


def test_closing_a_smile_covers_the_teeth_with_lip(
    astronaut_rgb: RGB, analyzer: FaceAnalyzer
) -> None:
    photo = np.ascontiguousarray(astronaut_rgb)
    face = analyzer.analyze(photo)
    model = build_mouth_model(photo, face)
    assert model.rest["aperture"] > 0.1 and model.rest["teeth_visible"] == 1.0
    r = model.roi
    inner = lmk.points(face.landmarks, lmk.LIPS_INNER) - [r.x, r.y]
    teeth = np.zeros((r.h, r.w), np.uint8)
    cv2.fillPoly(teeth, [np.round(inner).astype(np.int32)], 1)
    teeth = cv2.erode(teeth, np.ones((3, 3), np.uint8)).astype(bool)

    def white_share(rgba: RGB) -> float:
        """Share of teeth-white pixels (bright, nearly colourless) where the teeth were."""
        hsv = cv2.cvtColor(np.ascontiguousarray(rgba[..., :3]), cv2.COLOR_RGB2HSV)[teeth]
        return float(np.mean((hsv[:, 1] < 40) & (hsv[:, 2] > 170)))

    # Teeth before; afterwards lip and skin tones only, no white left where the teeth were.
    assert white_share(model.render({})) > 0.25
    assert white_share(model.render({"MBP": 1.0})) < 0.03


def test_interior_is_shaded_not_flat(grace_rgb: RGB, analyzer: FaceAnalyzer) -> None:
    face = analyzer.analyze(grace_rgb)
    model = build_mouth_model(grace_rgb, face)
    patch = model.render({"AI": 1.0})
    poly = model.opening_polygon({"AI": 1.0})
    inside = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(poly).astype(np.int32)], 1)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8)).astype(bool)
    lum = cv2.cvtColor(patch, cv2.COLOR_RGBA2GRAY).astype(np.float32)
    vals = lum[inside]
    assert vals.size > 200
    # Teeth (bright) and cavity (dark) both present, with a wide spread of tones in between.
    assert np.percentile(vals, 95) - np.percentile(vals, 5) > 80
    assert np.percentile(vals, 10) < 50
    # Separate teeth: along the row just above the incisal edge, brightness dips at the seams.
    t = model.targets({"AI": 1.0}).interior
    frame = model._frame
    assert frame is not None
    tip = frame.to_photo(np.array([[0.0, float(np.interp(0.0, t.u_samples, t.upper_tip)) - 0.03]]))
    y = round(tip[0, 1] - model.roi.y)
    cx = round(frame.center[0] - model.roi.x)
    half = int(0.2 * frame.width)
    row = lum[y, cx - half : cx + half]
    smooth = np.convolve(row, np.ones(5) / 5, mode="same")[3:-3]
    detail = row[3:-3] - smooth
    assert float(np.abs(detail).max()) > 8, row


def test_blending_is_continuous(grace_rgb: RGB, analyzer: FaceAnalyzer) -> None:
    face = analyzer.analyze(grace_rgb)
    model = build_mouth_model(grace_rgb, face)
    width0 = lmk.mouth_width(face.landmarks)
    apertures = []
    prev = model.render({}).astype(np.float32)
    steps = []
    for t in (0.25, 0.5, 0.75, 1.0):
        cur = model.render({"AI": t}).astype(np.float32)
        steps.append(float(np.abs(cur - prev).mean()))
        prev = cur
        apertures.append(
            _measure(analyzer, composite(grace_rgb, model, {"AI": t}), width0).aperture
        )
    assert all(b >= a - 0.01 for a, b in itertools.pairwise(apertures)), apertures
    assert apertures[-1] > apertures[0] + 0.15
    # No step of a quarter weight changes the patch much more than another (no jumps).
    assert max(steps) < 3.0 * min(steps) + 1.0, steps
    # Weights are normalised: the same blend in any spelling gives the same pixels.
    a = model.render({"AI": 0.6, "O": 0.6})
    b = model.render({"AI": 0.5, "O": 0.5})
    assert np.array_equal(a, b)


def test_bad_weights_are_refused(grace_rgb: RGB, analyzer: FaceAnalyzer) -> None:
    model = build_mouth_model(grace_rgb, analyzer.analyze(grace_rgb))
    with pytest.raises(MouthModelError, match="unknown viseme 'Ah'"):
        model.render({"Ah": 1.0})
    with pytest.raises(MouthModelError, match="not a number"):
        model.render({"AI": float("nan")})


def test_small_or_bad_photos_are_refused(grace_rgb: RGB, analyzer: FaceAnalyzer) -> None:
    face = analyzer.analyze(grace_rgb)
    with pytest.raises(MouthModelError, match="RGB uint8"):
        build_mouth_model(grace_rgb.astype(np.float32), face)  # type: ignore[arg-type]
    small = cv2.resize(grace_rgb, (128, 150), interpolation=cv2.INTER_AREA)
    tiny_face = dataclasses.replace(face, landmarks=face.landmarks * 0.25)
    with pytest.raises(MouthModelError, match="px wide") as info:
        build_mouth_model(small, tiny_face)
    assert isinstance(info.value, InputError)


def test_save_writes_mask_and_description(
    grace_rgb: RGB, analyzer: FaceAnalyzer, tmp_path: Path
) -> None:
    model = build_mouth_model(grace_rgb, analyzer.analyze(grace_rgb))
    files = model.save(tmp_path)
    assert files["mask"] == "mask_mouth.png"
    mask = cv2.imread(str(tmp_path / files["mask"]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (model.roi.h, model.roi.w) and mask.dtype == np.uint8
    assert np.abs(mask.astype(np.float32) / 255 - model.mask).max() <= 1 / 255 + 1e-6
    import json

    info = json.loads((tmp_path / files["mouth"]).read_text())
    assert info["classes"] == list(VISEME_CLASSES)
    assert info["roi"] == model.roi.model_dump()
