"""The idle loop: a seamless few-second video of the photo that breathes.

One still photo becomes a 3–5 s loop with

* **micro head motion**: roll within ±2° plus sub-percent translation and scale, each a sum of
  sinusoids with a whole number of cycles per loop, so the motion is exactly periodic and the
  loop has no seam (the step from the last frame to the first is an ordinary step); the loop
  starts where the head moves briskly, so the encoder's key frame at 0 never shows as a held
  frame;
* **slight parallax**: the head (face oval widened, plus hair) moves as one rigid similarity
  transform; the motion fades with distance from the head to a small fraction of it in the
  background. The displacement field is built from precomputed coordinate grids and applied
  with one ``cv2.remap`` per frame;
* **1–2 blinks** (~210 ms, closing faster than opening) away from the loop seam: a local
  displacement field pulls the upper-lid skin down over the eye, driven by the eyelid
  landmarks, so a face landmarker sees closed eyes (``eyeBlinkLeft/Right`` fire);
* the **mouth at rest**, moving rigidly with the head. Per frame, the affine that maps photo
  pixels to frame pixels around the mouth is exported as the **mouth track**: it is *exactly*
  the motion applied there (the displacement is rigid over the whole face), so an overlay placed
  with it sticks to the lips.

    result = build_idle_loop(photo_rgb, face, Path("idle.mp4"))
    result.mouth_track.affines[i]   # [a, b, c, d, e, f]: (x, y) → (a*x+b*y+c, d*x+e*y+f)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from lipcore.errors import InputError
from lipcore.media import VideoWriter
from lipcore.models import MouthTrack

__all__ = [
    "BlinkSpec",
    "IdleLoopResult",
    "IdleMotion",
    "IdleRenderer",
    "build_idle_loop",
    "loop_steps",
    "plan_idle_motion",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
ProgressCallback = Callable[[float], None]

# MediaPipe canonical-mesh indices used here (the subject's sides, as MediaPipe names them).
_FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
_CHIN = 152
_FOREHEAD = 10
_EYES = {
    "right": (
        (33, 246, 161, 160, 159, 158, 157, 173, 133),  # upper lid, corner to corner
        (33, 7, 163, 144, 145, 153, 154, 155, 133),  # lower lid
    ),
    "left": (
        (362, 398, 384, 385, 386, 387, 388, 466, 263),
        (362, 382, 381, 380, 374, 373, 390, 249, 263),
    ),
}

# Motion amplitudes (peak). Roll is kept well inside ±2°; translation/scale are sub-percent.
_ROLL_DEG = (1.1, 0.45)  # cycles 1 and 2 per loop
_SHIFT_FRAC = (0.0035, 0.0025)  # of the image's long side: x, y
_SCALE_FRAC = 0.004
_BACKGROUND_FRACTION = 0.15  # the background moves this much of the head motion
_MAX_ROLL_DEG = 1.9

# Blink profile (ms): eyelids close fast, hold briefly, and open more slowly.
_BLINK_CLOSE_MS = 70.0
_BLINK_HOLD_MS = 30.0
_BLINK_OPEN_MS = 110.0
_BLINK_MS = _BLINK_CLOSE_MS + _BLINK_HOLD_MS + _BLINK_OPEN_MS
_SEAM_GUARD_S = 0.5  # no blink this close to the loop seam
_SEAM_WINDOW = 3  # steps either side of the seam that must all be brisk
_MAP_STEP = 4  # the displacement maps are computed on a grid this much coarser


class FaceLike(Protocol):
    """What the idle loop needs of a face analysis: (478, 2|3) landmarks in photo pixels."""

    @property
    def landmarks(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class BlinkSpec:
    """One blink: when it starts (ms on the loop timeline) and its phases."""

    start_ms: float
    close_ms: float = _BLINK_CLOSE_MS
    hold_ms: float = _BLINK_HOLD_MS
    open_ms: float = _BLINK_OPEN_MS

    def closure(self, t_ms: float) -> float:
        """Eyelid closure in [0, 1] at ``t_ms`` (0 open, 1 closed)."""
        t = t_ms - self.start_ms
        if t <= 0:
            return 0.0
        if t < self.close_ms:
            return _smoothstep(t / self.close_ms)
        t -= self.close_ms
        if t <= self.hold_ms:
            return 1.0
        t -= self.hold_ms
        if t < self.open_ms:
            return 1.0 - _smoothstep(t / self.open_ms)
        return 0.0


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class IdleMotion:
    """The per-frame plan of a loop: head similarity, background similarity and eyelids.

    The head transform of frame ``i`` maps photo pixel ``p`` to
    ``pivot + scale * R(roll) @ (p - pivot) + shift``; the background's is the same with every
    shift and scale change multiplied by ``background_fraction`` and no roll.
    """

    frames: int
    fps: float
    pivot: tuple[float, float]
    roll_deg: F64
    shift: F64  # (frames, 2) pixels
    scale: F64
    eyelid: F64  # closure per frame, [0, 1]
    blinks: tuple[BlinkSpec, ...]
    background_fraction: float = _BACKGROUND_FRACTION

    def head_affine(self, i: int) -> F64:
        """2×3 forward affine (photo → frame) of the head in frame ``i``."""
        return _similarity(self.pivot, float(self.roll_deg[i]), float(self.scale[i]), self.shift[i])

    def background_affine(self, i: int) -> F64:
        k = self.background_fraction
        # The background shifts a little with the head (parallax) but does not roll with it:
        # a roll about the neck would swing far corners by more than the head moves.
        return _similarity(
            self.pivot,
            0.0,
            1.0 + (float(self.scale[i]) - 1.0) * k,
            self.shift[i] * k,
        )

    @property
    def blink_frames(self) -> list[int]:
        """Frames where the eyes are at least half closed."""
        return [int(i) for i in np.flatnonzero(self.eyelid >= 0.5)]


def _similarity(pivot: tuple[float, float], roll_deg: float, scale: float, shift: F64) -> F64:
    th = math.radians(roll_deg)
    c, s = math.cos(th) * scale, math.sin(th) * scale
    px, py = pivot
    return np.array(
        [
            [c, -s, px - c * px + s * py + shift[0]],
            [s, c, py - s * px - c * py + shift[1]],
        ],
        dtype=np.float64,
    )


def _landmarks_xy(face: FaceLike | np.ndarray) -> F64:
    lm = face if isinstance(face, np.ndarray) else face.landmarks
    arr = np.asarray(lm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 468 or arr.shape[1] < 2:
        raise InputError(
            f"the idle loop needs MediaPipe face landmarks of shape (478, 2|3), got {arr.shape}"
        )
    return arr[:, :2]


def _head_geometry(xy: F64) -> tuple[F64, float, float, tuple[float, float]]:
    """Head polygon (face oval widened, hair added), face width, face height and pivot."""
    oval = xy[list(_FACE_OVAL)]
    centre = oval.mean(axis=0)
    face_w = float(np.ptp(oval[:, 0]))
    face_h = float(np.linalg.norm(xy[_CHIN] - xy[_FOREHEAD]))
    # The face's "up" direction (forehead above chin), for hair and the neck pivot.
    up = (xy[_FOREHEAD] - xy[_CHIN]) / max(face_h, 1e-6)
    rel = oval - centre
    poly = centre + rel * 1.12
    # Hair: push the upper half of the outline further up (hair rides with the head).
    along = rel @ up
    lift = np.clip(along / max(float(along.max()), 1e-6), 0.0, 1.0) * 0.35 * face_h
    poly = poly + lift[:, None] * up[None, :]
    pivot_xy = xy[_CHIN] - up * 0.3 * face_h  # the neck, below the chin
    return poly, face_w, face_h, (float(pivot_xy[0]), float(pivot_xy[1]))


def plan_idle_motion(
    xy: F64,
    image_size: tuple[int, int],
    *,
    seconds: float = 4.0,
    fps: float = 25.0,
    seed: int = 0,
    blinks: int | None = None,
) -> IdleMotion:
    """Plan a seamless loop: periodic head motion and blinks away from the seam.

    ``image_size`` is (width, height). ``blinks`` defaults to 1 for loops up to 4.5 s, else 2.
    """
    if not (3.0 <= seconds <= 5.0 + 1e-9):
        raise InputError(f"the idle loop lasts 3–5 s (seamless and short); got {seconds} s")
    if not (20.0 <= fps <= 30.0 + 1e-9):
        raise InputError(f"the idle loop runs at 20–30 fps; got {fps}")
    n = round(seconds * fps)
    rng = np.random.default_rng(seed)
    _, _, _, pivot = _head_geometry(xy)
    long_side = float(max(image_size))
    # Evaluate on a fine time grid to pick where the loop starts: at a slow moment, so the
    # seam (last → first frame) is a step no bigger than a typical one.
    phases = rng.uniform(0, 2 * np.pi, size=6)
    t = np.arange(n, dtype=np.float64) / n  # loop phase in [0, 1)

    def motion(tt: F64) -> tuple[F64, F64, F64]:
        roll = _ROLL_DEG[0] * np.sin(2 * np.pi * tt + phases[0]) + _ROLL_DEG[1] * np.sin(
            4 * np.pi * tt + phases[1]
        )
        sx = _SHIFT_FRAC[0] * long_side * np.sin(2 * np.pi * tt + phases[2])
        sy = _SHIFT_FRAC[1] * long_side * np.sin(4 * np.pi * tt + phases[3]) * 0.6 + (
            _SHIFT_FRAC[1] * long_side * 0.4 * np.sin(2 * np.pi * tt + phases[4])
        )
        scale = 1.0 + _SCALE_FRAC * np.sin(2 * np.pi * tt + phases[5])
        roll = np.clip(roll, -_MAX_ROLL_DEG, _MAX_ROLL_DEG)
        return roll, np.stack([sx, sy], axis=1), scale

    roll, shift, scale = motion(t)
    # Speed of a point one face-width from the pivot, per step (cyclic).
    face_w = float(np.ptp(xy[list(_FACE_OVAL), 0]))
    d_roll = np.radians(np.diff(np.append(roll, roll[0]))) * face_w
    d_shift = np.linalg.norm(np.diff(np.vstack([shift, shift[:1]]), axis=0), axis=1)
    d_scale = np.abs(np.diff(np.append(scale, scale[0]))) * face_w
    speed = np.abs(d_roll) + d_shift + d_scale
    # speed[k] is the step k → k+1; starting at frame s makes step s-1 → s the seam.
    # The seam goes where the head moves briskly, every step around it well above the slow
    # turning points. A seam at a slow moment (as first built) looked like a held frame: the
    # key frame at 0 and H.264's predicted frames after it "stick" when the motion per frame is
    # sub-pixel, so 0 → 1 showed ~0.02x the median flow, a hitch every loop (docs/architecture.md).
    window = np.stack([np.roll(speed, -d) for d in range(-_SEAM_WINDOW, _SEAM_WINDOW + 1)])
    seam_step = int(np.argmax(window.min(axis=0)))
    start = (seam_step + 1) % n
    roll, shift, scale = (
        np.roll(roll, -start),
        np.roll(shift, -start, axis=0),
        np.roll(scale, -start),
    )

    n_blinks = (1 if seconds <= 4.5 else 2) if blinks is None else blinks
    loop_ms = n / fps * 1000.0
    specs = _place_blinks(n_blinks, loop_ms, fps, rng)
    times = np.arange(n) / fps * 1000.0
    eyelid = np.array([max((b.closure(tm) for b in specs), default=0.0) for tm in times])
    return IdleMotion(
        frames=n,
        fps=fps,
        pivot=pivot,
        roll_deg=roll,
        shift=shift,
        scale=scale,
        eyelid=eyelid,
        blinks=tuple(specs),
    )


def _place_blinks(
    count: int, loop_ms: float, fps: float, rng: np.random.Generator
) -> list[BlinkSpec]:
    if count <= 0:
        return []
    frame_ms = 1000.0 / fps
    guard = _SEAM_GUARD_S * 1000.0
    span = (loop_ms - 2 * guard - _BLINK_MS) / count
    if span <= 0:
        raise InputError(f"a {loop_ms / 1000:.1f} s loop has no room for {count} blinks")
    specs = []
    for k in range(count):
        lo = guard + k * span
        start = lo + rng.uniform(0.2, 0.8) * max(span - frame_ms, 0.0)
        # Align so that a frame falls in the middle of the closed hold (a full blink on video).
        mid_hold = start + _BLINK_CLOSE_MS + _BLINK_HOLD_MS / 2
        mid_hold = round(mid_hold / frame_ms) * frame_ms
        specs.append(BlinkSpec(start_ms=mid_hold - _BLINK_CLOSE_MS - _BLINK_HOLD_MS / 2))
    return specs


@dataclass
class _EyeWarp:
    """Precomputed geometry of one eye's blink warp (a patch of the photo).

    Coordinates are in the eye's own frame: ``ru`` along the corner axis, ``rv`` down."""

    x0: int
    y0: int
    xs: F32  # patch pixel coordinates
    ys: F32
    rv: F64
    top: F64  # upper lid margin (v) at each pixel's u
    gap: F64  # lid opening at each pixel's u (0 beyond the corners)
    above: float  # height of skin above the margin that unfolds over the eye
    overshoot: float  # how far past the lower-lid landmarks the closed margin reaches
    sigma: float
    vdir: tuple[float, float]
    lid_rgb: F32  # mean colour of the lid skin just above the margin
    width: float

    def shading(self, closure: float) -> tuple[F32, F32]:
        """(cover, lash) weights per patch pixel: where the closing lid covers the eye (a
        smooth skin tone evens out the smeared lashes) and the dark lash line at its margin."""
        edge = self.top + closure * (self.gap + self.overshoot * (self.gap > 0))
        soft = max(0.8, 0.03 * self.width)
        inside = np.clip((self.rv - self.top) / soft, 0, 1) * np.clip((edge - self.rv) / soft, 0, 1)
        taper = np.clip(self.gap / max(1e-6, float(self.gap.max())) * 2.0, 0, 1)
        cover = (inside * taper * closure).astype(np.float32)
        lw = max(0.8, LASH * self.width)
        lash = (np.exp(-(((self.rv - edge) / lw) ** 2)) * taper * closure).astype(np.float32)
        return cover, lash

    def displacement(self, closure: float) -> F32:
        """Source offset along ``vdir`` per patch pixel for a lid ``closure`` in [0, 1].

        The upper lid margin moves from ``top`` to ``top + closure * gap``; the skin above it
        (``above`` tall) stretches to follow, while the eye below the moving margin stays put:
        the lid slides over the eyeball, it does not squash it."""
        edge = self.top + closure * (self.gap + self.overshoot * (self.gap > 0))
        skin_top = self.top - self.above
        rv = self.rv
        band = (rv >= skin_top) & (rv < edge)
        src = rv.copy()
        scale = self.above / np.maximum(edge - skin_top, 1e-6)
        src[band] = (skin_top + (rv - skin_top) * scale)[band]
        dv = (src - rv).astype(np.float32)
        # Soften the corners of the piecewise map so the lid edge is smooth, not stair-stepped.
        return np.asarray(cv2.GaussianBlur(dv, (0, 0), self.sigma), dtype=np.float32)


