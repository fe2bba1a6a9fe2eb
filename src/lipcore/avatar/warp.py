"""Smooth displacement fields from sparse landmark targets (thin-plate splines).

The mouth model moves a few dozen lip and jaw landmarks and needs a smooth, fold-free field
over the whole ROI. A thin-plate spline (TPS) is the smoothest interpolant through scattered
points (it minimises bending energy), so it needs no hand-made triangulation and bends lips
without the kinks a piecewise-affine warp shows at triangle edges. The field is solved once per
shape and sampled on the ROI grid; ``cv2.remap`` with the resulting maps does the per-pixel work.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ThinPlateSpline", "backward_maps", "border_anchors"]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


def _kernel(r2: F64) -> F64:
    # U(r) = r² log r², written on r² so no square root is needed; U(0) = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        out = r2 * np.log(r2)
    out[r2 <= 1e-12] = 0.0
    return out


class ThinPlateSpline:
    """A 2-D → 2-D thin-plate spline through ``src`` → ``dst`` (both (N, 2)).

    ``smoothing`` (in squared pixels) relaxes exact interpolation a little, which keeps the field
    calm when two control points sit close together with different displacements.
    """

    def __init__(self, src: npt.ArrayLike, dst: npt.ArrayLike, *, smoothing: float = 0.0) -> None:
        s = np.asarray(src, dtype=np.float64).reshape(-1, 2)
        d = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
        if s.shape != d.shape or len(s) < 3:
            raise ValueError("a thin-plate spline needs at least 3 matching point pairs")
        # Normalise coordinates so the linear system is well conditioned at any image size.
        self._center = s.mean(axis=0)
        self._scale = float(max(np.ptp(s, axis=0).max(), 1.0))
        sn = (s - self._center) / self._scale
        n = len(sn)
        k = _kernel(((sn[:, None, :] - sn[None, :, :]) ** 2).sum(-1))
        k[np.diag_indices(n)] += smoothing / self._scale**2
        p = np.hstack([np.ones((n, 1)), sn])
        a = np.zeros((n + 3, n + 3))
        a[:n, :n] = k
        a[:n, n:] = p
        a[n:, :n] = p.T
        b = np.zeros((n + 3, 2))
        b[:n] = d - s  # solve for the displacement: the identity stays exact far from points
        self._coef = np.linalg.solve(a, b)
        self._ctrl = sn

    def displacement(self, xy: npt.ArrayLike, *, chunk: int = 16384) -> F64:
        """Displacement ``f(p) - p`` at the (M, 2) points ``xy``."""
        q = (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - self._center) / self._scale
        out = np.empty_like(q)
        n = len(self._ctrl)
        w, lin = self._coef[:n], self._coef[n:]
        for i in range(0, len(q), chunk):
            qi = q[i : i + chunk]
            r2 = ((qi[:, None, :] - self._ctrl[None, :, :]) ** 2).sum(-1)
            out[i : i + chunk] = _kernel(r2) @ w + lin[0] + qi @ lin[1:]
        return out

    def __call__(self, xy: npt.ArrayLike) -> F64:
        q = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return q + self.displacement(q)


def border_anchors(w: int, h: int, *, step: float) -> F64:
    """Points along the border of a ``w``×``h`` box, about ``step`` apart (fixed in every warp,
    so a warped ROI joins the untouched photo without a seam)."""
    nx = max(2, int(np.ceil(w / step)) + 1)
    ny = max(2, int(np.ceil(h / step)) + 1)
    xs = np.linspace(0, w - 1, nx)
    ys = np.linspace(0, h - 1, ny)
    pts = [(x, 0.0) for x in xs] + [(x, h - 1.0) for x in xs]
    pts += [(0.0, y) for y in ys[1:-1]] + [(w - 1.0, y) for y in ys[1:-1]]
    return np.asarray(pts, dtype=np.float64)


def backward_maps(tps: ThinPlateSpline, w: int, h: int, *, stride: int = 2) -> tuple[F32, F32]:
    """``cv2.remap`` maps for a ``w``×``h`` output from a spline that maps *output* pixels to
    *source* pixels. The spline is evaluated on a ``stride`` grid and upsampled bicubically
    (the field is smooth, so this loses nothing visible and saves most of the work)."""
    import cv2

    gx = np.arange(0, w + stride, stride, dtype=np.float64)
    gy = np.arange(0, h + stride, stride, dtype=np.float64)
    xx, yy = np.meshgrid(gx, gy)
    disp = tps.displacement(np.stack([xx.ravel(), yy.ravel()], axis=1))
    dx = disp[:, 0].reshape(xx.shape).astype(np.float32)
    dy = disp[:, 1].reshape(xx.shape).astype(np.float32)
    # Sample the coarse grid at each output pixel: coarse index = pixel / stride.
    px, py = np.meshgrid(
        np.arange(w, dtype=np.float32) / stride, np.arange(h, dtype=np.float32) / stride
    )
    fx = cv2.remap(dx, px, py, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    fy = cv2.remap(dy, px, py, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    full_x, full_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return (full_x + fx).astype(np.float32), (full_y + fy).astype(np.float32)
