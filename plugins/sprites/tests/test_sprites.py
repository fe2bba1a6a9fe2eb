"""lipcore-sprites measured: the atlas it builds (contract + content), the frames it renders from
viseme weights (no seam at Rest, linear cross-fades, premultiplied edges), placement by the
mouth track to sub-pixel accuracy, clear errors, and discovery through the plugin system.

Everything runs on a real photo (grace_hopper) with the real MediaPipe landmarker and the real
mouth model; the idle frames are the photo moved by a known head motion (see conftest)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from lipcore_sprites import SpritesBackend, SpritesRenderer
from lipcore_sprites.backend import blend_weights

from lipcore.avatar.errors import AvatarLoadError
from lipcore.avatar.face import FaceAnalyzer
from lipcore.avatar.mouth import MouthModel
from lipcore.avatar.store import Avatar
from lipcore.engine import Engine
from lipcore.errors import LipcoreError, PluginNotFoundError
from lipcore.models import AtlasJson
from lipcore.testing import (
    LipsyncBackendConformance,
    landmark_follow_errors,
    roi_coords,
)

CLASSES = ["Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH"]
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
F64 = npt.NDArray[np.float64]


# ---------------------------------------------------------------------- measuring helpers


def border_band(
    matrix: F64, shape: tuple[int, ...], w: int, h: int, px: float
) -> npt.NDArray[np.bool_]:
    """Frame pixels within ``px`` of the placed ROI's border (inside or outside)."""
    u, v = roi_coords(matrix, shape)
    inside_outer = (u > -px) & (u < w - 1 + px) & (v > -px) & (v < h - 1 + px)
    inside_inner = (u > px) & (u < w - 1 - px) & (v > px) & (v < h - 1 - px)
    return inside_outer & ~inside_inner


@pytest.fixture(scope="module")
def renderer(avatar: Avatar) -> SpritesRenderer:
    return SpritesBackend().open_renderer(avatar)


@pytest.fixture(scope="module")
def still(avatar: Avatar) -> SpritesRenderer:
    """The same atlas on an unmoving head (identity mouth track)."""
    return SpritesRenderer.from_directory(avatar.directory, [IDENTITY])


# ---------------------------------------------------------------------- atlas contract


