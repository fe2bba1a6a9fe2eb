"""The mouth interior a closed-mouth photo does not have: cavity, teeth, tongue.

Everything is drawn procedurally in *mouth-local* coordinates (origin between the mouth corners,
``u`` along the corner axis, ``v`` downwards, both in units of the mouth width), so one
description fits any photo size and head roll. What makes it read as a mouth and not as a
sticker (a flat teeth band or a flat dark hole reads as fake at once):

* the cavity is dark red-brown taken from the lip colour, darkest toward the corners and in the
  depth (the throat), a little lighter where the tongue floor catches light;
* upper teeth hang from the upper jaw, so for small openings the upper lip hides their roots;
  separate teeth show as soft darker seams with slightly rounded tips, and the arch turns away
  from the camera toward the corners, so teeth there are narrower and darker;
* lower teeth only appear when the jaw drops far;
* the tongue (its tip raised for L, between the teeth for TH) is shaded like a rounded body;
* the lips cast a soft contact shadow into the opening, and the result gets the photo's own blur
  and grain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["InteriorParams", "PhotoLook", "render_interior"]

F32 = npt.NDArray[np.float32]

# Tooth boundaries across the arch, from the middle outwards (units of mouth width). The arch
# turns away from the camera, so teeth get narrower toward the corners (foreshortening).
_UPPER_SEAMS = (0.0, 0.085, 0.150, 0.205, 0.250)
_LOWER_SEAMS = (0.0, 0.055, 0.105, 0.150, 0.190, 0.225)


@dataclass(frozen=True)
class PhotoLook:
    """Colours and image quality sampled from the photo, so the interior matches it."""

    lip: tuple[float, float, float]  # RGB 0..255
    skin: tuple[float, float, float]
    teeth: tuple[float, float, float]
    blur_sigma: float  # px: the photo's own edge softness
    noise_sigma: float  # grey levels: the photo's grain


@dataclass(frozen=True)
class InteriorParams:
    """Interior state for one (possibly blended) mouth shape. Lines are functions of ``u``
    sampled at ``u_samples`` (mouth-local units)."""

    u_samples: npt.NDArray[np.float64]
    upper_tip: npt.NDArray[np.float64]  # v of the upper incisal edge
    lower_tip: npt.NDArray[np.float64]  # v of the lower incisal edge
    teeth_upper: float  # 0..1 visibility
    teeth_lower: float
    tongue_floor: float  # 0..1 tongue lying low (open vowels)
    tongue_up: float  # 0..1 tongue tip raised behind the upper teeth (L)
    tongue_out: float  # 0..1 tongue tip between the teeth (TH)
    opening_center_v: float  # v of the middle of the opening
    opening_half_width: float  # u half-width of the inner mouth


def _smoothstep(e0: float, e1: float, x: F32) -> F32:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float32)


def _seam_field(u: F32, seams: tuple[float, ...], width: float) -> tuple[F32, F32]:
    """Darkening at tooth seams (0..1) and the distance to the nearest seam, normalised by the
    local tooth width (0 at a seam, ~0.5 in the middle of a tooth)."""
    au = np.abs(u)
    s = np.asarray(seams, dtype=np.float32)
    d = np.abs(au[..., None] - s[None, None, :])
    nearest = d.min(axis=-1)
    idx = np.clip(np.searchsorted(s, au), 1, len(s) - 1)
    local_w = (s[idx] - s[idx - 1]).astype(np.float32)
    seam = np.exp(-((nearest / width) ** 2)).astype(np.float32)
    return seam, (nearest / np.maximum(local_w, 1e-3)).astype(np.float32)


def render_interior(
    u: F32,
    v: F32,
    params: InteriorParams,
    look: PhotoLook,
    *,
    px_per_unit: float,
    rng_seed: int = 0,
) -> F32:
    """RGB float32 (0..255) interior on the pixel grid whose mouth-local coordinates are
    ``u``, ``v``. It covers the whole grid; the caller clips it with the opening polygon."""
    lip = np.asarray(look.lip, dtype=np.float32)
    teeth_col = np.asarray(look.teeth, dtype=np.float32)
    hw = max(params.opening_half_width, 0.05)
    px = 1.0 / px_per_unit  # one pixel in mouth units, for anti-aliased edges

    def line(values: npt.NDArray[np.float64]) -> F32:
        return np.interp(u, params.u_samples, values).astype(np.float32)

    upper_tip = line(params.upper_tip)
    lower_tip = line(params.lower_tip)
    side = np.clip(np.abs(u) / hw, 0.0, 1.5).astype(np.float32)

    # Cavity: dark, warm; darkest toward the corners and in the throat.
    cavity_col = lip * np.float32(0.36) + np.float32(3.0)
    bright = 0.75 * np.exp(-((side / 0.55) ** 2)) + 0.12
    throat = np.exp(-((u / (0.30 * hw)) ** 2) - ((v - params.opening_center_v) / 0.06) ** 2)
    bright = bright * (1.0 - 0.45 * throat)
    out = cavity_col[None, None, :] * bright[..., None].astype(np.float32)

    def over(img: F32, col: F32, alpha: F32) -> F32:
        return np.asarray(img * (1.0 - alpha[..., None]) + col * alpha[..., None], np.float32)

    # Tongue lying on the floor of the mouth (seen when the jaw is well down).
    tongue_col = lip * np.float32(0.78) + np.array([10.0, -4.0, 0.0], dtype=np.float32)
    if params.tongue_floor > 0.01:
        # The tongue's back arches up in the middle of the mouth.
        top = lower_tip - 0.06 * np.exp(-((u / (0.55 * hw)) ** 2)) - 0.015
        body = _smoothstep(-px, px, v - top) * np.exp(-((u / (0.8 * hw)) ** 4))
        shade = 0.45 + 0.4 * np.exp(-((u / (0.45 * hw)) ** 2)) * _smoothstep(0.06, 0.0, v - top)
        col = tongue_col[None, None, :] * shade[..., None].astype(np.float32)
        out = over(out, col, (body * params.tongue_floor).astype(np.float32))

    # Tongue tip raised behind the upper teeth (L): a rounded body rising from the floor.
    if params.tongue_up > 0.01:
        cv_ = upper_tip + 0.02
        r_u, r_v = 0.16 * hw + 0.02, 0.20
        d = (u / r_u) ** 2 + ((v - (cv_ + r_v * 0.9)) / r_v) ** 2
        body = _smoothstep(1.0 + 2 * px / r_u, 1.0 - 2 * px / r_u, d.astype(np.float32))
        shade = 0.45 + 0.45 * np.clip(1.0 - d, 0.0, 1.0) ** 0.5
        col = tongue_col[None, None, :] * shade[..., None].astype(np.float32)
        out = over(out, col, (body * params.tongue_up).astype(np.float32))

    def teeth_layer(
        tip: F32, seams: tuple[float, ...], upper: bool, vis: float, gain: float
    ) -> tuple[F32, F32]:
        seam, rel = _seam_field(u, seams, 0.004 + 0.3 * px)
        # Each tooth's incisal edge is slightly rounded toward its seams.
        round_tip = 0.010 * (1.0 - np.clip(rel * 2.0, 0.0, 1.0)) ** 2
        if upper:
            edge = tip - round_tip
            body = _smoothstep(px, -px, v - edge)  # teeth above the incisal edge
            depth = np.clip(edge - v, 0.0, None)
        else:
            edge = tip + round_tip
            body = _smoothstep(-px, px, v - edge)
            depth = np.clip(v - edge, 0.0, None)
        arch = np.clip(1.0 - 0.8 * side**2.2, 0.0, 1.0)
        body = body * _smoothstep(1.02, 0.85, side)
        # Brighter in each tooth's middle, darker in the seams; the incisal edge is a little
        # translucent (darker), the root end lies in the lip's shadow.
        light = (0.92 + 0.16 * np.clip(rel * 2.0, 0.0, 1.0)) * arch * gain
        light = light * (1.0 - 0.38 * seam)
        light = light * (0.82 + 0.18 * _smoothstep(0.0, 0.02, depth))
        col = teeth_col[None, None, :] * light[..., None].astype(np.float32)
        return col.astype(np.float32), (body * vis).astype(np.float32)

    if params.teeth_lower > 0.01:
        col, a = teeth_layer(lower_tip, _LOWER_SEAMS, False, params.teeth_lower, 0.72)
        out = over(out, col, a)
    if params.teeth_upper > 0.01:
        col, a = teeth_layer(upper_tip, _UPPER_SEAMS, True, params.teeth_upper, 1.0)
        out = over(out, col, a)

    # Tongue tip between the teeth (TH): in front of the upper teeth, lit from the front.
    if params.tongue_out > 0.01:
        cv_ = upper_tip + 0.015
        r_u, r_v = 0.20 * hw + 0.02, 0.045
        d = (u / r_u) ** 2 + ((v - cv_) / r_v) ** 2
        body = _smoothstep(1.0 + 2 * px / r_v, 1.0 - 2 * px / r_v, d.astype(np.float32))
        body = body * _smoothstep(-px, px, v - (upper_tip - 0.01))
        shade = 0.62 + 0.38 * np.clip(1.0 - d, 0.0, 1.0) ** 0.5
        col = (lip * np.float32(0.92))[None, None, :] * shade[..., None].astype(np.float32)
        out = over(out, col, (body * params.tongue_out).astype(np.float32))

    del rng_seed  # grain is added by the caller, after the composite
    return np.asarray(np.clip(out, 0.0, 255.0), dtype=np.float32)