class IdleRenderer:
    """Renders frames of a planned loop from the photo. Grids and weights are built once."""

    def __init__(self, photo_rgb: np.ndarray, xy: F64, motion: IdleMotion) -> None:
        if photo_rgb.ndim != 3 or photo_rgb.shape[2] != 3 or photo_rgb.dtype != np.uint8:
            raise InputError(
                f"the photo must be an H×W×3 uint8 RGB array, got {photo_rgb.shape} "
                f"{photo_rgb.dtype}"
            )
        self.photo = np.ascontiguousarray(photo_rgb)
        self.motion = motion
        h, w = photo_rgb.shape[:2]
        poly, face_w, _, _ = _head_geometry(xy)
        # Head weight: 1 inside the head polygon, fading with distance to 0 outside.
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
        dist = cv2.distanceTransform(255 - mask, cv2.DIST_L2, 5)
        fade = max(8.0, 0.45 * face_w)
        x = np.clip(1.0 - dist / fade, 0.0, 1.0)
        self.weight: F32 = (x * x * (3.0 - 2.0 * x)).astype(np.float32)
        # The maps are smooth (affine inside the head, a slow blend outside), so they are
        # computed on a grid 4× coarser and upsampled bilinearly. Grid node j sits where
        # cv2.resize samples it (x = 4j + 1.5), and bilinear interpolation reproduces an affine
        # map exactly: inside the head the upsampled map *is* the head transform.
        k = _MAP_STEP
        self._size = (w, h)
        lh, lw = -(-h // k), -(-w // k)
        gy, gx = np.mgrid[0:lh, 0:lw].astype(np.float64)
        gx, gy = gx * k + (k - 1) / 2, gy * k + (k - 1) / 2
        wl = cv2.remap(
            self.weight,
            gx.astype(np.float32),
            gy.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float64)
        self._grid = (gx, gy, wl, wl * gx, wl * gy)
        self._eyes = [_eye_warp(self.photo, xy, side) for side in ("right", "left")]

    def inverse_maps(self, i: int) -> tuple[F32, F32]:
        """Source-pixel maps (for ``cv2.remap``) of frame ``i``: a blend of the inverse head and
        background transforms by the head weight (exactly the head's inside the head)."""
        hb = _invert(self.motion.head_affine(i))
        bb = _invert(self.motion.background_affine(i))
        d = hb - bb
        gx, gy, wl, wx, wy = self._grid
        w, h = self._size
        k = _MAP_STEP
        maps = []
        for r in (0, 1):
            # map = bg(X) + w * (head(X) - bg(X)); both affine in X.
            low = bb[r, 0] * gx + bb[r, 1] * gy + bb[r, 2] + d[r, 0] * wx + d[r, 1] * wy
            low += d[r, 2] * wl
            full = cv2.resize(
                low.astype(np.float32),
                (low.shape[1] * k, low.shape[0] * k),
                interpolation=cv2.INTER_LINEAR,
            )
            maps.append(np.ascontiguousarray(full[:h, :w]))
        return maps[0], maps[1]

    def eyelid_photo(self, closure: float) -> np.ndarray:
        """The photo with both upper lids pulled down by ``closure`` (0 open … 1 closed)."""
        if closure <= 0.0:
            return self.photo
        out = self.photo.copy()
        for eye in self._eyes:
            dv = eye.displacement(min(1.0, closure))
            mx = eye.xs + dv * np.float32(eye.vdir[0])
            my = eye.ys + dv * np.float32(eye.vdir[1])
            ph, pw = eye.xs.shape
            patch = cv2.remap(
                self.photo, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            ).astype(np.float32)
            cover, lash = eye.shading(min(1.0, closure))
            patch += (eye.lid_rgb[None, None, :] - patch) * (COVER * cover)[:, :, None]
            patch *= (1.0 - LASH_DARK * lash)[:, :, None]
            out[eye.y0 : eye.y0 + ph, eye.x0 : eye.x0 + pw] = np.clip(patch + 0.5, 0, 255).astype(
                np.uint8
            )
        return out

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of the loop (H×W×3 uint8 RGB)."""
        src = self.eyelid_photo(float(self.motion.eyelid[i]))
        mx, my = self.inverse_maps(i)
        return cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(self.motion.frames):
            yield self.frame(i)


def _invert(a: F64) -> F64:
    return np.asarray(cv2.invertAffineTransform(a), dtype=np.float64)


def _eye_warp(photo: np.ndarray, xy: F64, side: str) -> _EyeWarp:
    """Blink warp of one eye: in the eye's own frame (u along the corners, v down), the skin
    above the upper lid is stretched down to the closing lid edge and the eye below it is
    squeezed against the lower lid, as a real upper lid slides over the eyeball."""
    upper_idx, lower_idx = _EYES[side]
    upper, lower = xy[list(upper_idx)], xy[list(lower_idx)]
    c0, c1 = upper[0], upper[-1]
    width = float(np.linalg.norm(c1 - c0))
    if width < 4:
        raise InputError(f"the {side} eye is only {width:.1f} px wide: too small to blink")
    u_dir = (c1 - c0) / width
    v_dir = np.array([-u_dir[1], u_dir[0]])
    if v_dir[1] < 0:
        v_dir = -v_dir

    def uv(p: F64) -> tuple[F64, F64]:
        r = p - c0
        return r @ u_dir, r @ v_dir

    uu, vu = uv(upper)
    ul, vl = uv(lower)
    above = ABOVE * width  # skin above the lid margin that unfolds over the eye
    below = (OVERSHOOT + 0.15) * width  # room under the lower lid for the closed margin
    vu_min, vl_max = float(vu.min()), float(vl.max())
    # Patch bounds in the eye frame, mapped to an image bounding box.
    corners_uv = [
        (-0.2 * width, vu_min - above - 2),
        (1.2 * width, vu_min - above - 2),
        (-0.2 * width, vl_max + below + 2),
        (1.2 * width, vl_max + below + 2),
    ]
    pts = np.array([c0 + a * u_dir + b * v_dir for a, b in corners_uv])
    h_img, w_img = photo.shape[:2]
    x0 = int(max(0, math.floor(pts[:, 0].min())))
    x1 = int(min(w_img, math.ceil(pts[:, 0].max()) + 1))
    y0 = int(max(0, math.floor(pts[:, 1].min())))
    y1 = int(min(h_img, math.ceil(pts[:, 1].max()) + 1))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    ru, rv = (
        (xs - c0[0]) * u_dir[0] + (ys - c0[1]) * u_dir[1],
        (xs - c0[0]) * v_dir[0] + (ys - c0[1]) * v_dir[1],
    )
    o_u, o_l = np.argsort(uu), np.argsort(ul)
    top = np.interp(ru, uu[o_u], vu[o_u])  # upper lid margin at this u
    bot = np.interp(ru, ul[o_l], vl[o_l])  # lower lid margin
    gap = np.clip(bot - top, 0.0, None)
    gap[(ru < 0) | (ru > width)] = 0.0
    # Lid skin colour: the band just above the upper margin, over the middle of the eye.
    band = (
        (rv > top - 0.25 * width)
        & (rv < top - 0.06 * width)
        & (ru > 0.2 * width)
        & (ru < 0.8 * width)
    )
    patch_rgb = photo[y0:y1, x0:x1].reshape(-1, 3)[band.reshape(-1)]
    lid_rgb = (
        np.median(patch_rgb, axis=0) if len(patch_rgb) else photo[y0:y1, x0:x1].mean(axis=(0, 1))
    ).astype(np.float32)
    return _EyeWarp(
        x0=x0,
        y0=y0,
        xs=xs.astype(np.float32),
        ys=ys.astype(np.float32),
        rv=rv,
        top=top,
        gap=gap,
        above=above,
        overshoot=OVERSHOOT * width,
        sigma=max(0.7, 0.025 * width),
        vdir=(float(v_dir[0]), float(v_dir[1])),
        lid_rgb=lid_rgb,
        width=width,
    )


ABOVE = 0.3
OVERSHOOT = 0.2
LASH = 0.04
LASH_DARK = 0.45
COVER = 0.6


def loop_steps(frames: list[np.ndarray], *, scale: int = 4) -> tuple[F64, float, float]:
    """Frame-to-frame steps of a loop, including the wrap-around, as the mean absolute
    difference of the frames shrunk ``scale``× by area averaging (motion and pops count; codec
    grain that a viewer does not see as movement averages out).

    Returns ``(steps, seam_step, typical_step)`` where ``steps[k]`` is frame k → k+1 (the last
    is the seam: last → first) and ``typical_step`` is the median of the other steps."""
    if len(frames) < 3:
        raise InputError("a loop needs at least 3 frames to measure its seam")
    small = [_shrink(f, scale) for f in frames]
    steps = np.array(
        [float(np.abs(small[(k + 1) % len(small)] - small[k]).mean()) for k in range(len(small))]
    )
    return steps, float(steps[-1]), float(np.median(steps[:-1]))


def _shrink(frame: np.ndarray, scale: int) -> F32:
    h, w = frame.shape[:2]
    if scale <= 1:
        return frame.astype(np.float32)
    small = cv2.resize(
        frame, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA
    )
    return small.astype(np.float32)


@dataclass(frozen=True)
class IdleLoopResult:
    """What :func:`build_idle_loop` made: the video and everything measured on the way."""

    file: Path
    fps: float
    frames: int
    seconds: float
    mouth_track: MouthTrack
    blink_frames: list[int]
    seam_step: float
    typical_step: float
    roll_deg: list[float] = field(default_factory=list)
    eyelid: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    motion: IdleMotion | None = None


def build_idle_loop(
    photo_rgb: np.ndarray,
    face: FaceLike | np.ndarray,
    out_path: Path,
    *,
    seconds: float = 4.0,
    fps: float = 25.0,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    blinks: int | None = None,
    crf: int = 18,
    preset: str = "veryfast",
) -> IdleLoopResult:
    """Render the idle loop of ``photo_rgb`` to ``out_path`` (H.264 MP4, see
    :mod:`lipcore.media`) and return its mouth track, blink frames and seam metric.

    ``face`` is a :class:`lipcore.avatar.face.FaceAnalysis` (or anything with ``landmarks``,
    or the (478, 2|3) landmark array itself) of this very photo.
    """
    if not isinstance(photo_rgb, np.ndarray) or photo_rgb.ndim != 3:
        raise InputError("the photo must be an H×W×3 uint8 RGB array")
    xy = _landmarks_xy(face)
    h, w = photo_rgb.shape[:2]
    motion = plan_idle_motion(xy, (w, h), seconds=seconds, fps=fps, seed=seed, blinks=blinks)
    renderer = IdleRenderer(photo_rgb, xy, motion)
    small: list[np.ndarray] = []
    out_path = Path(out_path)
    # One GOP for the whole loop: a key frame mid-loop would "pop" (its codec noise differs from
    # the predicted frames before it); the only key frame is frame 0, where playback restarts.
    with VideoWriter(
        out_path,
        fps,
        crf=crf,
        preset=preset,
        keyframe_interval_s=motion.frames / fps,
        # Without macroblock-tree the frames late in the GOP keep their detail, so the step
        # back to the key frame at the seam is not a visible "pop" of fresh grain. The idle
        # motion is sub-pixel per frame: x264's early P-skip and its better-quality key frame
        # made frame 1 a copy of frame 0 (0.06x the median optical flow: a held frame every
        # loop); without the early skip and with P as good as I it moves (0.44x), same size.
        x264_params="no-mbtree=1:no-fast-pskip=1:ipratio=1.0",
        total_frames=motion.frames,
    ) as writer:
        for i in range(motion.frames):
            frame = renderer.frame(i)
            writer.write(frame)
            small.append(_shrink(frame, 4))
            if progress is not None:
                progress((i + 1) / motion.frames)
    steps, seam, typical = loop_steps(small, scale=1)
    affines = [
        tuple(float(v) for v in motion.head_affine(i).reshape(-1)) for i in range(motion.frames)
    ]
    track = MouthTrack(fps=fps, affines=affines)  # type: ignore[arg-type]
    return IdleLoopResult(
        file=out_path,
        fps=fps,
        frames=motion.frames,
        seconds=motion.frames / fps,
        mouth_track=track,
        blink_frames=motion.blink_frames,
        seam_step=seam,
        typical_step=typical,
        roll_deg=[float(r) for r in motion.roll_deg],
        eyelid=[float(e) for e in motion.eyelid],
        steps=[float(s) for s in steps],
        motion=motion,
    )