def test_atlas_files_follow_the_contract(avatar: Avatar, mouth_model: MouthModel) -> None:
    d = avatar.directory
    assert avatar.manifest.lipsync == {
        "type": "sprites",
        "atlas": "atlas.png",
        "atlas_json": "atlas.json",
        "mask": "mask_mouth.png",
    }
    raw = json.loads((d / "atlas.json").read_text("utf-8"))
    meta = AtlasJson.model_validate(raw)
    # The contract's fields, literally: grid 4×4, the 12 classes in order, mask, roi.
    assert raw["grid"] == {"cols": 4, "rows": 4}
    assert meta.classes == CLASSES
    assert raw["mask"] == "mask_mouth.png" and (d / meta.mask).is_file()
    assert meta.roi == mouth_model.roi
    roi = meta.roi
    bgra = cv2.imread(str(d / "atlas.png"), cv2.IMREAD_UNCHANGED)
    assert bgra is not None and bgra.shape == (4 * roi.h, 4 * roi.w, 4) and bgra.dtype == np.uint8
    # One ROI-sized cell per class, row-major in class order, none overlapping.
    assert meta.cells is not None and list(meta.cells) == CLASSES
    for i, name in enumerate(CLASSES):
        c = meta.cells[name]
        assert (c.x, c.y, c.w, c.h) == ((i % 4) * roi.w, (i // 4) * roi.h, roi.w, roi.h)
    # The 4 spare cells (the last row: 12 classes fill rows 0–2) are fully transparent.
    assert int(bgra[3 * roi.h :, :, 3].max()) == 0
    # Alpha of every cell is the mask, and the mask is zero along the ROI border (no edge).
    mask = cv2.imread(str(d / "mask_mouth.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.shape == (roi.h, roi.w) and mask.dtype == np.uint8
    for name in CLASSES:
        c = meta.cells[name]
        alpha = bgra[c.y : c.y + c.h, c.x : c.x + c.w, 3]
        assert np.array_equal(alpha, mask), name
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert int(border.max()) == 0
    assert int(mask.max()) == 255 and 0.2 < float((mask > 127).mean()) < 0.9


def test_rest_cell_is_the_photos_own_mouth_and_other_cells_differ(
    avatar: Avatar, photo: np.ndarray, mouth_model: MouthModel
) -> None:
    meta = AtlasJson.model_validate_json((avatar.directory / "atlas.json").read_text("utf-8"))
    roi = meta.roi
    assert meta.cells is not None
    rgba = cv2.cvtColor(
        cv2.imread(str(avatar.directory / "atlas.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA
    )

    def cell(name: str) -> np.ndarray:
        c = meta.cells[name]  # type: ignore[index]
        return rgba[c.y : c.y + c.h, c.x : c.x + c.w]

    own = photo[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w]
    assert np.array_equal(cell("Rest")[..., :3], own)
    inner = mouth_model.mask > 0.5
    diffs = {}
    for name in CLASSES[1:]:
        diffs[name] = float(np.abs(cell(name)[..., :3].astype(float) - own).sum(2)[inner].mean())
    # Every shape is visibly its own shape (not a copy of Rest or of another class).
    assert min(diffs.values()) > 2.0, diffs
    assert diffs["AI"] > diffs["MBP"], diffs  # the wide-open vowel changes more than a closure
    for a, b in (("AI", "O"), ("E", "U"), ("FV", "MBP"), ("L", "TH")):
        d = float(np.abs(cell(a)[..., :3].astype(float) - cell(b)[..., :3]).sum(2)[inner].mean())
        assert d > 1.0, (a, b, d)


def test_open_mouth_cell_is_measured_open_by_the_landmarker(
    avatar: Avatar, photo: np.ndarray, analyzer: FaceAnalyzer, still: SpritesRenderer
) -> None:
    """The atlas is not just pixels that differ: MediaPipe re-detects the shapes on the photo."""

    def aperture(img: np.ndarray) -> float:
        xy = analyzer.analyze(img).landmarks[:, :2]
        return float(np.hypot(*(xy[14] - xy[13])) / np.hypot(*(xy[291] - xy[61])))

    rest = aperture(still.render(photo, idle_index=0, weights={}))
    ai = aperture(still.render(photo, idle_index=0, weights={"AI": 1.0}))
    mbp = aperture(still.render(photo, idle_index=0, weights={"MBP": 1.0}))
    assert ai > rest + 0.1, (rest, ai)
    assert mbp < 0.05, mbp


# ---------------------------------------------------------------------- rendering from weights


def test_fifty_fifty_blend_lies_between_its_endpoints(renderer: SpritesRenderer) -> None:
    for a, b in (("AI", None), ("AI", "O"), ("MBP", "E")):
        weights = {a: 0.5} if b is None else {a: 0.5, b: 0.5}
        mid = renderer.patch(weights).astype(np.float64)
        pa = renderer.patch({a: 1.0}).astype(np.float64)
        pb = renderer.patch({b: 1.0} if b else {}).astype(np.float64)
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        assert float((lo - 1 - mid).max()) <= 0 and float((mid - hi - 1).max()) <= 0
        assert float(np.abs(mid - (pa + pb) / 2).max()) <= 1.0
        # And it is a real blend, not one endpoint.
        assert float(np.abs(pa - pb).mean()) > 1.0
        assert float(np.abs(mid - pa).mean()) > 0.3 * float(np.abs(pa - pb).mean())
    # A ramp of weights moves the patch monotonically from Rest to AI.
    rest, ai = renderer.patch({}).astype(float), renderer.patch({"AI": 1.0}).astype(float)
    dist = [float(np.abs(renderer.patch({"AI": t}).astype(float) - rest).mean())
            for t in (0.0, 0.25, 0.5, 0.75, 1.0)]  # fmt: skip
    assert dist == sorted(dist) and dist[0] == 0.0
    assert abs(dist[-1] - float(np.abs(ai - rest).mean())) < 1e-9


def test_blend_picks_the_highest_weighted_cells_and_rest_takes_the_remainder() -> None:
    parts = dict(blend_weights({"AI": 0.5, "E": 0.2, "O": 0.1, "U": 0.05}, CLASSES, max_cells=3))
    assert set(parts) == {"AI", "E", "O", "Rest"}
    assert parts["Rest"] == pytest.approx(0.2)
    over = dict(blend_weights({"AI": 0.8, "O": 0.8}, CLASSES, max_cells=3))
    assert over == {"AI": pytest.approx(0.5), "O": pytest.approx(0.5)}
    assert sum(blend_weights({"E": 0.3}, CLASSES, max_cells=3)[i][1] for i in range(2)) == 1.0


def test_patch_is_premultiplied(renderer: SpritesRenderer) -> None:
    for w in ({}, {"AI": 0.6, "E": 0.4}, {"O": 0.3}):
        p = renderer.patch(w).astype(np.int16)
        assert int((p[..., :3] - p[..., 3:4]).max()) <= 0  # colour never exceeds alpha


def _uniform_renderer(roi_mask: np.ndarray, affine: tuple[float, ...], *, black_outside: bool
                      ) -> SpritesRenderer:  # fmt: skip
    h, w = roi_mask.shape
    from lipcore.models import ROI

    cell = np.full((h, w, 4), 255, np.uint8)
    cell[..., 3] = roi_mask
    if black_outside:  # what many encoders store under alpha 0
        cell[roi_mask == 0, :3] = 0
    return SpritesRenderer(
        {"Rest": cell, "AI": cell.copy()},
        ROI(x=40, y=30, w=w, h=h),
        [affine],  # type: ignore[list-item]
    )


@pytest.mark.parametrize("black_outside", [False, True])
def test_feathered_edge_has_no_dark_fringe(mouth_model: MouthModel, black_outside: bool) -> None:
    """A white sprite laid over a white frame must stay white everywhere, also moved by a
    sub-pixel, rotated affine: straight-alpha filtering would darken the feathered edge."""
    mask8 = np.clip(mouth_model.mask * 255 + 0.5, 0, 255).astype(np.uint8)
    m = cv2.getRotationMatrix2D((150.0, 120.0), 1.3, 1.01)
    m[:, 2] += (0.37, -0.41)
    r = _uniform_renderer(mask8, tuple(float(v) for v in m.ravel()), black_outside=black_outside)
    white = np.full((mask8.shape[0] + 120, mask8.shape[1] + 140, 3), 255, np.uint8)
    for weights in ({}, {"AI": 0.5}):
        out = r.render(white, idle_index=0, weights=weights)
        assert int(out.min()) >= 254
    # Over a dark frame the same sprite shows a soft, monotone edge (it is really there).
    grey = np.full_like(white, 40)
    out = r.render(grey, idle_index=0, weights={}).astype(int)
    assert int(out.max()) >= 250 and int(out.min()) == 40


def test_render_in_place_equals_the_returned_copy(
    renderer: SpritesRenderer, idle_frames: list[np.ndarray]
) -> None:
    idle = idle_frames[3]
    copy = renderer.render(idle, idle_index=3, weights={"E": 0.7})
    assert not np.array_equal(copy, idle)
    buf = idle.copy()
    same = renderer.render(buf, idle_index=3, weights={"E": 0.7}, out=buf)
    assert same is buf and np.array_equal(buf, copy)
    # Frame indices wrap around the loop.
    n = len(idle_frames)
    assert np.array_equal(renderer.render(idle, idle_index=3 + 2 * n, weights={"E": 0.7}), copy)


# ---------------------------------------------------------------------- placement by the track


def test_landmarks_of_the_rendered_mouth_follow_the_head(
    renderer: SpritesRenderer,
    still: SpritesRenderer,
    photo: np.ndarray,
    idle_frames: list[np.ndarray],
    avatar: Avatar,
    analyzer: FaceAnalyzer,
) -> None:
    """MediaPipe's lip landmarks on the talking moved frames sit where the track moves the still
    frame's lip landmarks (the overlay does not swim against the face)."""
    errs = landmark_follow_errors(
        renderer, still, analyzer, photo, idle_frames, avatar.mouth_track.affines,
        {"O": 0.7}, (1, 3, 6),
    )  # fmt: skip
    assert max(errs) < 1.0, errs


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ({"Ah": 0.5}, ["'Ah'", "AI", "Rest"]),
        ({"ai": 1.0}, ["'ai'"]),
        ({"AI": float("nan")}, ["'AI'", "not a number"]),
        ({"O": float("inf")}, ["'O'", "not a number"]),
        ({"AI": 1.5}, ["'AI'", "[0, 1]"]),
        ({"E": -0.2}, ["'E'", "[0, 1]"]),
    ],
)
def test_bad_weights_are_clear_errors(
    renderer: SpritesRenderer, idle_frames: list[np.ndarray], weights: dict[str, float],
    words: list[str],
) -> None:  # fmt: skip
    with pytest.raises(LipcoreError) as info:
        renderer.render(idle_frames[0], idle_index=0, weights=weights)
    for word in words:
        assert word in str(info.value)


def test_tiny_float_overshoot_is_tolerated(renderer: SpritesRenderer) -> None:
    """Co-articulated weights may carry float noise just outside [0, 1]."""
    assert np.array_equal(renderer.patch({"AI": 1.0 + 1e-7}), renderer.patch({"AI": 1.0}))
    assert np.array_equal(renderer.patch({"AI": -1e-7}), renderer.patch({}))


def _copy_avatar(avatar: Avatar, dest: Path) -> Avatar:
    shutil.copytree(avatar.directory, dest)
    return Avatar(dest, avatar.manifest, avatar.mouth_track)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: (d / "atlas.json").unlink(), ["atlas.json", "--backend sprites"]),
        (lambda d: (d / "atlas.png").unlink(), ["atlas.png", "rebuild"]),
        (lambda d: (d / "atlas.json").write_text("{not json"), ["atlas.json", "invalid"]),
        (lambda d: (d / "atlas.png").write_bytes(b"\x89PNG broken"), ["atlas.png"]),
        (
            lambda d: (d / "atlas.json").write_text(
                json.dumps({**json.loads((d / "atlas.json").read_text()), "classes": ["AI"]})
            ),
            ["'Rest'"],
        ),
        (
            lambda d: (d / "atlas.json").write_text(
                json.dumps(
                    {
                        **json.loads((d / "atlas.json").read_text()),
                        "cells": {
                            **json.loads((d / "atlas.json").read_text())["cells"],
                            "O": {"x": 9000, "y": 0, "w": 1, "h": 1},
                        },
                    }
                )
            ),
            ["'O'", "cell"],
        ),
    ],
    ids=["no-json", "no-png", "bad-json", "bad-png", "no-rest", "bad-cell"],
)
def test_missing_or_damaged_assets_are_clear_errors(
    avatar: Avatar, tmp_path: Path, damage: object, words: list[str]
) -> None:
    broken = _copy_avatar(avatar, tmp_path / "a")
    damage(broken.directory)  # type: ignore[operator]
    with pytest.raises(AvatarLoadError) as info:
        SpritesBackend().open_renderer(broken)
    assert "hopper-sprites" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_build_assets_needs_a_mouth_model(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="MouthModel"):
        SpritesBackend().build_assets(object(), tmp_path)


# ---------------------------------------------------------------------- plugin system


def test_blocked_plugin_is_a_clear_error_naming_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIPCORE_DISABLE_PLUGINS", "sprites")
    with pytest.raises(PluginNotFoundError) as info:
        Engine().lipsync_backend("sprites", avatar="hopper")
    assert "LIPCORE_DISABLE_PLUGINS may hide an installed one" in str(info.value)
    assert "'hopper'" in str(info.value)


def test_head_motion_fixture_is_real_motion(avatar: Avatar) -> None:
    """The placement tests are only as strong as the motion they check against."""
    a = np.asarray(avatar.mouth_track.affines)
    angles = np.degrees(np.arctan2(a[:, 3], a[:, 0]))
    assert float(np.ptp(angles)) > 2.0 and float(np.ptp(a[:, 2])) > 3.0
    assert not all(math.isclose(x, round(x)) for x in a[:, 2])


# ---------------------------------------------------------------------- the shared bar


@pytest.fixture(scope="module")
def backend() -> SpritesBackend:
    return SpritesBackend()


class TestSpritesConformance(LipsyncBackendConformance):
    """lipcore.testing's conformance suite (registration, declarations, seam-free Rest,
    placement to 0.05 px, clear errors), as every back end passes it."""

    kind = "sprites"
    aliases = ("atlas",)
    distribution = "lipcore-sprites"
    rest_darkening_max_levels = 5.0
    # Measured: within 0.02 px of the expected place.
    placement_tolerance_px = 0.05
