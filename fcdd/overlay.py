"""Heatmap overlays and defect masks at an image's own resolution, written a band of rows at a time.

The map at the model's input size is resized (nearest) to the image's size band by band
(fcdd.pixel_grid), coloured through jet's 256-entry table (the colours of fcdd.heatmaps.colorize),
blended over the image and compressed into the PNG as it goes (:class:`PngStream`): memory is the
decoded image plus one band, whatever the image's size. Below the image a legend band shows the
score (p-value and decision where calibrated) and the colour bar with the values at its ends.

Colour scales (:class:`ColourScale`): ``model`` (the default) is fixed by the model file, so a
colour means the same score in every call and on every machine; ``local`` scales each image by
itself and ``global`` by all images of one call (fcdd.heatmaps' rules).
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcdd.pixel_grid import full_rows, grid

BAND_PIXELS = 1 << 20  # pixels per band of rows
MODEL_QUANTILE = 0.99  # red end of the model scale: this quantile of the good images' highest pixels
LEGEND_MIN_WIDTH = 400  # narrower images get a wider canvas (the image left, white beside it)


@dataclass(frozen=True)
class ColourScale:
    """Map value ``low`` is blue, ``low + span`` (and above) red."""

    low: float
    span: float
    kind: str  # model | global | local
    source: str = ""  # where a model scale comes from, for the legend and the docs

    def unit(self, values: np.ndarray) -> np.ndarray:
        """Values on [0, 1] (a zero span: zeros), float32, as fcdd.heatmaps normalises."""
        if not self.span > 0:
            return np.zeros(np.shape(values), np.float32)
        return np.clip((values - np.float32(self.low)) / np.float32(self.span), 0.0, 1.0).astype(np.float32)


def model_scale(meta: dict) -> ColourScale | None:
    """The model's own fixed scale: 0 (FCDD's scores are >= 0; a perfectly normal pixel scores 0) to
    the MODEL_QUANTILE quantile of its calibration images' highest pixel scores; None for a model
    trained without calibration (predict then uses the call's shared scale and says so)."""
    cal = meta.get("calibration") or {}
    if not cal.get("pixel_max"):
        return None
    high = float(np.quantile(np.asarray(cal["pixel_max"], np.float64), MODEL_QUANTILE))
    return ColourScale(
        0.0, high, "model", f"q{MODEL_QUANTILE:g} of {int(cal['n'])} good images' highest pixel"
    )


def local_scale(up: np.ndarray, q: float) -> ColourScale:
    """One image by itself: its minimum to its q-quantile (over its map at the model's input size)."""
    low = float(up.min())
    return ColourScale(low, float(np.quantile(up - low, q)), "local", f"this image, q{q:g}")


@lru_cache(maxsize=1)
def jet_table() -> np.ndarray:
    """jet as 256 uint8 RGB entries: matplotlib's colormap picks entry min(int(x * 256), 255)."""
    from fcdd.heatmaps import colorize

    return colorize((np.arange(256, dtype=np.float32)[None] + 0.5) / 256)[0]


def colour(unit: np.ndarray) -> np.ndarray:
    index = np.minimum((unit * np.float32(256)).astype(np.int32), 255)
    return jet_table()[index]


# ---------------------------------------------------------------- PNG, a band at a time
class PngStream:
    """An 8-bit grey ("L") or RGB PNG written row band by row band (filter Sub, zlib level 6)."""

    def __init__(self, f: BinaryIO, width: int, height: int, mode: str):
        self.f, self.width, self.height, self.left = f, width, height, height
        self.channels = {"L": 1, "RGB": 3}[mode]
        self.zip = zlib.compressobj(6)
        f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(
            b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2 if self.channels == 3 else 0, 0, 0, 0)
        )

    def _chunk(self, kind: bytes, body: bytes) -> None:
        crc = zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF
        self.f.write(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, np.uint8).reshape(len(rows), self.width * self.channels)
        if len(rows) > self.left:
            raise ValueError(f"PngStream: {len(rows)} rows given, {self.left} left")
        self.left -= len(rows)
        filtered = np.empty((len(rows), rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 1  # Sub: each byte minus the one a pixel to its left
        filtered[:, 1 : 1 + self.channels] = rows[:, : self.channels]
        np.subtract(rows[:, self.channels :], rows[:, : -self.channels], out=filtered[:, 1 + self.channels :])
        data = self.zip.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)

    def close(self) -> None:
        if self.left:
            raise ValueError(f"PngStream: {self.left} rows never written")
        self._chunk(b"IDAT", self.zip.flush())
        self._chunk(b"IEND", b"")


def _atomic(path: Path):
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_mask(target: Path | BinaryIO, up: np.ndarray, size: tuple[int, int], rule) -> None:
    """The 0/255 mask ``rule.apply`` (fcdd.calibration.MaskRule) of the map ``up`` at ``size``."""
    marked = rule.apply(up)
    band = max(1, BAND_PIXELS // max(1, size[1]))
    if not isinstance(target, Path):
        png = PngStream(target, size[1], size[0], "L")
        for _, rows in full_rows(marked, size, band):
            png.write(rows.astype(np.uint8) * 255)
        png.close()
        return
    tmp = _atomic(target)
    with open(tmp, "wb") as f:
        write_mask(f, up, size, rule)
    os.replace(tmp, target)


def mask_png_bytes(up: np.ndarray, size: tuple[int, int], rule) -> bytes:
    buf = io.BytesIO()
    write_mask(buf, up, size, rule)
    return buf.getvalue()


def mask_array(up: np.ndarray, size: tuple[int, int], rule) -> np.ndarray:
    """The boolean mask at ``size`` (for run-length encoding; a PNG needs only a band at a time)."""
    rows, cols = grid(up.shape, size)
    return rule.apply(up)[rows][:, cols]


def encoded_mask(up: np.ndarray, size: tuple[int, int], rule, fmt: str) -> str | dict:
    """The served model's ``mask`` cell: base64 PNG (``png``) or row-major run lengths (``rle``)."""
    from fcdd.calibration import mask_rle

    if fmt == "png":
        return base64.b64encode(mask_png_bytes(up, size, rule)).decode("ascii")
    return mask_rle(mask_array(up, size, rule))


# ---------------------------------------------------------------- overlays
def write_overlay(
    path: Path,
    image: Image.Image,
    up: np.ndarray,
    scale: ColourScale,
    caption: Sequence[tuple[str, str]] = (),
    opacity: float = 0.5,
) -> None:
    """The map ``up`` over ``image`` (8-bit "L"/"RGB", any size) on ``scale``, then the legend band:
    ``caption`` as (text, colour) pieces and the colour bar. Written to ``path`` atomically."""
    h, w = image.height, image.width
    legend = legend_band(max(w, LEGEND_MIN_WIDTH), caption, scale)
    width = legend.width
    band = max(1, BAND_PIXELS // w)
    tmp = _atomic(path)
    with open(tmp, "wb") as f:
        png = PngStream(f, width, h + legend.height, "RGB")
        for y0, heat in full_rows(up, (h, w), band):
            rows = np.asarray(image.crop((0, y0, w, y0 + len(heat))).convert("RGB"), np.float32)
            blended = (1 - opacity) * rows + opacity * colour(scale.unit(heat)).astype(np.float32)
            out = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
            if width > w:
                out = np.concatenate([out, np.full((len(out), width - w, 3), 255, np.uint8)], axis=1)
            png.write(out)
        png.write(np.asarray(legend))
        png.close()
    os.replace(tmp, path)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def legend_band(width: int, caption: Sequence[tuple[str, str]], scale: ColourScale) -> Image.Image:
    """White band of three lines: the caption; the colour bar between its end values; the scale."""
    size = int(np.clip(round(width / 40), 14, 64))
    font, pad = _font(size), max(3, size // 3)
    band = Image.new("RGB", (width, 3 * size + 5 * pad), "white")
    draw = ImageDraw.Draw(band)
    x = pad
    for text, fill in caption:
        draw.text((x, pad), text, fill=fill, font=font)
        x += int(draw.textlength(text, font=font))
    low, high = f"{scale.low:.3g}", f"{scale.low + scale.span:.3g}"
    y = size + 2 * pad
    draw.text((pad, y), low, fill="black", font=font)
    x0 = pad + int(draw.textlength(low, font=font)) + pad
    x1 = max(x0 + 16, width - int(draw.textlength(high, font=font)) - 2 * pad)
    bar = colour(np.linspace(0, 1, x1 - x0, dtype=np.float32))
    band.paste(Image.fromarray(np.repeat(bar[None], size, axis=0)), (x0, y))
    draw.text((x1 + pad, y), high, fill="black", font=font)
    name = f"{scale.kind} colour scale" + (f": {scale.source}" if scale.source else "")
    draw.text((pad, 2 * size + 3 * pad), name, fill="#444444", font=font)
    return band


def caption_for(row: dict, alpha: float | None) -> list[tuple[str, str]]:
    """What the legend says of one scores.csv row: score, and p-value and decision where calibrated."""
    parts = [(f"score {row['score']:.5g}", "black")]
    if row.get("p_value") not in (None, ""):
        parts.append((f"   p {row['p_value']:.4g}", "black"))
        if row.get("anomalous"):
            parts.append((f"   ANOMALOUS at alpha {alpha:g}", "#c00000"))
        else:
            parts.append((f"   nominal at alpha {alpha:g}", "#006000"))
    if row.get("label"):
        parts.append((f"   {row['label']} (threshold)", "black"))
    return parts
