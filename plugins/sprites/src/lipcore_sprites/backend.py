"""Variant A: a sprite atlas of the 12 mouth shapes.

Build once: every viseme class is rendered by the shared mouth model into one ROI-sized cell of
a 4×4 ``atlas.png`` (straight-alpha RGBA, the feathered mouth mask as alpha), described by
``atlas.json`` (the contract's ``grid``, ``classes``, ``mask``, ``roi`` plus ``cells``).

Run: the few highest-weighted cells are cross-faded with premultiplied alpha (so the soft mask
edge never darkens or fringes), the blend is warped into the idle frame by that frame's mouth
track affine with bilinear filtering (sub-pixel placement: nothing swims while the head moves),
and laid over it. Only the patch's bounding box in the frame is touched.
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
from lipcore.avatar.warp import patch_to_frame_affine, place_patch, premultiply
from lipcore.interfaces import LipsyncBackend, MouthRenderer
from lipcore.models import ROI, AtlasCell, AtlasJson, Grid

__all__ = ["ATLAS_FILE", "ATLAS_JSON_FILE", "SpritesBackend", "SpritesRenderer", "build_atlas"]

U8 = npt.NDArray[np.uint8]

ATLAS_FILE = "atlas.png"
ATLAS_JSON_FILE = "atlas.json"
MASK_FILE = "mask_mouth.png"
GRID = Grid(cols=4, rows=4)
REST = "Rest"
#: Float noise a co-articulated weight may carry outside [0, 1] (clamped, not an error).
WEIGHT_TOLERANCE = 1e-3


def build_atlas(mouth_model: MouthModel, out_dir: Path) -> dict[str, str]:
    """Render the 12 classes into ``atlas.png`` + ``atlas.json`` (and the mask, if the mouth
    model has not saved it yet) in ``out_dir``; return the relative paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roi = mouth_model.roi
    classes = list(mouth_model.classes)
    if len(classes) > GRID.cols * GRID.rows:
        raise MouthModelError(f"{len(classes)} classes do not fit a {GRID.cols}×{GRID.rows} atlas")
    atlas = np.zeros((roi.h * GRID.rows, roi.w * GRID.cols, 4), np.uint8)
    cells: dict[str, AtlasCell] = {}
    for i, name in enumerate(classes):
        col, row = i % GRID.cols, i // GRID.cols
        x, y = col * roi.w, row * roi.h
        atlas[y : y + roi.h, x : x + roi.w] = mouth_model.render({name: 1.0})
        cells[name] = AtlasCell(x=x, y=y, w=roi.w, h=roi.h)
    if not cv2.imwrite(str(out_dir / ATLAS_FILE), cv2.cvtColor(atlas, cv2.COLOR_RGBA2BGRA)):
        raise OSError(f"could not write {out_dir / ATLAS_FILE}")
    if not (out_dir / MASK_FILE).is_file():
        mouth_model.save(out_dir)
    meta = AtlasJson(
        grid=GRID,
        classes=classes,
        mask=MASK_FILE,
        roi=roi,
        cells=cells,
        image=ATLAS_FILE,  # type: ignore[call-arg]  # extension field (AtlasJson allows extras)
        premultiplied=False,
        rest=REST,
    )
    (out_dir / ATLAS_JSON_FILE).write_text(meta.model_dump_json(indent=2), encoding="utf-8")
    return {"atlas": ATLAS_FILE, "atlas_json": ATLAS_JSON_FILE, "mask": MASK_FILE}


def blend_weights(
    weights: Mapping[str, float], classes: tuple[str, ...] | list[str], *, max_cells: int
) -> list[tuple[str, float]]:
    """The cells to cross-fade for ``weights``: the ``max_cells`` highest-weighted visemes plus
    Rest for the remainder to 1 (weights summing over 1 are scaled down). Weights sum to 1."""
    known = set(classes)
    picked: list[tuple[str, float]] = []
    for name, value in weights.items():
        if name not in known:
            raise MouthModelError(
                f"unknown viseme {name!r} in the weights; the atlas has {sorted(known)}"
            )
        if not math.isfinite(value):
            raise MouthModelError(f"viseme weight for {name!r} is not a number: {value!r}")
        if not -WEIGHT_TOLERANCE <= value <= 1.0 + WEIGHT_TOLERANCE:
            raise MouthModelError(
                f"viseme weight for {name!r} is {value!r}, outside [0, 1]; weights are "
                "fractions of the mouth shape (the remainder to 1 is Rest)"
            )
        if name != REST and value > 1e-4:
            picked.append((name, min(float(value), 1.0)))
    picked.sort(key=lambda kv: -kv[1])
    picked = picked[:max_cells]
    total = sum(v for _, v in picked)
    if total > 1.0:
        picked = [(k, v / total) for k, v in picked]
        total = 1.0
    rest = 1.0 - total
    if rest > 1e-4:
        picked.append((REST, rest))
    return picked


