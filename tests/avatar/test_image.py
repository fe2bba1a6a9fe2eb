"""load_photo: every way a real photo arrives, and every way it can be bad."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lipcore.avatar.errors import CorruptImageError, ImageError, ImageTooLargeError
from lipcore.avatar.face import FaceAnalyzer
from lipcore.avatar.image import load_photo
from lipcore.errors import InputError, LimitError


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels but carries almost no data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_path_and_bytes_and_pil_agree(grace_hopper_path: Path) -> None:
    a = load_photo(grace_hopper_path)
    b = load_photo(grace_hopper_path.read_bytes())
    c = load_photo(str(grace_hopper_path))
    d = load_photo(Image.open(grace_hopper_path))
    assert a.shape == (600, 512, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)


def test_exif_orientation_is_applied(grace_rgb: np.ndarray, analyzer: FaceAnalyzer) -> None:
    # Stored sideways (rotated 90° counter-clockwise) with Orientation=6 ("rotate 90° CW to
    # display"), as phones do.
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(grace_rgb, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(sideways, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (600, 512)  # really stored sideways
    rgb = load_photo(data)
    assert rgb.shape == grace_rgb.shape
    assert np.abs(rgb.astype(int) - grace_rgb.astype(int)).mean() < 4
    face = analyzer.analyze(rgb)
    assert abs(face.roll_deg) < 10  # analysed upright


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1"])
def test_modes_become_rgb(grace_rgb: np.ndarray, mode: str, analyzer: FaceAnalyzer) -> None:
    img = Image.fromarray(grace_rgb).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    rgb = load_photo(_encode(img, fmt))
    assert rgb.shape == grace_rgb.shape and rgb.dtype == np.uint8
    if mode != "1":  # a 1-bit photo is no longer a usable face, but still loads
        analyzer.analyze(rgb)
    if mode in ("L", "LA"):
        assert np.array_equal(rgb[..., 0], rgb[..., 1])


def test_cmyk_colours_survive(grace_rgb: np.ndarray) -> None:
    rgb = load_photo(_encode(Image.fromarray(grace_rgb).convert("CMYK"), "JPEG", quality=95))
    assert np.abs(rgb.astype(int) - grace_rgb.astype(int)).mean() < 6


def test_transparency_is_laid_over_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (200, 30, 30, 255)  # opaque red square on a fully transparent field
    rgb = load_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[20, 20]) == (200, 30, 30)


def test_sixteen_bit_png_is_scaled_not_clipped(
    grace_rgb: np.ndarray, analyzer: FaceAnalyzer
) -> None:
    grey = grace_rgb.mean(axis=2)
    img16 = Image.fromarray((grey * 257).astype(np.uint16))
    data = _encode(img16, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = load_photo(data)
    assert np.abs(rgb[..., 0].astype(float) - grey).max() <= 1.0
    analyzer.analyze(rgb)


def test_large_photo_is_downscaled(grace_rgb: np.ndarray) -> None:
    big = Image.fromarray(grace_rgb).resize((2560, 3000))
    rgb = load_photo(_encode(big, "JPEG"), max_side=2048)
    assert rgb.shape == (2048, 1748, 3)
    assert load_photo(_encode(big, "PNG"), max_side=1000).shape == (1000, 853, 3)


def test_file_size_bound(grace_hopper_path: Path) -> None:
    with pytest.raises(ImageTooLargeError, match="MB limit") as info:
        load_photo(grace_hopper_path, max_bytes=10_000)
    assert isinstance(info.value, LimitError) and info.value.http_status == 413
    with pytest.raises(ImageTooLargeError):
        load_photo(grace_hopper_path.read_bytes(), max_bytes=10_000)


def test_pixel_bound_checked_before_decoding() -> None:
    # 8000×6000 = 48 MP declared by a ~100-byte file: refused from the header alone.
    data = _png_header_only(8000, 6000)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match=r"48\.0 megapixels"):
        load_photo(data)


def test_decompression_bomb_beyond_pillows_own_bound() -> None:
    with pytest.raises(ImageTooLargeError):
        load_photo(_png_header_only(40_000, 40_000))


def test_real_bomb_small_file_many_pixels() -> None:
    data = _encode(Image.new("L", (7000, 7000)), "PNG", optimize=True)
    assert len(data) < 200_000
    with pytest.raises(ImageTooLargeError, match="megapixel"):
        load_photo(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, I am text\n" * 20, bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["empty", "text", "noise", "bad-png"],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(CorruptImageError, match="not a readable image") as info:
        load_photo(data)
    assert isinstance(info.value, InputError) and info.value.code == "corrupt_image"
    # A plain sentence for a person: no decoder class names or object reprs (issue 18).
    message = str(info.value)
    for internal in ("Error", "0x", "<_io", "BytesIO", "cannot identify"):
        assert internal not in message, message


def test_truncated_jpeg_is_refused(grace_hopper_path: Path) -> None:
    data = grace_hopper_path.read_bytes()
    with pytest.raises(CorruptImageError, match="damaged or truncated"):
        load_photo(data[: len(data) // 2])


def test_missing_file_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_photo(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="cannot read a photo from a int"):
        load_photo(42)  # type: ignore[arg-type]
