"""Smooth displacement fields from sparse landmark targets (thin-plate splines).

The mouth model moves a few dozen lip and jaw landmarks and needs a smooth, fold-free field
over the whole ROI. A thin-plate spline (TPS) is the smoothest interpolant through scattered
points (it minimises bending energy), so it needs no hand-made triangulation and bends lips
without the kinks a piecewise-affine warp shows at triangle edges. The field is solved once per
shape and sampled on the ROI grid; ``cv2.remap`` with the resulting maps does the per-pixel work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

__all__ = [
    "ThinPlateSpline",
    "backward_maps",
    "blas_single_thread",
    "border_anchors",
    "patch_to_frame_affine",
    "place_patch",
    "premultiply",
]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run small linear algebra on one BLAS thread. The systems here are ~100×100: threads only
    add hand-over cost, and on a loaded machine OpenBLAS's spinning threads make them 100× slower.
    (Uses threadpoolctl when it is installed; otherwise does nothing.)"""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _kernel(r2: F64) -> F64:
    # U(r) = r² log r², written on r² so no square root is needed; U(0) = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        out = r2 * np.log(r2)
    out[r2 <= 1e-12] = 0.0
    return out


def _sq_distances(a: F64, b: F64) -> F64:
    """Squared distances (len(a), len(b)) between 2-D points: x and y apart, because
    ``((a[:, None] - b[None]) ** 2).sum(-1)`` reduces over an axis of length 2, which numpy
    does ~10× slower; the result is bit-identical."""
    d = np.subtract.outer(a[:, 0], b[:, 0])
    d *= d
    dy = np.subtract.outer(a[:, 1], b[:, 1])
    dy *= dy
    d += dy
    return d


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
        out: F64 = np.empty_like(q)
        n = len(self._ctrl)
        w, lin = self._coef[:n], self._coef[n:]
        for i in range(0, len(q), chunk):
            qi = q[i : i + chunk]
            out[i : i + chunk] = _kernel(_sq_distances(qi, self._ctrl)) @ w + lin[0] + qi @ lin[1:]
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


def patch_to_frame_affine(
    affine: tuple[float, float, float, float, float, float] | npt.ArrayLike, roi_x: int, roi_y: int
) -> F64:
    """2×3 matrix taking ROI pixel (u, v) to idle-frame pixel, for a mouth track ``affine``
    ``[a, b, c, d, e, f]`` (photo pixel → frame pixel) and the ROI's photo position."""
    a, b, c, d, e, f = (float(x) for x in np.asarray(affine, dtype=np.float64).ravel())
    return np.array(
        [[a, b, a * roi_x + b * roi_y + c], [d, e, d * roi_x + e * roi_y + f]], dtype=np.float64
    )


def place_patch(
    frame: npt.NDArray[np.uint8],
    patch_premul: npt.NDArray[np.uint8],
    matrix: F64,
    *,
    out: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """Composite a premultiplied RGBA ``patch_premul`` onto ``frame`` (RGB uint8), placed by the
    2×3 ``matrix`` (patch pixel → frame pixel) with sub-pixel accuracy.

    Only the patch's bounding box in the frame is touched: the patch is warped into that box with
    bilinear filtering (premultiplied, so edges never fringe) and laid over with ``src-over``.
    ``out`` may be ``frame`` itself (in place) or another buffer of the same shape; by default a
    copy is returned.
    """
    import cv2

    h, w = patch_premul.shape[:2]
    fh, fw = frame.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ matrix.T
    x0 = max(0, int(np.floor(corners[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - 1)
    x1 = min(fw, int(np.ceil(corners[:, 0].max())) + 2)
    y1 = min(fh, int(np.ceil(corners[:, 1].max())) + 2)
    if out is None:
        out = frame.copy()
    elif out is not frame:
        np.copyto(out, frame)
    if x1 <= x0 or y1 <= y0:
        return out
    m = matrix.copy()
    m[0, 2] -= x0
    m[1, 2] -= y0
    # Pixel centres: OpenCV maps pixel centres, so a patch pixel (i, j) covers [i, i+1); the
    # track maps photo pixel centres to frame pixel centres, which is the same convention.
    warped = cv2.warpAffine(
        patch_premul, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0),
    )  # fmt: skip
    region = out[y0:y1, x0:x1]
    inv1 = cv2.bitwise_not(cv2.extractChannel(warped, 3))  # 255 − alpha, no strided numpy pass
    inv = cv2.merge([inv1, inv1, inv1])
    # A contiguous RGB copy: handed a channel-strided view (warped[..., :3]), OpenCV's Python
    # binding converts it element by element, ~1 ms per frame, more than the whole composite.
    rgb = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
    cv2.add(cv2.multiply(frame[y0:y1, x0:x1], inv, scale=1.0 / 255.0), rgb, dst=region)
    return out


def premultiply(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Straight-alpha RGBA uint8 → premultiplied RGBA uint8 (rounded)."""
    import cv2

    a = rgba[..., 3]
    rgb = cv2.multiply(rgba[..., :3], cv2.merge([a, a, a]), scale=1.0 / 255.0)
    return np.ascontiguousarray(np.dstack([rgb, a]))