class SpritesRenderer(MouthRenderer):
    """Cross-fades atlas cells and composites them into idle frames by the mouth track."""

    def __init__(
        self,
        cells: Mapping[str, U8],
        roi: ROI,
        affines: list[tuple[float, float, float, float, float, float]],
        *,
        max_cells: int = 3,
    ) -> None:
        if not affines:
            raise AvatarLoadError("the avatar's mouth track is empty; rebuild the avatar")
        self.roi = roi
        self.classes = tuple(cells)
        # Premultiplied once, here: the per-frame blend is then a plain weighted sum.
        self._cells = {k: premultiply(np.ascontiguousarray(v)) for k, v in cells.items()}
        self._matrices = [patch_to_frame_affine(a, roi.x, roi.y) for a in affines]
        self.max_cells = max_cells

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        affines: list[tuple[float, float, float, float, float, float]],
        *,
        atlas_json: str = ATLAS_JSON_FILE,
        avatar_id: str = "",
    ) -> SpritesRenderer:
        """Load ``atlas.json`` and its atlas image from an avatar directory."""
        who = f"avatar {avatar_id!r}" if avatar_id else f"avatar directory {directory}"
        meta_path = Path(directory) / atlas_json
        try:
            meta = AtlasJson.model_validate_json(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AvatarLoadError(
                f"{who} has no {atlas_json}: it was not built for the sprites back end; "
                "rebuild it with `lipcore avatarize PHOTO --backend sprites`"
            ) from None
        except ValueError as exc:
            raise AvatarLoadError(f"{who}: {atlas_json} is invalid ({exc}); rebuild it") from exc
        image = str((meta.model_extra or {}).get("image", ATLAS_FILE))
        bgra = cv2.imread(str(Path(directory) / image), cv2.IMREAD_UNCHANGED)
        if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
            raise AvatarLoadError(f"{who}: {image} is missing or not an RGBA PNG; rebuild it")
        rgba: U8 = np.asarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA), dtype=np.uint8)
        roi = meta.roi
        if meta.cells is None:
            meta.cells = {
                name: AtlasCell(
                    x=(i % meta.grid.cols) * roi.w,
                    y=(i // meta.grid.cols) * roi.h,
                    w=roi.w,
                    h=roi.h,
                )
                for i, name in enumerate(meta.classes)
            }
        cells: dict[str, U8] = {}
        for name in meta.classes:
            c = meta.cells.get(name)
            if (
                c is None
                or c.w != roi.w
                or c.h != roi.h
                or c.x + c.w > rgba.shape[1]
                or (c.y + c.h > rgba.shape[0])
            ):
                raise AvatarLoadError(f"{who}: {atlas_json} has a bad cell for {name!r}; rebuild")
            cells[name] = rgba[c.y : c.y + c.h, c.x : c.x + c.w]
        if REST not in cells:
            raise AvatarLoadError(f"{who}: the atlas has no {REST!r} cell; rebuild it")
        return cls(cells, roi, affines)

    def patch(self, weights: Mapping[str, float]) -> U8:
        """The premultiplied RGBA blend (roi.h, roi.w, 4) for ``weights``."""
        parts = blend_weights(weights, self.classes, max_cells=self.max_cells)
        if len(parts) == 1:
            return self._cells[parts[0][0]]
        (n0, w0), (n1, w1) = parts[0], parts[1]
        acc = cv2.addWeighted(self._cells[n0], w0, self._cells[n1], w1, 0.0)
        for name, w in parts[2:]:
            acc = cv2.addWeighted(acc, 1.0, self._cells[name], w, 0.0)
        return np.asarray(acc, dtype=np.uint8)  # uint8 in, uint8 out (typed for mypy)

    def matrix(self, idle_index: int) -> npt.NDArray[np.float64]:
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
        """``frame`` (H×W×3 RGB uint8) with the mouth for ``weights`` composited, placed by
        the mouth track of idle frame ``idle_index``. Returns a new array unless ``out`` is
        given (``out=frame`` composites in place)."""
        return place_patch(frame, self.patch(weights), self.matrix(idle_index), out=out)


class SpritesBackend(LipsyncBackend):
    """Lipsync variant A (``"sprites"``): a 4×4 sprite atlas cross-faded by viseme weight."""

    type: ClassVar[str] = "sprites"
    driven_by = "visemes"
    # atlas.json names the atlas image and mask; clients resolve them next to it.
    client_assets: ClassVar[Mapping[str, str]] = {
        "atlas_json": "atlas_url", "atlas": "", "mask": "mask_url"}

    def build_assets(self, mouth_model: Any, out_dir: Any) -> dict[str, Any]:
        """Write ``atlas.png``, ``atlas.json`` and ``mask_mouth.png``; return relative paths."""
        if not isinstance(mouth_model, MouthModel):
            raise TypeError("build_assets needs a lipcore.avatar.mouth.MouthModel")
        return build_atlas(mouth_model, Path(out_dir))

    def open_renderer(self, avatar: Any) -> SpritesRenderer:
        """A renderer over ``avatar`` (a :class:`lipcore.avatar.store.Avatar`)."""
        lipsync = dict(avatar.manifest.lipsync)
        return SpritesRenderer.from_directory(
            Path(avatar.directory),
            list(avatar.mouth_track.affines),
            atlas_json=str(lipsync.get("atlas_json", ATLAS_JSON_FILE)),
            avatar_id=str(getattr(avatar, "id", "")),
        )
