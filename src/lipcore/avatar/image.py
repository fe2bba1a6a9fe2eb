"""Load a hero photo from anything a caller has into an upright RGB ``uint8`` array.

Bounds are checked before pixels are decoded: the file size first, then the pixel count read
from the header, so a decompression bomb (a small file that inflates to gigabytes) costs nothing.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from lipcore.avatar.errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

__all__ = ["MAX_BYTES", "MAX_PIXELS", "MAX_SIDE", "PhotoSource", "load_photo"]

MAX_BYTES = 20_000_000
MAX_PIXELS = 40_000_000
MAX_SIDE = 2048

PhotoSource = bytes | str | Path | Image.Image

# Transparent areas are laid over this colour: a plain light background reads as a studio
# backdrop, where black would look like a hole.
_MATTE = (255, 255, 255)


def _describe(source: PhotoSource) -> str:
    if isinstance(source, (str, Path)):
        return f"photo '{source}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"uploaded photo ({len(source)} bytes)"
    return "photo (PIL image)"


def _open(source: PhotoSource, name: str, max_bytes: int) -> tuple[Image.Image, IO[bytes] | None]:
    if isinstance(source, Image.Image):
        return source, None
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ImageError(f"{name} does not exist or is not a file; check the path")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageTooLargeError(
                f"{name} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit; "
                "save it smaller (a 2048-pixel JPEG is plenty)"
            )
        fh: IO[bytes] = path.open("rb")
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise ImageTooLargeError(
                f"{name} is over the {max_bytes / 1e6:.0f} MB limit; send a smaller image "
                "(a 2048-pixel JPEG is plenty)"
            )
        fh = io.BytesIO(bytes(source))
    else:
        raise ImageError(
            f"cannot read a photo from a {type(source).__name__}; pass a path, bytes or a PIL image"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its own bound; we apply ours below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
    except Image.DecompressionBombError as exc:
        fh.close()
        raise ImageTooLargeError(
            f"{name} declares more pixels than allowed; use a photo of at most "
            f"{MAX_PIXELS // 1_000_000} megapixels"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        fh.close()
        # The decoder's own words (class names, object reprs) say nothing to a user; they stay
        # on the exception chain for the log.
        raise CorruptImageError(
            f"{name} is not a readable image (not a JPEG, PNG or WebP file the decoder knows); "
            "send a JPEG, PNG or WebP photo"
        ) from exc
    return img, fh


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """16-bit greyscale (``I;16*``) as 8-bit ``L``, scaled (Pillow's own conversion clips),
    with one 8-bit copy rather than float64 ones; EXIF survives for the orientation step."""
    if not img.mode.startswith("I;16"):
        return img
    arr = np.array(img)  # one writable copy, shifted in place
    if arr.dtype.byteorder not in ("=", "|") or arr.dtype.itemsize != 2:
        arr = arr.astype(np.uint16)
    np.right_shift(arr, 8, out=arr)
    grey = Image.fromarray(arr.astype(np.uint8), "L")
    del arr
    grey.info = dict(img.info)
    exif = img.getexif()
    if exif:
        grey.info["exif"] = exif.tobytes()
    return grey


def _reduced(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` box-reduced by the largest integer factor that keeps it over ``max_side`` (the
    final resize does the exact, smooth step), or unchanged."""
    factor = (max(img.size) - 1) // max(1, max_side)
    if factor < 2:
        return img
    if img.mode in ("P", "1", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    exif = img.getexif()
    out = img.reduce(factor)
    if exif:
        out.info["exif"] = exif.tobytes()
    return out


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit greyscale: Pillow's convert("L") clips instead of scaling.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        matte = Image.new("RGBA", rgba.size, (*_MATTE, 255))
        return Image.alpha_composite(matte, rgba).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode in ("1", "L", "P", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    raise UnsupportedImageError(
        f"{name} has image mode {mode!r}, which lipcore cannot convert to RGB; save it as an "
        "8-bit RGB JPEG or PNG"
    )


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """CMYK → sRGB through the embedded ICC profile when there is one (print files usually
    carry one, and the naive formula shifts skin tones); the plain formula otherwise."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
            if out is not None:
                return out
        except Exception:  # a broken profile must not make a readable photo unusable
            pass
    return img.convert("RGB")


def load_photo(
    source: PhotoSource,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
) -> npt.NDArray[np.uint8]:
    """Read a photo into an upright RGB ``uint8`` array of shape (H, W, 3).

    - ``source``: a file path, the file's bytes, or a PIL image.
    - EXIF orientation is applied (phone photos are stored sideways with a tag).
    - Greyscale, palette, RGBA (laid over white), CMYK and 16-bit images become 8-bit RGB;
      an animated image gives its first frame.
    - Photos longer than ``max_side`` pixels on their long side are downscaled (Lanczos) to
      ``max_side``: the face analysis and the idle loop gain nothing from more pixels.
    - Over ``max_bytes`` or ``max_pixels`` (read from the header, before decoding) →
      :class:`ImageTooLargeError`; unreadable or truncated data → :class:`CorruptImageError`.
    """
    name = _describe(source)
    img, fh = _open(source, name, max_bytes)
    try:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise CorruptImageError(f"{name} has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise ImageTooLargeError(
                f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the "
                f"{max_pixels / 1e6:.0f} megapixel limit; resize it (2048 px on the long side "
                "is plenty)"
            )
        try:
            if img.format == "JPEG" and max(w, h) > 2 * max_side:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: much faster for huge photos.
                img.draft("RGB", (max_side, max_side))
            img.load()
            # Pixel memory stays bounded (a 92 KB 40-megapixel 16-bit PNG once cost ~1 GB):
            # 16-bit greyscale becomes 8 bits at once, and a photo far over max_side is
            # box-reduced by an integer factor before orientation, mode conversion and the
            # final Lanczos step, each of which would otherwise copy every full-size pixel.
            full_w, full_h = img.size  # the final size derives from these, as without reducing
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation turns it 90°
                full_w, full_h = full_h, full_w
            img = _reduced(_to_8bit_grey(img), max_side)
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright if upright is not None else img, name)
            if max(full_w, full_h) > max_side:
                scale = max_side / max(full_w, full_h)
                size = (max(1, round(full_w * scale)), max(1, round(full_h * scale)))
                rgb = rgb.resize(size, Image.Resampling.LANCZOS)
            arr = np.asarray(rgb, dtype=np.uint8)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                f"{name} is too large to decode; use a photo of at most "
                f"{MAX_PIXELS // 1_000_000} megapixels"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImageError(
                f"{name} could not be decoded: the file is damaged or truncated. Re-export "
                "the photo as JPEG or PNG"
            ) from exc
    finally:
        if fh is not None:
            fh.close()
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UnsupportedImageError(f"{name} decoded to shape {arr.shape}, expected H×W×3")
    return np.ascontiguousarray(arr)
