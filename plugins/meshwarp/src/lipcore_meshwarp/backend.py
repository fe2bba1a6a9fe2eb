"""Variant B: a control-point mesh over the mouth ROI, warped by blended per-viseme offsets.

Build once (``meshdef.json`` + layers):

* ``grid``: 16×12 control points spread evenly over the ROI, the outer ones on its border;
* ``targets``: per viseme, one ``[dx, dy]`` per control point (row-major, ROI pixels). They are
  **forward** offsets (``"warp": "forward"``): the texture point under a control point at rest
  is drawn at ``rest + offset`` — what a vertex mesh (``drawVertices``, WebGL) does natively.
  Each viseme's offsets are a least-squares fit of the mouth model's smooth thin-plate warp, so
  bilinear interpolation of the grid reproduces it as closely as the coarse grid allows;
* ``texture``: the photo's ROI with its own mouth opening filled with lip (RGBA, alpha = mask);
* ``interior``: the synthesised mouth inside (cavity, teeth, tongue), one layer for all shapes;
* ``inverse_targets``: the same per control point as **backward** offsets (the output pixel at a
  control point shows the texture at ``point + offset``), for shaders and ``cv2.remap``;
* ``openings``: per viseme, the inner-lip polygon (ROI pixels). A client blends the polygons'
  points by the same weights and shows the interior inside that polygon — the coarse grid alone
  cannot open a sharp slit between the lips.

Run (``MeshWarpRenderer``): blend offsets by weight, upsample the grid bilinearly to a dense
field (two small matrix products), invert it by fixed-point iteration (``cv2.remap`` needs the
backward map), remap the texture, lay the interior into the blended opening, and composite the
patch into the idle frame by its mouth track affine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from lipcore.avatar.errors import AvatarLoadError
from lipcore.avatar.mouth import MouthModel, MouthModelError
from lipcore.avatar.warp import blas_single_thread, patch_to_frame_affine, place_patch
from lipcore.interfaces import LipsyncBackend, MouthRenderer
from lipcore.models import ROI, Grid, MeshDef

__all__ = ["MESHDEF_FILE", "MeshWarpBackend", "MeshWarpRenderer", "build_meshdef"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

MESHDEF_FILE = "meshdef.json"
TEXTURE_FILE = "mesh_texture.png"
INTERIOR_FILE = "interior.png"
MASK_FILE = "mask_mouth.png"
GRID = Grid(cols=16, rows=12)
REST = "Rest"
#: How much the lip contact line darkens the lips (the mouth model's sprites use the same),
#: drawn in proportion to the weight of the bilabial closure.
SEAM_STRENGTH = 0.35
CLOSURE = "MBP"
#: Float noise a co-articulated weight may carry outside [0, 1] (clamped, not an error).
WEIGHT_TOLERANCE = 1e-3


def _smoothstep_lut(e0: float, e1: float) -> U8:
    t = np.clip((np.arange(256) / 255.0 - e0) / (e1 - e0), 0.0, 1.0)
    return np.round(255.0 * t * t * (3.0 - 2.0 * t)).astype(np.uint8)


#: Coverage kept where the blurred opening reaches x/255 (slits fade out below 0.45–0.8).
_SLIT_LUT = _smoothstep_lut(0.45, 0.8)


def _bilinear_matrix(n_px: int, n_ctrl: int) -> F64:
    """(n_px, n_ctrl) weights of the evenly spread control points (first on pixel 0, last on
    pixel n_px − 1) for linear interpolation along one axis."""
    pos = np.arange(n_px, dtype=np.float64) * (n_ctrl - 1) / max(n_px - 1, 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_ctrl - 2)
    t = pos - i0
    m = np.zeros((n_px, n_ctrl))
    m[np.arange(n_px), i0] = 1.0 - t
    m[np.arange(n_px), i0 + 1] = t
    return m


class GridFitter:
    """Least-squares control-point offsets whose bilinear interpolation best matches a dense
    displacement field over the ROI. The normal equations depend only on the ROI, the grid and
    the sample weights (the mask, and most of all the lips), so they are factorised once and
    every viseme costs one small solve."""

    def __init__(self, model: MouthModel, grid: Grid, *, stride: int = 2) -> None:
        roi = model.roi
        xs = np.arange(0, roi.w, stride)
        ys = np.arange(0, roi.h, stride)
        xx, yy = np.meshgrid(xs.astype(np.float64), ys.astype(np.float64))
        self.points = np.stack([xx.ravel(), yy.ravel()], axis=1)
        rx = _bilinear_matrix(roi.w, grid.cols)[xs]
        ry = _bilinear_matrix(roi.h, grid.rows)[ys]
        # B[p, (r, c)] = ry[p_y, r] * rx[p_x, c]
        b = (ry[:, None, :, None] * rx[None, :, None, :]).reshape(len(ys) * len(xs), -1)
        # Weights: the mask region matters, the lips (where the shapes differ most) most.
        lips = model.roi_points({})
        d_lip = np.min(np.linalg.norm(self.points[:, None, :] - lips[None, :, :], axis=2), axis=1)
        width = float(model.rest.get("width_px", roi.w / 2.5))
        mask = model.mask[ys][:, xs].ravel().astype(np.float64)
        w = 0.05 + mask + 2.0 * np.exp(-((d_lip / (0.12 * width)) ** 2))
        self._bw = b * w[:, None]
        lhs = b.T @ self._bw + 1e-3 * np.eye(b.shape[1])
        self._chol = np.linalg.cholesky(lhs)
        self.grid = grid

    def fit(self, displacement: F64) -> F64:
        """Offsets (rows, cols, 2) for the displacement (M, 2) sampled at ``self.points``."""
        rhs = self._bw.T @ displacement
        y = np.linalg.solve(self._chol, rhs)
        sol = np.linalg.solve(self._chol.T, y)
        return sol.reshape(self.grid.rows, self.grid.cols, 2)


def fit_grid_offsets(
    model: MouthModel,
    weights: Mapping[str, float],
    grid: Grid,
    *,
    backward: bool = False,
    fitter: GridFitter | None = None,
) -> F64:
    """Control-point offsets (rows, cols, 2) fitted to the mouth model's forward (or
    ``backward``) warp for ``weights``."""
    fitter = fitter or GridFitter(model, grid)
    if backward:
        disp = model.backward_displacement(weights, fitter.points)
    else:
        disp = model.forward_displacement(weights, fitter.points)
    return fitter.fit(disp)


def forward_from_backward(back: F64, roi_w: int, roi_h: int, *, iterations: int = 30) -> F64:
    """Forward control-point offsets consistent with the backward grid ``back``.

    A least-squares fit of the forward field itself rings: that field tears at the lips (the
    upper lip rises, the lower one drops), which a bilinear grid cannot follow. The backward
    field has no tear (every output pixel shows some texture point), so the forward offset of a
    control point p is solved from it: ``F = −B(p + F)``, by fixed-point iteration on the
    bilinearly interpolated backward grid. Clients that draw the forward mesh then agree with
    the backward maps the server renders with, and the ROI border stays where it is.
    """
    rows, cols = back.shape[:2]
    ry = _bilinear_matrix(roi_h, rows)
    rx = _bilinear_matrix(roi_w, cols)
    dense = [ry @ back[..., k] @ rx.T for k in range(2)]
    gy, gx = np.meshgrid(
        np.linspace(0.0, roi_h - 1.0, rows), np.linspace(0.0, roi_w - 1.0, cols), indexing="ij"
    )
    fx = np.zeros_like(gx)
    fy = np.zeros_like(gy)
    for _ in range(iterations):
        qx = np.clip(gx + fx, 0.0, roi_w - 1.0).astype(np.float32)
        qy = np.clip(gy + fy, 0.0, roi_h - 1.0).astype(np.float32)
        bx = cv2.remap(dense[0].astype(np.float32), qx, qy, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        by = cv2.remap(dense[1].astype(np.float32), qx, qy, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        nx, ny = -bx.astype(np.float64), -by.astype(np.float64)
        # Damped: near the lips the map folds and plain iteration can oscillate.
        fx, fy = 0.5 * fx + 0.5 * nx, 0.5 * fy + 0.5 * ny
    out = np.stack([fx, fy], axis=-1)
    # The ROI's edge is where the patch meets the photo (the mask is ~0 there): it never moves.
    out[0], out[-1], out[:, 0], out[:, -1] = 0.0, 0.0, 0.0, 0.0
    return out


def build_meshdef(mouth_model: MouthModel, out_dir: Path, *, grid: Grid = GRID) -> dict[str, str]:
    """Write ``meshdef.json``, ``mesh_texture.png``, ``interior.png`` (and the mask, if the
    mouth model has not saved it) into ``out_dir``; return the relative paths."""
    with blas_single_thread():
        return _build_meshdef(mouth_model, Path(out_dir), grid)


def _build_meshdef(mouth_model: MouthModel, out_dir: Path, grid: Grid) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    targets: dict[str, list[tuple[float, float]]] = {}
    inverse: dict[str, list[tuple[float, float]]] = {}
    openings: dict[str, list[list[float]]] = {}
    fitter = GridFitter(mouth_model, grid)
    for name in mouth_model.classes:
        w = {} if name == REST else {name: 1.0}
        if name == REST:
            offsets = back = np.zeros((grid.rows, grid.cols, 2))
        else:
            back = fit_grid_offsets(mouth_model, w, grid, backward=True, fitter=fitter)
            offsets = forward_from_backward(back, mouth_model.roi.w, mouth_model.roi.h)
        targets[name] = [(round(float(dx), 3), round(float(dy), 3)) for dx, dy in
                         offsets.reshape(-1, 2)]  # fmt: skip
        inverse[name] = [(round(float(dx), 3), round(float(dy), 3)) for dx, dy in
                         back.reshape(-1, 2)]  # fmt: skip
        openings[name] = [[round(float(x), 2), round(float(y), 2)] for x, y in
                          mouth_model.opening_polygon(w)]  # fmt: skip
    mask8 = np.clip(mouth_model.mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
    texture = np.dstack([mouth_model.closed_texture(), mask8])
    interior = np.dstack([mouth_model.interior_layer(), np.full_like(mask8, 255)])
    for fname, img in ((TEXTURE_FILE, texture), (INTERIOR_FILE, interior)):
        if not cv2.imwrite(str(out_dir / fname), cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)):
            raise OSError(f"could not write {out_dir / fname}")
    if not (out_dir / MASK_FILE).is_file():
        mouth_model.save(out_dir)
    meshdef = MeshDef(
        grid=grid,
        roi=mouth_model.roi,
        targets=targets,
        warp="forward",  # type: ignore[call-arg]  # extension fields (MeshDef allows extras)
        classes=list(mouth_model.classes),
        texture=TEXTURE_FILE,
        interior=INTERIOR_FILE,
        mask=MASK_FILE,
        openings=openings,
        inverse_targets=inverse,
    )
    (out_dir / MESHDEF_FILE).write_text(meshdef.model_dump_json(), encoding="utf-8")
    return {
        "meshdef": MESHDEF_FILE,
        "texture": TEXTURE_FILE,
        "interior": INTERIOR_FILE,
        "mask": MASK_FILE,
    }


def _read_rgba(path: Path, who: str) -> U8:
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
        raise AvatarLoadError(f"{who}: {path.name} is missing or not an RGBA PNG; rebuild it")
    rgba: U8 = np.asarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA), dtype=np.uint8)
    return rgba


class MeshWarpRenderer(MouthRenderer):
    """Warps the mouth texture by blended control-point offsets and composites it by the track."""

    def __init__(
        self,
        meshdef: MeshDef,
        texture_rgba: U8,
        interior_rgb: U8,
        affines: list[tuple[float, float, float, float, float, float]],
        *,
        iterations: int = 2,
    ) -> None:
        roi = meshdef.roi
        if texture_rgba.shape[:2] != (roi.h, roi.w) or interior_rgb.shape[:2] != (roi.h, roi.w):
            raise AvatarLoadError("the mesh layers do not match the ROI size; rebuild the avatar")
        if not affines:
            raise AvatarLoadError("the avatar's mouth track is empty; rebuild the avatar")
        extra = meshdef.model_extra or {}
        self.roi: ROI = roi
        self.grid = meshdef.grid
        self.classes = tuple(meshdef.targets)
        n = meshdef.grid.rows * meshdef.grid.cols
        for name, t in meshdef.targets.items():
            if len(t) != n:
                raise AvatarLoadError(
                    f"meshdef targets for {name!r} have {len(t)} points, the grid needs {n}"
                )
        self._targets = np.asarray([meshdef.targets[c] for c in self.classes], np.float32).reshape(
            len(self.classes), meshdef.grid.rows, meshdef.grid.cols, 2
        )
        inverse = extra.get("inverse_targets") or {}
        self._inverse = (
            np.asarray([inverse[c] for c in self.classes], np.float32).reshape(self._targets.shape)
            if all(c in inverse and len(inverse[c]) == n for c in self.classes)
            else None
        )
        openings = extra.get("openings") or {}
        self._openings = (
            np.asarray([openings[c] for c in self.classes], np.float32)
            if all(c in openings for c in self.classes)
            else None
        )
        self._index = {c: i for i, c in enumerate(self.classes)}
        # Opening polygons run along the upper inner lip, corner to corner, then back along
        # the lower one without the corners: the first (n + 2) / 2 points are the upper lip.
        self._n_upper = (self._openings.shape[1] + 2) // 2 if self._openings is not None else 0
        # Blur radius that tells a slit from an opening: 1.8 % of the mouth's width (the
        # rest opening's span, corner to corner), at least a pixel.
        span = 0.0
        if self._openings is not None:
            span = float(np.ptp(self._openings[self._index[REST], :, 0]))
        self._slit_sigma = max(1.0, 0.018 * span)
        self._rx = _bilinear_matrix(roi.w, meshdef.grid.cols).T.astype(np.float32)  # (cols, w)
        self._ry = _bilinear_matrix(roi.h, meshdef.grid.rows).astype(np.float32)  # (h, rows)
        self._field_cache: dict[int, F32] = {}
        gx, gy = np.meshgrid(np.arange(roi.w, dtype=np.float32), np.arange(roi.h, dtype=np.float32))
        self._gx, self._gy = gx, gy
        self._texture = np.ascontiguousarray(texture_rgba[..., :3])
        self._alpha = np.ascontiguousarray(texture_rgba[..., 3])
        self._alpha3 = cv2.merge([self._alpha] * 3)
        self._interior = np.ascontiguousarray(interior_rgb[..., :3])
        self._matrices = [patch_to_frame_affine(a, roi.x, roi.y) for a in affines]
        self.iterations = iterations
        self._rest_patch = self._compose(self._texture, self._opening_poly({}))

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        affines: list[tuple[float, float, float, float, float, float]],
        *,
        meshdef_file: str = MESHDEF_FILE,
        avatar_id: str = "",
    ) -> MeshWarpRenderer:
        """Load ``meshdef.json`` and its layers from an avatar directory."""
        directory = Path(directory)
        who = f"avatar {avatar_id!r}" if avatar_id else f"avatar directory {directory}"
        try:
            meshdef = MeshDef.model_validate_json((directory / meshdef_file).read_text("utf-8"))
        except FileNotFoundError:
            raise AvatarLoadError(
                f"{who} has no {meshdef_file}: it was not built for the mesh back end; rebuild "
                "it with `lipcore avatarize PHOTO --backend mesh`"
            ) from None
        except ValueError as exc:
            raise AvatarLoadError(f"{who}: {meshdef_file} is invalid ({exc}); rebuild it") from exc
        extra = meshdef.model_extra or {}
        texture = _read_rgba(directory / str(extra.get("texture", TEXTURE_FILE)), who)
        interior = _read_rgba(directory / str(extra.get("interior", INTERIOR_FILE)), who)
        return cls(meshdef, texture, interior[..., :3], affines)

    # ------------------------------------------------------------------ per frame

    def _weights(self, weights: Mapping[str, float]) -> dict[int, float]:
        out: dict[int, float] = {}
        for name, value in weights.items():
            idx = self._index.get(name)
            if idx is None:
                raise MouthModelError(
                    f"unknown viseme {name!r} in the weights; the meshdef has {list(self.classes)}"
                )
            if not math.isfinite(value):
                raise MouthModelError(f"viseme weight for {name!r} is not a number: {value!r}")
            if not -WEIGHT_TOLERANCE <= value <= 1.0 + WEIGHT_TOLERANCE:
                raise MouthModelError(
                    f"viseme weight for {name!r} is {value!r}, outside [0, 1]; weights are "
                    "fractions of the mouth shape (the remainder to 1 is Rest)"
                )
            if name != REST and value > 1e-4:
                out[idx] = min(float(value), 1.0)
        total = sum(out.values())
        if total > 1.0:
            out = {k: v / total for k, v in out.items()}
        return out

    def _opening_poly(self, w: Mapping[int, float]) -> F32 | None:
        if self._openings is None:
            return None
        rest = 1.0 - sum(w.values())
        poly = self._openings[self._index[REST]] * np.float32(rest)
        for i, wi in w.items():
            poly = poly + self._openings[i] * np.float32(wi)
        return np.asarray(poly, dtype=np.float32)

    def _seam(self, rgb: U8, poly: F32, strength: float) -> U8:
        """Darken a soft 1 px line along the upper inner lip: where the lips touch, the
        contact line (the same seam the mouth model draws into the sprites). Without it closed
        lips over a photo's former opening read as one pale band, which a landmark detector
        (and, after H.264, a viewer) takes for a mouth still slightly open."""
        upper = poly[: self._n_upper]
        x0 = max(0, int(np.floor(upper[:, 0].min())) - 3)
        y0 = max(0, int(np.floor(upper[:, 1].min())) - 3)
        x1 = min(self.roi.w, int(np.ceil(upper[:, 0].max())) + 4)
        y1 = min(self.roi.h, int(np.ceil(upper[:, 1].max())) + 4)
        if x1 <= x0 or y1 <= y0:
            return rgb
        ss = 4
        canvas = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)
        pts = np.round(((upper - [x0, y0]) * ss + (ss - 1) / 2.0) * 16).astype(np.int32)
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, 255, ss, cv2.LINE_AA, shift=4)
        line = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        line = cv2.GaussianBlur(line.astype(np.float32) * (strength / 255.0), (0, 0), 0.7)
        rgb = rgb.copy()
        sub = rgb[y0:y1, x0:x1].astype(np.float32) * (1.0 - line)[..., None]
        rgb[y0:y1, x0:x1] = np.clip(sub + 0.5, 0, 255).astype(np.uint8)
        return rgb

    def _compose(self, rgb: U8, poly: F32 | None, *, seam: float = 0.0) -> U8:
        """Lip contact seam (``seam`` = its strength), interior into the opening, then
        premultiply by the mask: RGBA premultiplied."""
        if poly is not None and seam > 0.0:
            rgb = self._seam(rgb, poly, seam)
        if poly is not None:
            x0 = max(0, int(np.floor(poly[:, 0].min())) - 1)
            y0 = max(0, int(np.floor(poly[:, 1].min())) - 1)
            x1 = min(self.roi.w, int(np.ceil(poly[:, 0].max())) + 2)
            y1 = min(self.roi.h, int(np.ceil(poly[:, 1].max())) + 2)
            area = 0.5 * abs(
                float(np.dot(poly[:, 0], np.roll(poly[:, 1], 1)))
                - float(np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
            )
            if x1 > x0 and y1 > y0 and area > 1.0:
                cov = np.zeros((y1 - y0, x1 - x0), np.uint8)
                pts = np.round((poly - [x0, y0]) * 16).astype(np.int32).reshape(-1, 1, 2)
                cv2.fillPoly(cov, [pts], 255, lineType=cv2.LINE_AA, shift=4)
                # Where the lips nearly touch the opening is a contact line, not a window onto
                # the teeth: thin parts lose their coverage once blurred (as in the mouth
                # model's sprites). Without this a mouth 70 % of the way to a closure shows a
                # bright slit of teeth, and reads as open to a viewer and a landmarker alike.
                thick = cv2.GaussianBlur(cov, (0, 0), self._slit_sigma)
                cov = np.asarray(cv2.multiply(cov, _SLIT_LUT[thick], scale=1 / 255), np.uint8)
                # Coverage fades in with the opening's area, so a slit parting is a soft line.
                fade = min(1.0, area / (0.02 * self.roi.w * self.roi.w * 0.25))
                a = cv2.merge([cov] * 3)
                if fade < 1.0:
                    a = cv2.convertScaleAbs(a, alpha=fade)
                rgb = rgb.copy()
                sub = rgb[y0:y1, x0:x1]
                inv = 255 - a
                cv2.add(
                    cv2.multiply(sub, inv, scale=1 / 255),
                    cv2.multiply(self._interior[y0:y1, x0:x1], a, scale=1 / 255),
                    dst=sub,
                )
        prem = cv2.multiply(rgb, self._alpha3, scale=1 / 255)
        # cv2.merge, not np.dstack: interleaving a 4th channel in numpy costs ~1 ms per frame.
        out: U8 = np.asarray(cv2.merge([*cv2.split(prem), self._alpha]), dtype=np.uint8)
        return out

    def _fields(self, table: F32) -> F32:
        """Every class's offsets of ``table`` upsampled to the ROI once, (classes, 2, h, w).
        Per frame only a weighted sum is left: no matrix products, whose thread pools (BLAS or
        OpenCV) stalled behind the video encoder's threads (10–15 ms a frame in render_talk)."""
        key = id(table)
        fields = self._field_cache.get(key)
        if fields is None:
            with blas_single_thread():
                ry, rx = self._ry, self._rx
                fields = np.stack(
                    [[ry @ t[..., 0] @ rx, ry @ t[..., 1] @ rx] for t in table]
                ).astype(np.float32)
            self._field_cache[key] = fields
        return fields

    def _dense(self, table: F32, w: Mapping[int, float]) -> tuple[F32, F32]:
        fields = self._fields(table)
        dx = np.zeros(fields.shape[2:], np.float32)
        dy = np.zeros(fields.shape[2:], np.float32)
        for i, wi in w.items():
            dx += fields[i, 0] * np.float32(wi)
            dy += fields[i, 1] * np.float32(wi)
        return dx, dy

    def dense_offsets(self, weights: Mapping[str, float]) -> tuple[F32, F32]:
        """The blended forward offsets upsampled to every ROI pixel (dx, dy)."""
        return self._dense(self._targets, self._weights(weights))

    def maps(self, weights: Mapping[str, float]) -> tuple[F32, F32]:
        """Backward ``cv2.remap`` maps (output ROI pixel → texture pixel) for ``weights``."""
        w = self._weights(weights)
        if self._inverse is not None:
            # The meshdef carries the backward offsets too: one lookup, no inversion.
            bx, by = self._dense(self._inverse, w)
            return self._gx + bx, self._gy + by
        dx, dy = self._dense(self._targets, w)
        # Only forward offsets: the output pixel q shows the texture point p with
        # p + D(p) = q; fixed-point iteration p ← q − D(p) (fine while the field is gentle).
        mx, my = self._gx - dx, self._gy - dy
        for _ in range(self.iterations - 1):
            sx = cv2.remap(dx, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            sy = cv2.remap(dy, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            mx, my = self._gx - sx, self._gy - sy
        return mx, my

    def patch(self, weights: Mapping[str, float]) -> U8:
        """The premultiplied RGBA mouth patch (roi.h, roi.w, 4) for ``weights``."""
        w = self._weights(weights)
        if not w:
            return self._rest_patch
        mx, my = self.maps(weights)
        warped: U8 = np.asarray(
            cv2.remap(self._texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            dtype=np.uint8,
        )
        # The seam fades in with the bilabial closure: elsewhere the lips either part or meet
        # where the photo's own lips met (their own contact line is warped along).
        closure = self._index.get(CLOSURE)
        seam = SEAM_STRENGTH * w.get(closure, 0.0) if closure is not None else 0.0
        return self._compose(warped, self._opening_poly(w), seam=seam)

    def matrix(self, idle_index: int) -> F64:
        """ROI pixel → frame pixel for idle frame ``idle_index`` (wrapped around the loop)."""
        return self._matrices[idle_index % len(self._matrices)]

    def render(
        self,
        frame: Any,
        *,
        idle_index: int,
        weights: Mapping[str, float],
        out: U8 | None = None,
    ) -> U8:
        """``frame`` (H×W×3 RGB uint8) with the warped mouth for ``weights`` composited by the
        mouth track of idle frame ``idle_index``; a new array unless ``out`` is given."""
        return place_patch(frame, self.patch(weights), self.matrix(idle_index), out=out)


class MeshWarpBackend(LipsyncBackend):
    """Lipsync variant B (``"mesh"``): a 16×12 control-point mesh warped by viseme weight."""

    type: ClassVar[str] = "mesh"
    driven_by = "visemes"
    # meshdef.json names the texture, interior and mask; clients resolve them next to it.
    client_assets: ClassVar[Mapping[str, str]] = {
        "meshdef": "meshdef_url", "texture": "", "interior": "", "mask": "mask_url"}

    def build_assets(self, mouth_model: Any, out_dir: Any) -> dict[str, Any]:
        """Write ``meshdef.json``, ``mesh_texture.png``, ``interior.png``, ``mask_mouth.png``."""
        if not isinstance(mouth_model, MouthModel):
            raise TypeError("build_assets needs a lipcore.avatar.mouth.MouthModel")
        return build_meshdef(mouth_model, Path(out_dir))

    def open_renderer(self, avatar: Any) -> MeshWarpRenderer:
        """A renderer over ``avatar`` (a :class:`lipcore.avatar.store.Avatar`)."""
        lipsync = dict(avatar.manifest.lipsync)
        return MeshWarpRenderer.from_directory(
            Path(avatar.directory),
            list(avatar.mouth_track.affines),
            meshdef_file=str(lipsync.get("meshdef", MESHDEF_FILE)),
            avatar_id=str(getattr(avatar, "id", "")),
        )
