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
One rule decides what is an image, for every reader (folders, ``fcdd predict``, the served model, the
page): a file name ending in one of IMAGE_EXTENSIONS, and content in one of IMAGE_FORMATS (Pillow
never tries its other plugins, e.g. EPS, which would run Ghostscript). A PNG whose pixel data ends
early (Pillow fills the missing rows with black) is refused as truncated.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcdd.errors import DataError

MAX_PIXELS = 50_000_000  # a single image larger than this is refused (decompression bombs)
# The file suffixes read as images, everywhere: dataset folders, outlier-exposure sources, `fcdd predict`.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
# The Pillow formats decoded (content, whatever the name): the formats of IMAGE_EXTENSIONS.
IMAGE_FORMATS = ("BMP", "DIB", "GIF", "JPEG", "PNG", "PPM", "TIFF", "WEBP")  # JPEG covers MPO
FORMATS_TEXT = "PNG, JPEG, TIFF, BMP, GIF, WebP, PGM/PPM"
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
    with _named_errors(where, source):
        with Image.open(source, formats=IMAGE_FORMATS) as im:  # the header: size checked before decoding
            if im.width * im.height > max_pixels:
                raise DataError(
                    f"{where}: image of {im.width}x{im.height} pixels exceeds the limit of "
                    f"{max_pixels} pixels"
                )
            if draft and im.format == "JPEG":
                im.draft(*draft)
            im.load()
            if im.format == "PNG":
                _check_png_complete(im, source, where)
            return to_8bit(im)


def image_size(source: str | Path | BinaryIO, name: str | None = None) -> tuple[int, int]:
    """(h, w) from the header, without decoding; the errors of :func:`read_image`."""
    where = name or (str(source) if isinstance(source, (str, Path)) else "<image bytes>")
    with _named_errors(where, source), Image.open(source, formats=IMAGE_FORMATS) as im:
        return im.size[1], im.size[0]


@contextlib.contextmanager
def _named_errors(where: str, source) -> Iterator[None]:
    """Pillow's and the file system's errors as one-line DataErrors that name the file."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{where}: no such image file") from e
    except IsADirectoryError as e:
        raise DataError(f"{where}: a folder, not an image file") from e
    except PermissionError as e:
        raise DataError(f"{where}: not readable (permission denied)") from e
    except UnidentifiedImageError as e:
        raise DataError(
            f"{where}: not a readable image (unreadable or truncated, or not one of {FORMATS_TEXT})"
        ) from e
    except _READ_ERRORS as e:
        reason = _one_line(e).replace(f" {str(source)!r}", "")  # PIL repeats the path: once is enough
        raise DataError(f"{where}: not a readable image (unreadable or truncated: {reason})") from e


# ---------------------------------------------------------------- truncated PNGs
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png_complete(im: Image.Image, source, where: str) -> None:
    """Pillow decodes a PNG whose compressed data ends before the last row without an error and
    leaves the missing rows black. Cheap first look: a last row that is not all zero was decoded;
    otherwise count the decompressed bytes against what the header needs."""
    interlaced = bool(im.info.get("interlace"))
    if not interlaced and np.asarray(im.crop((0, im.height - 1, im.width, im.height))).any():
        return
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            got, need = _png_data_bytes(f)
    else:
        try:
            source.seek(0)
        except (AttributeError, OSError):
            return  # a stream that cannot be read again: nothing more to check
        got, need = _png_data_bytes(source)
    if need and got < need:
        raise DataError(
            f"{where}: not a readable image (truncated: its pixel data ends after {got} of {need} "
            f"bytes, {100 * (need - got) / need:.0f} % missing, which would read as black)"
        )


def _png_data_bytes(f: BinaryIO) -> tuple[int, int]:
    """(decompressed bytes of the IDAT stream, bytes the header's size and depth need), reading the
    file chunk by chunk and counting the output in pieces: never the whole image in memory."""
    f.read(8)
    header, inflate, got = None, zlib.decompressobj(), 0
    while True:
        head = f.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind != b"IDAT":
            body = f.read(length)
            header = struct.unpack(">IIBBBBB", body[:13]) if kind == b"IHDR" and len(body) >= 13 else header
        left = length if kind == b"IDAT" else 0
        try:
            while left > 0 and not inflate.eof:
                data = f.read(min(left, 1 << 20))
                if not data:
                    break
                left -= len(data)
                while data and not inflate.eof:
                    got += len(inflate.decompress(data, 1 << 22))
                    data = inflate.unconsumed_tail
        except zlib.error:
            return got, 0  # a broken stream: Pillow has said so already if it matters
        f.seek(left + 4, io.SEEK_CUR)  # the rest of the chunk (after the end of the stream) and its CRC
    got += len(inflate.flush())
    if header is None:
        return got, 0
    width, height, depth, colour, _, _, interlace = header
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    need = 0
    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
        cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if cols > 0 and rows > 0:
            need += rows * (1 + -(-cols * bits // 8))
    return got, need


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
