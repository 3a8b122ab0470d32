"""The one way images enter the package: file, bytes or array -> 8-bit PIL image ("L" or "RGB").

Pillow's own mode conversion clips high-bit-depth samples (a 16-bit PNG becomes all white), so
every loader (datasets, outlier exposure, ``fcdd predict``, the Detector, the served model) goes
through :func:`read_image` / :func:`to_8bit` / :func:`array_to_8bit`. Scaling rules:

- 8-bit ("1", "L", "RGB"): unchanged ("1" -> 0/255). Alpha is dropped (RGBA, LA, PA); palette
  images (P) are expanded to RGB; CMYK/YCbCr/LAB/HSV are converted to RGB.
- 16-bit integers (I;16, I;16B, I;16L, I;16N, uint16 arrays): ``round(v / 257)``, so 0 -> 0 and
  65535 -> 255 (the full 16-bit range maps to the full 8-bit range; no per-image stretching).
- Any other numbers (mode I 32-bit TIFFs, mode F float TIFFs, int/float arrays) go by their value
  range, NaN/inf -> 0 first: floats all within [0, 1] -> ``round(x * 255)``; all within [0, 255]
  -> taken as 8-bit values; all within [0, 65535] -> 16-bit samples, ``round(v / 257)`` (older
  Pillows read 16-bit PNGs as mode I); anything else (negative values, larger ranges) is min-max
  scaled per image (a constant image becomes 0).

Images larger than ``max_pixels`` are refused from the header, before decoding (decompression bombs).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcdd.errors import DataError

MAX_PIXELS = 50_000_000  # a single image larger than this is refused (decompression bombs)
# The file suffixes read as images, everywhere: dataset folders, outlier-exposure sources, `fcdd predict`.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
EIGHT_BIT_MODES = ("L", "RGB")
_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)

ImageSource = str | Path | bytes | bytearray | BinaryIO


def is_image_file(path: str | Path) -> bool:
    """Whether a file name has one of IMAGE_EXTENSIONS (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(
    source: ImageSource,
    name: str | None = None,
    max_pixels: int | None = None,
    draft: tuple[str, tuple[int, int]] | None = None,
) -> Image.Image:
    """Decode a file (path, bytes or file object) into an 8-bit "L" or "RGB" PIL image.

    ``name`` is used in error messages (default: the path); ``max_pixels`` defaults to MAX_PIXELS;
    ``draft`` (mode, size) lets a large
    JPEG decode at a reduced scale. Errors are one-line DataErrors that name the file."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    where = name or (str(source) if isinstance(source, (str, Path)) else "<image bytes>")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as im:  # reads the header only: the size check comes before decoding
            if im.width * im.height > max_pixels:
                raise DataError(
                    f"{where}: image of {im.width}x{im.height} pixels exceeds the limit of "
                    f"{max_pixels} pixels"
                )
            if draft and im.format == "JPEG":
                im.draft(*draft)
            im.load()
            return to_8bit(im)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{where}: no such image file") from e
    except _READ_ERRORS as e:
        reason = _one_line(e).replace(f" {str(source)!r}", "")  # PIL repeats the path: once is enough
        raise DataError(f"{where}: not a readable image (unreadable or truncated: {reason})") from e


def image_size(source: str | Path) -> tuple[int, int]:
    """(h, w) from the header, without decoding."""
    try:
        with Image.open(source) as im:
            return im.size[1], im.size[0]
    except _READ_ERRORS as e:
        raise DataError(f"{source}: unreadable image ({_one_line(e)})") from e


def to_8bit(image: Image.Image) -> Image.Image:
    """Any PIL image -> "L" or "RGB" with the scaling rules of the module docstring."""
    mode = image.mode
    if mode in EIGHT_BIT_MODES:
        return image
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        a = np.asarray(image)
        if mode in SIXTEEN_BIT_MODES:
            a = a.astype(np.uint16)  # I;16B reads as big-endian uint16: same values
        return Image.fromarray(array_to_8bit(a), "L")
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    if mode in ("P", "PA"):
        return image.convert("RGBA").convert("RGB")  # palette transparency -> alpha -> dropped
    return image.convert("RGB")  # RGBA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV


def array_to_8bit(a: np.ndarray) -> np.ndarray:
    """Numeric array -> uint8 of the same shape, with the scaling rules of the module docstring."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"image array of dtype {a.dtype}: expected real numbers")
    if a.size == 0:
        return a.astype(np.uint8)
    if a.dtype == np.uint16:
        return _scale(a, 257.0)
    f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = f.min(), f.max()
    if lo < 0:
        return _min_max(f)
    if hi <= 1.0 and np.issubdtype(a.dtype, np.floating):
        return _scale(f, 1 / 255)
    if hi <= 255:
        return _scale(f, 1.0)
    if hi <= 65535:
        return _scale(f, 257.0)
    return _min_max(f)


def _scale(a: np.ndarray, divisor: float) -> np.ndarray:
    return np.clip(np.round(a / divisor), 0, 255).astype(np.uint8)


def _min_max(a: np.ndarray) -> np.ndarray:
    lo, span = a.min(), a.max() - a.min()
    if span <= 0:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) / span * 255.0).astype(np.uint8)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
