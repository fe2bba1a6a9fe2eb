"""The mouth model shared by every lipsync back end.

:func:`build_mouth_model` measures the photo's own mouth (width, aperture, smile, lip colours,
blur and grain), places a padded ROI around lips and jaw with a feathered alpha mask, and
describes each viseme as a *lip shape*: a handful of interpretable parameters
(:class:`LipShape`) that move the MediaPipe lip and jaw landmarks relative to the rest mouth, in
units of the mouth width. :meth:`MouthModel.render` turns viseme weights into an RGBA ROI patch:

1. blend the shapes' landmark targets by weight (Rest is the photo itself);
2. warp the ROI with a thin-plate spline through those targets (solved once per shape, applied
   with ``cv2.remap``);
3. where the mouth now opens, draw the synthesised interior (:mod:`lipcore.avatar.interior`);
   where it closes over teeth the photo showed (a smiling photo), fill in lip texture;
4. match the photo's blur and grain, and hand back the patch with the feathered mask as alpha.

See ``docs/mouth.md`` for the parameters and how they were chosen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from lipcore.avatar import landmarks as lmk
from lipcore.avatar.interior import InteriorParams, PhotoLook, render_interior
from lipcore.avatar.warp import (
    ThinPlateSpline,
    backward_maps,
    blas_single_thread,
    border_anchors,
)
from lipcore.errors import InputError
from lipcore.models import ROI

if TYPE_CHECKING:
    from lipcore.avatar.face import FaceAnalysis

__all__ = [
    "LIP_SHAPES",
    "VISEME_CLASSES",
    "LipShape",
    "MouthModel",
    "MouthModelError",
    "build_mouth_model",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

try:  # the speech side owns the class list; fall back to the contract's order
    from lipcore.speech.visemes import VISEME_CLASSES as _CLASSES

    VISEME_CLASSES: tuple[str, ...] = tuple(_CLASSES)
except ImportError:  # pragma: no cover - only while lipcore.speech.visemes is not written
    VISEME_CLASSES = ("Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH")

REST = "Rest"


class MouthModelError(InputError):
    """The face's mouth cannot be modelled (too small, or cut off by the photo's border)."""

    code = "bad_mouth"


@dataclass(frozen=True)
class LipShape:
    """One viseme's lip shape. Lengths are in units of the mouth width; signs follow the image
    (``v`` grows downwards).

    aperture      inner-lip gap in the middle of the mouth (absolute, not added to the photo's)
    upper_share   share of the gap taken by the upper lip moving up (the rest is the jaw/lower lip)
    width         relative change of mouth width (+ spread, − narrowed)
    rounding      0..1 protrusion: rounder opening, fuller lips, inner corners drawn in
    smile         0..1 corners pulled up
    press         0..1 lips pressed (thinner), for bilabial closure
    tuck          0..1 lower lip drawn up under the upper teeth (F, V)
    teeth_upper   0..1 visibility of the upper teeth where the opening uncovers them
    teeth_lower   0..1 visibility of the lower teeth (only shows when the jaw is well down)
    tongue_floor / tongue_up / tongue_out   0..1 tongue lying low / tip raised (L) / between the
                  teeth (TH)
    """

    aperture: float = 0.0
    upper_share: float = 0.3
    width: float = 0.0
    rounding: float = 0.0
    smile: float = 0.0
    press: float = 0.0
    tuck: float = 0.0
    teeth_upper: float = 1.0
    teeth_lower: float = 0.0
    tongue_floor: float = 0.0
    tongue_up: float = 0.0
    tongue_out: float = 0.0


#: The default shapes of the 12 viseme classes (Rest is the photo's own mouth).
LIP_SHAPES: dict[str, LipShape] = {
    "AI": LipShape(aperture=0.36, upper_share=0.26, width=0.03, teeth_lower=0.9, tongue_floor=1.0),
    "E": LipShape(aperture=0.15, upper_share=0.45, width=0.11, smile=0.5, teeth_lower=0.8,
                  tongue_floor=0.5),
    "U": LipShape(aperture=0.075, upper_share=0.45, width=-0.27, rounding=1.0, teeth_upper=0.5),
    "O": LipShape(aperture=0.27, upper_share=0.30, width=-0.19, rounding=0.8, teeth_upper=0.7,
                  teeth_lower=0.4, tongue_floor=0.8),
    "MBP": LipShape(aperture=0.0, width=-0.02, press=1.0, teeth_upper=0.0),
    "FV": LipShape(aperture=0.055, upper_share=0.95, width=0.03, tuck=1.0),
    "L": LipShape(aperture=0.21, upper_share=0.32, width=0.03, tongue_up=1.0, teeth_lower=0.3),
    "WQ": LipShape(aperture=0.05, upper_share=0.45, width=-0.31, rounding=1.0, teeth_upper=0.3),
    "R": LipShape(aperture=0.10, upper_share=0.42, width=-0.13, rounding=0.5, teeth_upper=0.8),
    "CH": LipShape(aperture=0.075, upper_share=0.45, width=-0.07, rounding=0.45, teeth_lower=1.0),
    "TH": LipShape(aperture=0.11, upper_share=0.45, width=0.03, tongue_out=1.0),
}  # fmt: skip

# Landmarks the shapes move: lips (outer and inner contours) and the chin / jaw below them.
_UO = lmk.UPPER_LIP_OUTER
_LO = lmk.LOWER_LIP_OUTER
_UI = lmk.UPPER_LIP_INNER
_LI = lmk.LOWER_LIP_INNER
# Chin and jaw points with how far each follows the jaw drop (1 = the chin itself).
_JAW_FOLLOW: dict[int, float] = {
    18: 0.95, 200: 1.0, 199: 1.0, 175: 1.0, 152: 1.0, 148: 0.9, 377: 0.9, 176: 0.8, 400: 0.8,
    149: 0.62, 378: 0.62, 150: 0.45, 379: 0.45, 136: 0.25, 365: 0.25,
}  # fmt: skip
# Points that stay where they are (nose base, cheeks): they keep the warp local to the mouth.
_FIXED = (2, 98, 327, 205, 425, 36, 266)

_MIN_MOUTH_PX = 24.0


def _classes() -> tuple[str, ...]:
    return VISEME_CLASSES


@dataclass
class _Frame:
    """Mouth-local frame: origin between the corners, unit = mouth width, v downwards."""

    center: F64
    ex: F64
    ey: F64
    width: float

    def to_local(self, p: F64) -> F64:
        d = np.asarray(p, dtype=np.float64) - self.center
        return np.stack([d @ self.ex, d @ self.ey], axis=-1) / self.width

    def to_photo(self, q: F64) -> F64:
        q = np.asarray(q, dtype=np.float64)
        return self.center + self.width * (q[..., :1] * self.ex + q[..., 1:2] * self.ey)


@dataclass
class _Targets:
    """Landmark targets of one (blended) shape, in mouth-local units."""

    pts: F64  # (N, 2) for the driven landmark list
    interior: InteriorParams


def _lip_polygon(inner_upper: F64, inner_lower: F64) -> F64:
    return np.concatenate([inner_upper, inner_lower[-2:0:-1]], axis=0)


@dataclass
class MouthModel:
    """A photo's mouth: ROI, feathered mask, measured rest mouth and the 12 lip shapes.

    ``render(weights)`` gives an RGBA patch of the ROI (alpha = ``mask``) for any blend of
    visemes; ``render({})`` is the photo's own mouth.
    """

    roi: ROI
    mask: F32
    rest: dict[str, float]
    classes: tuple[str, ...]
    photo_roi: U8  # the photo's ROI pixels (RGB)
    shapes: dict[str, LipShape] = field(default_factory=lambda: dict(LIP_SHAPES))
    look: PhotoLook | None = None
    landmarks: F64 | None = None  # the photo's (478, 2) landmarks, pixels
    # internals, filled by build_mouth_model
    _photo: U8 | None = None
    _frame: _Frame | None = None
    _ids: tuple[int, ...] = ()
    _rest_local: F64 | None = None
    _anchors: F64 | None = None
    _src_open_mask: F32 | None = None
    _uv: tuple[F32, F32] | None = None
    _cache: dict[tuple[tuple[str, float], ...], U8] = field(default_factory=dict)

    # ------------------------------------------------------------------ geometry per shape

    def _normalise(self, weights: Mapping[str, float]) -> dict[str, float]:
        w: dict[str, float] = {}
        for name, value in weights.items():
            if name not in self.classes:
                raise MouthModelError(
                    f"unknown viseme {name!r} in the weights; expected one of {list(self.classes)}"
                )
            if not math.isfinite(value):
                raise MouthModelError(f"viseme weight for {name!r} is not a number: {value!r}")
            if name != REST and value > 0:
                w[name] = float(value)
        total = sum(w.values())
        if total > 1.0:
            w = {k: v / total for k, v in w.items()}
        return w

    def _shape_targets(self, name: str) -> _Targets:
        assert self._rest_local is not None
        shape = self.shapes[name]
        rest = self._rest_local
        n_uo, n_lo, n_ui, n_li = len(_UO), len(_LO) - 2, len(_UI), len(_LI) - 2
        uo = rest[:n_uo]
        lo = rest[n_uo : n_uo + n_lo]
        ui = rest[n_uo + n_lo : n_uo + n_lo + n_ui]
        li = rest[n_uo + n_lo + n_ui : n_uo + n_lo + n_ui + n_li]
        jaw = rest[n_uo + n_lo + n_ui + n_li :]
        new = rest.copy()
        nuo = uo.copy()
        nlo = lo.copy()
        nui = ui.copy()
        nli = li.copy()

        # Inner lips: midline of the rest mouth, opened to the shape's aperture with a profile
        # that is a lens for spread lips and closer to an ellipse for rounded ones.
        li_full = np.concatenate([ui[:1], li, ui[-1:]], axis=0)  # corners shared with upper
        mid_v = (ui[:, 1] + li_full[:, 1]) / 2.0
        half_in = max(float(np.abs(ui[[0, -1], 0]).max()), 0.2)
        t = np.clip(ui[:, 0] / half_in, -1.0, 1.0)
        p = 1.0 - 0.5 * shape.rounding
        prof = np.clip(1.0 - t**2, 0.0, 1.0) ** p
        gap = shape.aperture * prof
        up_v = mid_v - shape.upper_share * gap
        lo_v = mid_v + (1.0 - shape.upper_share) * gap
        # Upper incisal edge: fixed to the skull (does not move with the lips).
        upper_tip = self._upper_tip(ui[:, 1], li_full[:, 1])
        if shape.tuck > 0:  # lower lip drawn up under the upper teeth
            lo_v = (1 - shape.tuck) * lo_v + shape.tuck * (upper_tip + 0.012)
        lower_drop = float(lo_v[len(lo_v) // 2] - mid_v[len(mid_v) // 2])
        jaw_drop = max(0.0, lower_drop - 0.01) * 0.9 * (1.0 - shape.tuck)

        # Corners and spread: scale u of every lip point; corners ride a little down with the jaw.
        scale = 1.0 + shape.width
        for arr in (nuo, nlo, nui, nli):
            arr[:, 0] = arr[:, 0] * scale
        corner_dv = 0.22 * lower_drop - 0.04 * shape.smile
        nui[:, 1] = up_v
        nli[:, 1] = lo_v[1:-1]
        nui[[0, -1], 1] += corner_dv
        # Rounded lips draw the inner corners toward the middle (the opening becomes round).
        nui[:, 0] *= 1.0 - 0.18 * shape.rounding * np.abs(t) ** 2
        nli[:, 0] *= 1.0 - 0.18 * shape.rounding * np.abs(t[1:-1]) ** 2

        # Outer lips follow the inner ones (lips keep roughly their thickness); pressed lips
        # get thinner, rounded lips fuller.
        d_up = np.interp(nuo[:, 0], nui[:, 0], up_v - ui[:, 1])
        d_lo = np.interp(nlo[:, 0], nui[:, 0], lo_v - li_full[:, 1])
        corner_mask_uo = np.zeros(len(nuo), dtype=bool)
        corner_mask_uo[[0, -1]] = True
        nuo[:, 1] = uo[:, 1] + 0.85 * d_up + 0.015 * shape.press - 0.035 * shape.rounding
        nlo[:, 1] = lo[:, 1] + 0.95 * d_lo - 0.02 * shape.press + 0.035 * shape.rounding
        nlo[:, 1] -= 0.035 * shape.tuck
        nuo[corner_mask_uo, 1] = uo[corner_mask_uo, 1] + corner_dv
        # Smiles pull the corners up a little more than the lips between them.
        nuo[corner_mask_uo, 0] = uo[corner_mask_uo, 0] * (scale + 0.02 * shape.smile)

        new[:n_uo] = nuo
        new[n_uo : n_uo + n_lo] = nlo
        new[n_uo + n_lo : n_uo + n_lo + n_ui] = nui
        new[n_uo + n_lo + n_ui : n_uo + n_lo + n_ui + n_li] = nli
        follow = np.array([_JAW_FOLLOW[i] for i in self._jaw_ids()], dtype=np.float64)
        new[n_uo + n_lo + n_ui + n_li :, 1] = jaw[:, 1] + jaw_drop * follow

        lower_tip = mid_v + 0.03 + 0.8 * np.clip(lo_v - mid_v, 0.0, None)
        opening_v = float(mid_v[len(mid_v) // 2] + (0.5 - shape.upper_share) * shape.aperture)
        interior = InteriorParams(
            u_samples=nui[:, 0].copy(),
            upper_tip=upper_tip,
            lower_tip=lower_tip,
            teeth_upper=shape.teeth_upper,
            teeth_lower=shape.teeth_lower * float(np.clip((shape.aperture - 0.12) / 0.15, 0, 1))
            if shape.tuck == 0
            else 0.0,
            tongue_floor=shape.tongue_floor,
            tongue_up=shape.tongue_up,
            tongue_out=shape.tongue_out,
            opening_center_v=opening_v,
            opening_half_width=float(np.abs(nui[[0, -1], 0]).max()),
        )
        if shape.teeth_lower > 0 and shape.tuck == 0 and shape.aperture < 0.12:
            # Teeth nearly together (CH): the lower edge shows just under the upper one.
            interior = replace(interior, teeth_lower=shape.teeth_lower)
        return _Targets(pts=new, interior=interior)

    def _upper_tip(self, ui_v: F64, li_v: F64) -> F64:
        """v of the upper incisal edge: just below the lip line of a closed mouth; where the
        photo shows its teeth, near the lower lip (the teeth fill a smile's opening)."""
        mid_v = (ui_v + li_v) / 2.0
        if self.rest.get("aperture", 0.0) >= 0.05:
            return ui_v + 0.8 * (li_v - ui_v)
        return mid_v + 0.012

    def _jaw_ids(self) -> tuple[int, ...]:
        n = len(_UO) + len(_LO) - 2 + len(_UI) + len(_LI) - 2
        return self._ids[n:]

    def _rest_targets(self) -> _Targets:
        assert self._rest_local is not None
        rest = self._rest_local
        n_uo, n_lo, n_ui = len(_UO), len(_LO) - 2, len(_UI)
        ui = rest[n_uo + n_lo : n_uo + n_lo + n_ui]
        li = rest[n_uo + n_lo + n_ui : n_uo + n_lo + n_ui + n_ui - 2]
        li_full = np.concatenate([ui[:1], li, ui[-1:]], axis=0)
        mid_v = (ui[:, 1] + li_full[:, 1]) / 2.0
        gap = float(self.rest.get("aperture", 0.0))
        interior = InteriorParams(
            u_samples=ui[:, 0].copy(),
            upper_tip=self._upper_tip(ui[:, 1], li_full[:, 1]),
            lower_tip=mid_v + 0.03 + 0.8 * np.clip(li_full[:, 1] - mid_v, 0.0, None),
            teeth_upper=1.0,
            teeth_lower=0.0,
            tongue_floor=0.0,
            tongue_up=0.0,
            tongue_out=0.0,
            opening_center_v=float(mid_v[len(mid_v) // 2] + 0.2 * gap),
            opening_half_width=float(np.abs(ui[[0, -1], 0]).max()),
        )
        return _Targets(pts=rest.copy(), interior=interior)

    def targets(self, weights: Mapping[str, float]) -> _Targets:
        """Landmark targets (mouth-local) and interior state for a blend of visemes."""
        w = self._normalise(weights)
        rest = self._rest_targets()
        rest_w = 1.0 - sum(w.values())
        parts = [(rest_w, rest)] + [(v, self._shape_targets(k)) for k, v in w.items()]
        pts = sum(p.pts * a for a, p in parts)
        u_ref = rest.interior.u_samples

        def blend_line(attr: str) -> F64:
            return np.asarray(
                sum(a * np.interp(u_ref, p.interior.u_samples, getattr(p.interior, attr))
                    for a, p in parts),
                dtype=np.float64,
            )  # fmt: skip

        def blend(attr: str) -> float:
            return float(sum(a * getattr(p.interior, attr) for a, p in parts))

        interior = InteriorParams(
            u_samples=np.asarray(sum(a * p.interior.u_samples for a, p in parts)),
            upper_tip=blend_line("upper_tip"),
            lower_tip=blend_line("lower_tip"),
            teeth_upper=blend("teeth_upper"),
            teeth_lower=blend("teeth_lower"),
            tongue_floor=blend("tongue_floor"),
            tongue_up=blend("tongue_up"),
            tongue_out=blend("tongue_out"),
            opening_center_v=blend("opening_center_v"),
            opening_half_width=blend("opening_half_width"),
        )
        return _Targets(pts=np.asarray(pts, dtype=np.float64), interior=interior)

    # ------------------------------------------------------------------ pixels

    def roi_points(self, weights: Mapping[str, float]) -> F64:
        """The driven landmarks for ``weights`` in ROI pixel coordinates (``landmark_ids``)."""
        assert self._frame is not None
        xy = self._frame.to_photo(self.targets(weights).pts)
        return xy - np.array([self.roi.x, self.roi.y], dtype=np.float64)

    @property
    def landmark_ids(self) -> tuple[int, ...]:
        """MediaPipe indices of the landmarks the shapes move (order of :meth:`roi_points`)."""
        return self._ids

    def opening_polygon(self, weights: Mapping[str, float]) -> F64:
        """The inner-lip polygon (ROI pixels) of the blended shape: where the interior shows."""
        pts = self.roi_points(weights)
        n_uo, n_lo, n_ui = len(_UO), len(_LO) - 2, len(_UI)
        ui = pts[n_uo + n_lo : n_uo + n_lo + n_ui]
        li = pts[n_uo + n_lo + n_ui : n_uo + n_lo + n_ui + n_ui - 2]
        li_full = np.concatenate([ui[:1], li, ui[-1:]], axis=0)
        return _lip_polygon(ui, li_full)

    def _backward_spline(self, weights: Mapping[str, float]) -> ThinPlateSpline:
        assert self._anchors is not None
        dst = self.roi_points(weights)
        src = self.roi_points({})
        # Inner-lip pairs that meet in the target stay a hair apart: the inverse map then jumps
        # steeply but monotonically across the photo's own opening (filled in later) instead of
        # oscillating around two control points that sit on top of each other.
        n_uo, n_lo, n_ui = len(_UO), len(_LO) - 2, len(_UI)
        iu = np.arange(n_uo + n_lo + 1, n_uo + n_lo + n_ui - 1)
        il = np.arange(n_uo + n_lo + n_ui, n_uo + n_lo + n_ui + n_ui - 2)
        assert self._frame is not None
        ey = self._frame.ey
        gap = (dst[il] - dst[iu]) @ ey
        min_gap = 1.6
        short = gap < min_gap
        if short.any():
            mid = (dst[il] + dst[iu]) / 2.0
            dst = dst.copy()
            dst[iu[short]] = mid[short] - ey * (min_gap / 2)
            dst[il[short]] = mid[short] + ey * (min_gap / 2)
        anchors = self._anchors
        # Spline from *output* positions to *source* positions: exactly what remap samples.
        tps = ThinPlateSpline(np.vstack([dst, anchors]), np.vstack([src, anchors]), smoothing=0.5)
        return tps

    def warp_maps(self, weights: Mapping[str, float]) -> tuple[F32, F32]:
        """Backward ``cv2.remap`` maps (ROI pixel → photo pixel, absolute) for ``weights``."""
        tps = self._backward_spline(weights)
        mx, my = backward_maps(tps, self.roi.w, self.roi.h, stride=2)
        return mx + np.float32(self.roi.x), my + np.float32(self.roi.y)

    def backward_displacement(self, weights: Mapping[str, float], xy: npt.ArrayLike) -> F64:
        """For output ROI pixels ``xy`` (M, 2) of the shape ``weights``, the offset to the photo
        ROI pixel they show (the backward warp a shader or ``cv2.remap`` needs)."""
        return self._backward_spline(weights).displacement(xy)

    def forward_displacement(self, weights: Mapping[str, float], xy: npt.ArrayLike) -> F64:
        """Where each ROI pixel ``xy`` (M, 2) of the photo's mouth *moves to* for ``weights``,
        as a displacement (M, 2) in ROI pixels (the forward warp a mesh back end needs)."""
        assert self._anchors is not None
        src = self.roi_points({})
        dst = self.roi_points(weights)
        anchors = self._anchors
        tps = ThinPlateSpline(np.vstack([src, anchors]), np.vstack([dst, anchors]), smoothing=0.5)
        return tps.displacement(xy)

    def closed_texture(self) -> U8:
        """The photo's ROI with its own mouth opening (a smile's teeth) filled with lip texture:
        the surface a mesh warp stretches; the interior is drawn separately."""
        assert self._src_open_mask is not None and self._frame is not None
        hole = (self._src_open_mask > 0.2).astype(np.uint8)
        if not hole.any():
            return self.photo_roi.copy()
        hole = np.asarray(cv2.dilate(hole, np.ones((3, 3), np.uint8)), np.uint8)
        radius = max(2.0, 0.06 * self._frame.width)
        filled = cv2.inpaint(self.photo_roi, hole * 255, radius, cv2.INPAINT_TELEA)
        return np.asarray(filled, np.uint8)

    def interior_layer(self, weights: Mapping[str, float] | None = None) -> U8:
        """One interior for all shapes (RGB uint8, whole ROI): the synthesised mouth inside for
        ``weights`` (default: wide open, upper and lower teeth, tongue low), with the photo's
        own inside (its teeth) wherever the photo shows it."""
        assert self.look is not None and self._src_open_mask is not None
        w = dict(weights) if weights is not None else {"AI": 1.0}
        inside = _match_look(self.interior_rgb(w), self.look, seed=7)
        own = cv2.GaussianBlur(self._src_open_mask, (0, 0), 0.6)[..., None]
        out = inside * (1.0 - own) + self.photo_roi.astype(np.float32) * own
        return np.asarray(np.clip(out + 0.5, 0, 255), np.uint8)

    @property
    def anchors(self) -> F64:
        """Points (ROI pixels) every shape keeps fixed: the ROI border and nose/cheek points."""
        assert self._anchors is not None
        return self._anchors.copy()

    def interior_rgb(self, weights: Mapping[str, float]) -> F32:
        """The synthesised interior (RGB float 0..255, whole ROI) for ``weights``."""
        assert self._uv is not None and self.look is not None and self._frame is not None
        t = self.targets(weights)
        return render_interior(
            self._uv[0], self._uv[1], t.interior, self.look, px_per_unit=self._frame.width
        )

    def render(self, weights: Mapping[str, float]) -> U8:
        """RGBA uint8 (roi.h, roi.w, 4): the mouth for ``weights`` (a blend of visemes; the
        remainder to 1 is Rest), with the feathered mask as alpha."""
        w = self._normalise(weights)
        key = tuple(sorted((k, round(v, 4)) for k, v in w.items()))
        cached = self._cache.get(key)
        if cached is not None:
            return cached.copy()
        alpha = np.clip(self.mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if not w:
            out = np.dstack([self.photo_roi, alpha])
        else:
            with blas_single_thread():
                out = np.dstack([self._render_rgb(w), alpha])
        if len(self._cache) < 64:
            self._cache[key] = out
        return out.copy()

    def _render_rgb(self, w: Mapping[str, float]) -> U8:
        assert self._photo is not None and self.look is not None
        assert self._src_open_mask is not None and self._frame is not None
        mx, my = self.warp_maps(w)
        warped = cv2.remap(
            self._photo, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        ).astype(np.float32)
        # Teeth the photo showed, now under a closing lip: fill with lip texture.
        from_open = cv2.remap(
            self._src_open_mask, mx - self.roi.x, my - self.roi.y, cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
        poly = self.opening_polygon(w)
        opening = _fill_aa(poly, self.roi.w, self.roi.h)
        width = self._frame.width
        need_lip = ((from_open > 0.25) & (opening < 0.5)).astype(np.uint8)
        if need_lip.any():
            need_lip = np.asarray(cv2.dilate(need_lip, np.ones((3, 3), np.uint8)), np.uint8)
            radius = max(2.0, 0.06 * width)
            filled = cv2.inpaint(
                np.clip(warped, 0, 255).astype(np.uint8), need_lip * 255, radius, cv2.INPAINT_TELEA
            ).astype(np.float32)
            soft = cv2.GaussianBlur(need_lip.astype(np.float32), (0, 0), 0.8)[..., None]
            warped = warped * (1 - soft) + filled * soft
        # Where the lips (nearly) touch, the opening is a contact line: a soft darkening, not a
        # black stroke. Thin parts of the polygon lose their coverage once blurred.
        thick = np.asarray(cv2.GaussianBlur(opening, (0, 0), max(1.0, 0.018 * width)), np.float32)
        opening = np.asarray(opening * _smoothstep(0.45, 0.8, thick), np.float32)
        # The lip contact line: a soft darker seam along the inner lips wherever they touch.
        seam = np.zeros((self.roi.h * 4, self.roi.w * 4), np.uint8)
        line = np.round((poly[: len(_UI)] * 4 + 1.5) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(seam, [line], False, 255, thickness=4, lineType=cv2.LINE_AA, shift=4)
        contact = cv2.resize(seam, (self.roi.w, self.roi.h), interpolation=cv2.INTER_AREA)
        contact = cv2.GaussianBlur(contact.astype(np.float32) / 255.0, (0, 0), 0.7)
        warped = np.asarray(
            warped * (1.0 - 0.35 * (contact * (1.0 - opening))[..., None]), np.float32
        )
        if float(opening.max()) > 0.01:
            interior = self.interior_rgb(w)
            # The lips' contact shadow: the interior darkens toward the inner lip edge.
            inside = (opening > 0.5).astype(np.uint8)
            dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3).astype(np.float32)
            shadow = 0.6 + 0.4 * np.clip(dist / max(1.5, 0.035 * width), 0.0, 1.0)
            interior = np.asarray(interior * shadow[..., None], np.float32)
            interior = _match_look(interior, self.look, seed=int(sum(ord(c) for c in str(w))))
            # The upper teeth belong to the skull, not the lips: where the photo shows its own
            # teeth, they stay exactly where they are (and look exactly like themselves).
            own = cv2.GaussianBlur(self._src_open_mask, (0, 0), 0.6)[..., None]
            if float(own.max()) > 0:
                interior = interior * (1.0 - own) + self.photo_roi.astype(np.float32) * own
            a = opening[..., None]
            warped = warped * (1 - a) + interior * a
        return np.asarray(np.clip(warped + 0.5, 0, 255), np.uint8)

    # ------------------------------------------------------------------ files

    def save(self, directory: Path) -> dict[str, str]:
        """Write ``mask_mouth.png`` (8-bit alpha) and ``mouth.json`` (rest measurement, shape
        parameters) into ``directory``; return their paths relative to it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        mask8 = np.clip(self.mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if not cv2.imwrite(str(directory / "mask_mouth.png"), mask8):
            raise OSError(f"could not write {directory / 'mask_mouth.png'}")
        info: dict[str, Any] = {
            "roi": self.roi.model_dump(),
            "classes": list(self.classes),
            "rest": self.rest,
            "shapes": {k: asdict(v) for k, v in self.shapes.items()},
        }
        (directory / "mouth.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        return {"mask": "mask_mouth.png", "mouth": "mouth.json"}


# ---------------------------------------------------------------------- helpers


def _fill_aa(poly: F64, w: int, h: int) -> F32:
    """Polygon coverage in [0, 1], 4× supersampled (a zero-area polygon covers ~nothing, unlike
    ``fillPoly``'s anti-aliased outline)."""
    ss = 4
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    pts = np.round((np.asarray(poly) * ss + (ss - 1) / 2.0) * 16.0).astype(np.int32)
    cv2.fillPoly(canvas, [pts.reshape(-1, 1, 2)], 255, lineType=cv2.LINE_8, shift=4)
    small = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _smoothstep(e0: float, e1: float, x: F32) -> F32:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float32)


def _match_look(rgb: F32, look: PhotoLook, *, seed: int) -> F32:
    """Give synthetic pixels the photo's softness and grain."""
    out = rgb
    if look.blur_sigma > 0.3:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), look.blur_sigma), np.float32)
    if look.noise_sigma > 0.2:
        rng = np.random.default_rng(seed)
        grain = rng.normal(0.0, look.noise_sigma, out.shape[:2]).astype(np.float32)
        chroma = rng.normal(0.0, 0.3 * look.noise_sigma, out.shape).astype(np.float32)
        out = out + grain[..., None] + chroma
    return out.astype(np.float32)


def _estimate_look(photo: U8, xy: F64, width: float, roi: ROI) -> PhotoLook:
    x0, y0 = roi.x, roi.y
    patch = photo[y0 : y0 + roi.h, x0 : x0 + roi.w]
    h, w = patch.shape[:2]
    outer = _fill_aa(lmk.points(xy, lmk.LIPS_OUTER) - [x0, y0], w, h) > 0.5
    inner = _fill_aa(lmk.points(xy, lmk.LIPS_INNER) - [x0, y0], w, h) > 0.5
    lip_px = patch[outer & ~inner]
    lip = np.median(lip_px, axis=0) if len(lip_px) > 10 else np.array([170.0, 90.0, 90.0])
    ring = cv2.dilate(outer.astype(np.uint8), np.ones((int(width * 0.25) | 1,) * 2, np.uint8))
    skin_sel = (ring > 0) & ~cv2.dilate(outer.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(
        bool
    )
    skin_px = patch[skin_sel]
    skin = np.median(skin_px, axis=0) if len(skin_px) > 10 else lip * 1.1
    # Teeth: the photo's own where they show (bright pixels inside the inner lips), otherwise an
    # off-white lit like the skin (teeth in photos are rarely whiter than the lit skin allows).
    in_px = patch[inner].astype(np.float64)
    if len(in_px) > 30:
        lum = in_px.mean(axis=1)
        bright = in_px[lum >= np.percentile(lum, 70)]
        teeth = np.median(bright, axis=0)
        if teeth.mean() < skin.mean() * 0.9:
            teeth = None
    else:
        teeth = None
    if teeth is None:
        level = min(235.0, float(skin.mean()) * 1.22)
        tint = skin / max(float(skin.mean()), 1.0)
        teeth = level * (0.62 + 0.38 * tint) * np.array([1.0, 0.97, 0.92])
    gray = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # Grain: robust spread of the high-pass residual on the skin.
    resid = gray - cv2.GaussianBlur(gray, (0, 0), 1.2)
    sel = resid[skin_sel] if skin_sel.any() else resid.ravel()
    noise = float(1.4826 * np.median(np.abs(sel - np.median(sel))))
    # Softness: a Gaussian-blurred step of contrast C has peak gradient C / (σ·√(2π)).
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    grad = np.hypot(gx, gy)
    lips_band = cv2.dilate(outer.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    g = grad[lips_band]
    contrast = float(np.percentile(gray[lips_band], 95) - np.percentile(gray[lips_band], 5))
    peak = float(np.percentile(g, 98)) if g.size else 1.0
    sigma = contrast / max(peak, 1e-3) / math.sqrt(2 * math.pi) if contrast > 5 else 1.0
    # The estimate includes the rendered edge's own ~0.6 px; keep it in a sane range.
    sigma = float(np.clip(math.sqrt(max(sigma**2 - 0.6**2, 0.0)), 0.3, 2.5))
    return PhotoLook(
        lip=tuple(float(c) for c in lip),  # type: ignore[arg-type]
        skin=tuple(float(c) for c in skin),  # type: ignore[arg-type]
        teeth=tuple(float(c) for c in np.clip(teeth, 0, 255)),  # type: ignore[arg-type]
        blur_sigma=sigma,
        noise_sigma=float(np.clip(noise, 0.0, 12.0)),
    )


def build_mouth_model(photo_rgb: npt.NDArray[np.uint8], face: FaceAnalysis) -> MouthModel:
    """Measure the photo's mouth and set up ROI, mask and the 12 lip shapes.

    ``face`` is the :class:`lipcore.avatar.face.FaceAnalysis` of ``photo_rgb`` (any object with
    ``landmarks`` (478, 2|3) in pixels and a ``blendshapes`` dict works).
    """
    photo = np.ascontiguousarray(photo_rgb)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise MouthModelError(
            f"the photo must be RGB uint8 H×W×3, got {photo.dtype} {photo.shape}; "
            "load it with lipcore.avatar.image.load_photo"
        )
    xy = np.asarray(face.landmarks, dtype=np.float64)[:, :2]
    img_h, img_w = photo.shape[:2]
    left, right = xy[lmk.MOUTH_CORNERS[0]], xy[lmk.MOUTH_CORNERS[1]]
    width = float(np.hypot(*(right - left)))
    if width < _MIN_MOUTH_PX:
        raise MouthModelError(
            f"the mouth is only {width:.0f} px wide; at least {_MIN_MOUTH_PX:.0f} px are needed "
            "for lip shapes: use a photo where the face is larger"
        )
    ex = (right - left) / width
    ey = np.array([-ex[1], ex[0]])
    frame = _Frame(center=(left + right) / 2.0, ex=ex, ey=ey, width=width)

    # ROI: corners ± 0.75 W sideways, from under the nose to well below the chin (the jaw drops).
    chin = xy[lmk.CHIN]
    chin_v = float(frame.to_local(chin)[1])
    nose_v = float(frame.to_local(xy[2])[1])
    box_local = np.array(
        [[u, v] for u in (-1.25, 1.25) for v in (min(nose_v + 0.05, -0.35), chin_v + 0.55)]
    )
    box = frame.to_photo(box_local)
    x0 = int(max(0, math.floor(box[:, 0].min())))
    y0 = int(max(0, math.floor(box[:, 1].min())))
    x1 = int(min(img_w, math.ceil(box[:, 0].max())))
    y1 = int(min(img_h, math.ceil(box[:, 1].max())))
    if x1 - x0 < 2 * width or y1 - y0 < width:
        raise MouthModelError(
            "the mouth is too close to the photo's border to animate it; use a photo with some "
            "room around the chin and the mouth corners"
        )
    roi = ROI(x=x0, y=y0, w=x1 - x0, h=y1 - y0)

    jaw_ids = tuple(i for i in _JAW_FOLLOW)
    ids = tuple(_UO) + tuple(_LO[1:-1]) + tuple(_UI) + tuple(_LI[1:-1]) + jaw_ids
    rest_local = frame.to_local(xy[list(ids)])

    # Mouth-local coordinates of every ROI pixel (for the interior and the mask).
    gx, gy = np.meshgrid(np.arange(roi.w, dtype=np.float64) + x0, np.arange(roi.h) + y0)
    uv = frame.to_local(np.stack([gx, gy], axis=-1))
    u = uv[..., 0].astype(np.float32)
    v = uv[..., 1].astype(np.float32)

    # Mask: an ellipse over lips, chin and the corners' surroundings, feathered, and zero on the
    # ROI border (so the patch never shows an edge).
    v_c = (min(nose_v, -0.3) + chin_v + 0.48) / 2.0 + 0.03
    r_v = (chin_v + 0.48 - min(nose_v, -0.3)) / 2.0
    ell = (np.abs(u) / 1.08) ** 3 + (np.abs(v - v_c) / r_v) ** 3
    mask = np.clip((1.15 - ell) / 0.35, 0.0, 1.0).astype(np.float32)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.06 * width))
    edge = max(2, int(0.04 * width))
    ramp_x = np.clip(np.minimum(np.arange(roi.w), roi.w - 1 - np.arange(roi.w)) / edge, 0, 1)
    ramp_y = np.clip(np.minimum(np.arange(roi.h), roi.h - 1 - np.arange(roi.h)) / edge, 0, 1)
    mask = (mask * ramp_y[:, None] * ramp_x[None, :]).astype(np.float32)

    # Anchors: ROI border plus fixed face points inside the ROI.
    anchors = [border_anchors(roi.w, roi.h, step=max(8.0, 0.22 * width))]
    fixed = np.array([xy[i] - [x0, y0] for i in _FIXED], dtype=np.float64)
    inside = (
        (fixed[:, 0] > 2) & (fixed[:, 0] < roi.w - 3)
        & (fixed[:, 1] > 2) & (fixed[:, 1] < roi.h - 3)
    )  # fmt: skip
    anchors.append(fixed[inside])
    anchor_arr = np.vstack(anchors)

    # Drop driven jaw points that fall outside the ROI (the border anchors hold them).
    driven_xy = xy[list(ids)] - [x0, y0]
    keep = (
        (driven_xy[:, 0] > 1) & (driven_xy[:, 0] < roi.w - 2)
        & (driven_xy[:, 1] > 1) & (driven_xy[:, 1] < roi.h - 2)
    )  # fmt: skip
    n_lips = len(ids) - len(jaw_ids)
    keep[:n_lips] = True
    ids = tuple(i for i, k in zip(ids, keep, strict=True) if k)
    rest_local = rest_local[keep]

    # The photo's own opening (teeth of a smiling photo), in ROI pixels.
    src_open = _fill_aa(lmk.points(xy, lmk.LIPS_INNER) - [x0, y0], roi.w, roi.h)
    aperture = lmk.mouth_aperture(xy)
    if aperture < 0.02:
        src_open[:] = 0.0
    bs = dict(getattr(face, "blendshapes", {}) or {})
    up_thick = float(np.hypot(*(xy[13] - xy[0]))) / width
    lo_thick = float(np.hypot(*(xy[17] - xy[14]))) / width
    rest = {
        "width_px": width,
        "aperture": float(aperture),
        "smile": float((bs.get("mouthSmileLeft", 0.0) + bs.get("mouthSmileRight", 0.0)) / 2),
        "jaw_open": float(bs.get("jawOpen", 0.0)),
        "upper_lip_thickness": up_thick,
        "lower_lip_thickness": lo_thick,
        "roll_deg": float(math.degrees(math.atan2(ex[1], ex[0]))),
        "teeth_visible": float(aperture >= 0.05),
    }
    look = _estimate_look(photo, xy, width, roi)
    rest.update(blur_sigma=look.blur_sigma, noise_sigma=look.noise_sigma)
    model = MouthModel(
        roi=roi,
        mask=mask,
        rest=rest,
        classes=_classes(),
        photo_roi=photo[y0 : y0 + roi.h, x0 : x0 + roi.w].copy(),
        look=look,
        landmarks=xy.copy(),
        _photo=photo,
        _frame=frame,
        _ids=ids,
        _rest_local=rest_local,
        _anchors=anchor_arr,
        _src_open_mask=src_open,
        _uv=(u, v),
    )
    return model
