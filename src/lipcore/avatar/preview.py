"""``preview.png``: one sheet a person can judge an avatar by at a glance.

Top: the 12 visemes composited into the photo (lower face), each labelled with the mouth
geometry the face landmarker *re-detects* on it (aperture = inner-lip gap / mouth width, and
width relative to the photo's own mouth). Bottom: keyframes of the idle loop as encoded in
``idle.mp4``, including the deepest blink, labelled with the eyeBlink score re-detected there.
The numbers are returned too and land in the manifest's ``checks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from lipcore.avatar import landmarks as lmk
from lipcore.models import ROI

if TYPE_CHECKING:
    from lipcore.avatar.face import FaceAnalyzer

__all__ = ["composite_mouth", "render_preview"]

U8 = npt.NDArray[np.uint8]

_BG = (24, 24, 28)
_FG = (235, 235, 235)
_DIM = (150, 150, 160)
_CELL_W = 200
_COLS = 6
_PAD = 6
_LABEL_H = 36


class _MouthLike(Protocol):
    roi: ROI
    classes: tuple[str, ...]

    def render(self, weights: Mapping[str, float]) -> U8: ...


def composite_mouth(photo: U8, mouth_model: _MouthLike, weights: Mapping[str, float]) -> U8:
    """The photo with the mouth for ``weights`` laid over its ROI (alpha = feathered mask)."""
    out = photo.copy()
    patch = mouth_model.render(weights)
    r = mouth_model.roi
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = max(0, r.x), max(0, r.y), min(w, r.x + r.w), min(h, r.y + r.h)
    if x1 <= x0 or y1 <= y0:
        return out
    p = patch[y0 - r.y : y1 - r.y, x0 - r.x : x1 - r.x].astype(np.float32)
    a = p[..., 3:4] / 255.0
    dst = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(dst * (1 - a) + p[..., :3] * a + 0.5, 0, 255).astype(np.uint8)
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _crop(img: U8, cx: float, cy: float, w: float, h: float) -> U8:
    """A w×h crop centred on (cx, cy), padded with the background where it leaves the image."""
    out = np.empty((round(h), round(w), 3), np.uint8)
    out[:] = _BG
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(img.shape[1], x0 + out.shape[1]), min(img.shape[0], y0 + out.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def _cell(img: U8, width: int) -> Image.Image:
    pil = Image.fromarray(img)
    return pil.resize(
        (width, max(1, round(img.shape[0] * width / img.shape[1]))), Image.Resampling.LANCZOS
    )


def _measure_mouth(analyzer: FaceAnalyzer | None, img: U8) -> tuple[float, float] | None:
    if analyzer is None:
        return None
    faces = analyzer.detect(img)
    if not faces:
        return None
    lm = faces[0].landmarks
    return lmk.mouth_aperture(lm), lmk.mouth_width(lm)


def _idle_keyframes(idle_path: Path, wanted: Sequence[int]) -> dict[int, U8]:
    from lipcore.media import read_frames

    frames: dict[int, U8] = {}
    last = max(wanted)
    for i, frame in enumerate(read_frames(idle_path)):
        if i in wanted:
            frames[i] = frame
        if i >= last:
            break
    return frames


def render_preview(
    photo: U8,
    mouth_model: _MouthLike,
    idle_path: Path | None,
    out_path: Path,
    *,
    face_bbox: tuple[float, float, float, float] | None = None,
    blink_frames: Sequence[int] = (),
    eyelid: Sequence[float] = (),
    fps: float = 25.0,
    frames: int | None = None,
    analyzer: FaceAnalyzer | None = None,
    title: str = "",
) -> dict[str, Any]:
    """Write the contact sheet to ``out_path``; return what was measured on it.

    With an ``analyzer``, each viseme is composited into the full photo and re-detected, and the
    deepest blink frame is re-detected; without one, the sheet has no numbers.
    """
    roi = mouth_model.roi
    font, small = _font(15), _font(12)
    checks: dict[str, Any] = {}

    # --- visemes on the lower face
    rest_faces = analyzer.detect(photo) if analyzer is not None else []
    rest = None
    cx, cy = roi.x + roi.w / 2, roi.y + roi.h / 2
    crop_w = roi.w * 1.2
    if rest_faces:
        lm = rest_faces[0].landmarks
        rest = (lmk.mouth_aperture(lm), lmk.mouth_width(lm))
        # Frame the mouth itself, a little below its centre to leave room for the jaw drop.
        mx, my = lmk.mouth_center(lm)
        cx, cy = mx, my + 0.15 * rest[1]
        crop_w = 2.6 * rest[1]
    crop_h = crop_w * 0.7
    tiles: list[tuple[Image.Image, str, str]] = []
    apertures: dict[str, float] = {}
    widths: dict[str, float] = {}
    for name in mouth_model.classes:
        comp = composite_mouth(photo, mouth_model, {name: 1.0})
        measured = _measure_mouth(analyzer, comp)
        detail = ""
        if measured is not None:
            apertures[name] = round(measured[0], 4)
            if rest is not None and rest[1] > 0:
                widths[name] = round(measured[1] / rest[1], 4)
                detail = f"aperture {measured[0]:.2f} · width {measured[1] / rest[1]:.2f}x"
            else:
                detail = f"aperture {measured[0]:.2f}"
        elif analyzer is not None:
            detail = "no face re-detected!"
        tiles.append((_cell(_crop(comp, cx, cy, crop_w, crop_h), _CELL_W), name, detail))
    if apertures:
        checks["viseme_aperture"] = apertures
    if widths:
        checks["viseme_width_ratio"] = widths

    # --- idle keyframes around the head
    idle_tiles: list[tuple[Image.Image, str, str]] = []
    if idle_path is not None and Path(idle_path).is_file():
        n = frames if frames is not None else max(len(eyelid), 1)
        peak = int(np.argmax(eyelid)) if len(eyelid) and max(eyelid) > 0 else None
        if peak is None and blink_frames:
            peak = int(blink_frames[len(blink_frames) // 2])
        wanted = sorted({0, n // 4, n // 2, (3 * n) // 4} | ({peak} if peak is not None else set()))
        wanted = [i for i in wanted if 0 <= i < max(n, 1)]
        keyframes = _idle_keyframes(Path(idle_path), wanted)
        if face_bbox is not None:
            fx, fy, fw, fh = face_bbox
        else:  # no face box: frame the head from the mouth ROI
            fw, fh = roi.w * 2.6, roi.w * 3.2
            fx, fy = cx - fw / 2, cy - fh * 0.75
        hx, hy, hs = fx + fw / 2, fy + fh / 2, max(fw, fh) * 1.35
        for i in wanted:
            if i not in keyframes:
                continue
            label = "blink" if i == peak else f"frame {i}"
            detail = f"t = {i / fps:.2f} s"
            if i == peak and analyzer is not None:
                faces = analyzer.detect(keyframes[i])
                if faces:
                    bs = faces[0].blendshapes
                    blink = (bs.get("eyeBlinkLeft", 0.0) + bs.get("eyeBlinkRight", 0.0)) / 2
                    ear = lmk.eye_aspect(faces[0].landmarks)
                    detail += f" · eyeBlink {blink:.2f}"
                    checks["blink"] = {
                        "frame": i,
                        "eye_blink": round(blink, 4),
                        "eye_aspect": round(ear, 4),
                    }
            idle_tiles.append((_cell(_crop(keyframes[i], hx, hy, hs, hs), _CELL_W), label, detail))

    # --- lay out
    def rows_height(items: list[tuple[Image.Image, str, str]]) -> int:
        if not items:
            return 0
        nrows = -(-len(items) // _COLS)
        return nrows * (max(t[0].height for t in items) + _LABEL_H + _PAD)

    header_h = 30
    section_h = 24
    sheet_w = _COLS * (_CELL_W + _PAD) + _PAD
    sheet_h = header_h + section_h + rows_height(tiles)
    if idle_tiles:
        sheet_h += section_h + rows_height(idle_tiles)
    sheet = Image.new("RGB", (sheet_w, sheet_h + _PAD), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, 7), title or "lipcore avatar preview", fill=_FG, font=font)
    y = header_h

    def place(items: list[tuple[Image.Image, str, str]], heading: str, y: int) -> int:
        draw.text((_PAD, y + 4), heading, fill=_DIM, font=small)
        y += section_h
        cell_h = max(t[0].height for t in items)
        for k, (tile, label, detail) in enumerate(items):
            col, row = k % _COLS, k // _COLS
            x0 = _PAD + col * (_CELL_W + _PAD)
            y0 = y + row * (cell_h + _LABEL_H + _PAD)
            sheet.paste(tile, (x0, y0))
            draw.text((x0 + 2, y0 + cell_h + 2), label, fill=_FG, font=font)
            draw.text((x0 + 2, y0 + cell_h + 19), detail, fill=_DIM, font=small)
        return y + rows_height(items)

    y = place(tiles, "visemes (re-detected by the face landmarker)", y)
    if idle_tiles:
        place(idle_tiles, "idle loop keyframes (decoded from idle.mp4)", y)
    out_path = Path(out_path)
    sheet.save(out_path, optimize=False, compress_level=6)
    if rest is not None:
        checks["rest_aperture"] = round(rest[0], 4)
    return checks
