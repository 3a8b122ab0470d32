"""Confetti noise (docs/method.md §4): the nominal image itself, corrupted by blurred, rotated squares.

Matches the 'confetti' noise mode of the original FCDD code (``noise_modes.py``/``noise.py`` and the
``malformed_normal`` branch of ``online_supervisor.py``), with the sign convention of docs/method.md §4: squares
darken the image (negative values) and the noise is negated when darkening changes too little.

All randomness comes from the ``numpy.random.Generator`` passed in, so a draw is reproducible.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

COLOUR_P = 1.8e-5  # Bernoulli rate of colour-square centres per pixel
GREY_P = 1.2e-5  # Bernoulli rate of grey-square centres per pixel
MIN_SIDE, MAX_SIDE = 8, 54  # square side in pixels, uniform over the integers in between
MAX_ROTATION = 45.0  # degrees; angle ~ U(-45, 45)
GREY_VALUE = -255.0
BLUR_SIZE, BLUR_SIGMA = 25, 5.0
INVERT_THRESHOLD = 0.025  # on the 0..255 scale, like the original's integer image tensors


@dataclass(frozen=True)
class Squares:
    """Centres (row, col), sides, angles (degrees) and per-channel values of n squares."""

    rows: np.ndarray
    cols: np.ndarray
    sides: np.ndarray
    angles: np.ndarray
    values: np.ndarray  # (n, channels)

    def __len__(self) -> int:
        return len(self.rows)


def sample_squares(height: int, width: int, channels: int, p: float, colour: bool, rng) -> Squares:
    """Centres ~ Bernoulli(p) per pixel, conditioned on at least one square (the original's ``ensureblob``).

    Drawing the count from Binomial(H·W, p) and the positions without replacement gives exactly the
    distribution of a per-pixel Bernoulli mask, without materialising it.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"confetti: Bernoulli rate must be in (0, 1), got {p}")
    count = 0
    while count == 0:
        count = int(rng.binomial(height * width, p))
    centres = rng.choice(height * width, size=count, replace=False)
    sides = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=count)
    angles = rng.uniform(-MAX_ROTATION, MAX_ROTATION, size=count)
    if colour:
        values = rng.integers(-256, 0, size=(count, channels)).astype(np.float32)
    else:
        values = np.full((count, channels), GREY_VALUE, dtype=np.float32)
    return Squares(centres // width, centres % width, sides, angles, values)


def square_region(height: int, width: int, row: int, col: int, side: int, angle: float):
    """(row slice, col slice, bool mask) of a square of ``side`` px centred on (row, col), rotated.

    Unrotated, it covers exactly side×side pixels, placed like the original (for an even side the
    extra row/column lies after the centre). Pixels belong to it when their centre lies inside.
    """
    offset = 0.5 if side % 2 == 0 else 0.0
    cy, cx = row + offset, col + offset
    half = side / 2
    reach = half * math.sqrt(2) + 1
    y0, y1 = max(0, math.floor(cy - reach)), min(height, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, math.floor(cx - reach)), min(width, math.ceil(cx + reach) + 1)
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    inside = (np.abs(u) < half) & (np.abs(v) < half)
    return slice(y0, y1), slice(x0, x1), inside


def paint_squares(noise: np.ndarray, squares: Squares) -> None:
    """Writes each square's value into ``noise`` (H, W, C) in place; later squares overwrite earlier."""
    height, width = noise.shape[:2]
    for i in range(len(squares)):
        ys, xs, inside = square_region(
            height,
            width,
            int(squares.rows[i]),
            int(squares.cols[i]),
            int(squares.sides[i]),
            squares.angles[i],
        )
        noise[ys, xs][inside] = squares.values[i]


Window = tuple[int, int, int, int]  # top, bottom, left, right: where the blurred noise may be non-zero


def gaussian_blur(noise: np.ndarray, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Separable, normalised Gaussian blur of (H, W, C) with reflected borders (as kornia's default)."""
    block, (top, bottom, left, right) = blur_window(noise, size, sigma)
    out = np.zeros(noise.shape, dtype=np.float32)
    out[top:bottom, left:right] = block
    return out


def blur_window(
    noise: np.ndarray, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA
) -> tuple[np.ndarray, Window]:
    """:func:`gaussian_blur` of ``noise``, only in the window where it can be non-zero: (block, window).

    Confetti noise is a few squares on zeros, so only the window around them is convolved: an output
    pixel is non-zero only where its size x size neighbourhood in the padded noise (reflections
    included) meets a square; outside the window the blur is exactly 0. Inside, the same values as
    the full depthwise convolution up to float rounding (< 1e-4; after truncation to uint8, one pixel
    in ~500,000 of a corrupted 240 px image differs by one grey level), at a third of the time.
    """
    height, width, channels = noise.shape
    t = torch.from_numpy(np.ascontiguousarray(noise.transpose(2, 0, 1)))[None]
    pad = size // 2
    mode = "reflect" if min(t.shape[-2:]) > pad else "replicate"  # reflect needs pad < side
    with torch.no_grad():
        t = F.pad(t, (pad, pad, pad, pad), mode=mode)[0]
        support = t.abs().amax(0) > 0  # padded (H + 2 pad, W + 2 pad)
        rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
        if len(rows) == 0:
            return np.zeros((0, 0, channels), dtype=np.float32), (0, 0, 0, 0)
        # output row i reads padded rows i .. i + 2 pad: non-zero only for i in [first - 2 pad, last]
        top, bottom = max(0, int(rows[0]) - 2 * pad), min(height, int(rows[-1]) + 1)
        left, right = max(0, int(cols[0]) - 2 * pad), min(width, int(cols[-1]) + 1)
        t = t[:, top : bottom + 2 * pad, left : right + 2 * pad]
        # The separable blur as two matrix products with banded (Toeplitz) matrices: BLAS, whatever the
        # window's shape (a depthwise conv2d builds a new oneDNN kernel for every new shape).
        longest = max(bottom - top, right - left)
        band = _band(max(256, 1 << (longest - 1).bit_length()), size, sigma)  # few sizes, cached
        t = (
            band[: bottom - top, : bottom - top + 2 * pad]
            @ t
            @ band[: right - left, : right - left + 2 * pad].T
        )
    return t.numpy().transpose(1, 2, 0), (top, bottom, left, right)


@functools.cache
def _band(rows: int, size: int, sigma: float) -> torch.Tensor:
    """[rows, rows + size - 1]: row i holds the normalised Gaussian kernel in columns i .. i + size - 1."""
    x = np.arange(size, dtype=np.float32) - size // 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel = torch.from_numpy(kernel / kernel.sum())
    band = torch.zeros(rows, rows + size - 1)
    index = torch.arange(rows)[:, None] + torch.arange(size)[None, :]
    band.scatter_(1, index, kernel.expand(rows, size))
    return band


def _squares_noise(height: int, width: int, channels: int, rng) -> np.ndarray:
    colour = np.zeros((height, width, channels), dtype=np.float32)
    grey = np.zeros_like(colour)
    paint_squares(colour, sample_squares(height, width, channels, COLOUR_P, True, rng))
    paint_squares(grey, sample_squares(height, width, channels, GREY_P, False, rng))
    return colour + grey


def confetti_noise(height: int, width: int, channels: int, rng) -> np.ndarray:
    """The blurred sum of colour and grey squares, float32 (H, W, C), all values <= 0."""
    return gaussian_blur(_squares_noise(height, width, channels, rng))


def mean_abs_change(image: np.ndarray, noise: np.ndarray) -> float:
    """Mean over all C·H·W elements of |clamp(image + noise, 0, 255) − image|, on the 0..255 scale."""
    return float(np.abs(np.clip(image + noise, 0.0, 255.0) - image).mean())


def apply_confetti(image: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Corrupts a uint8 (H, W) or (H, W, C) image; returns (corrupted uint8, changed-pixel bool (H, W)).

    'Mean absolute change per element' is the mean over every channel of every pixel of the
    absolute change, in grey levels (0..255), exactly like the original, which works on integer
    [0, 255] tensors and compares |mean(change)| with 0.025. The noise has one sign, so |mean| and
    mean|·| agree. The threshold therefore only triggers when the darkening squares land on
    (nearly) black regions; then the brightening, negated noise is used if it changes more.
    Adding and clamping truncates to integers like the original's ``.byte()``. Outside the blurred
    squares' window the noise is 0, so only the window is computed (the mean still over all elements).
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"confetti: expected a uint8 (H, W) or (H, W, C) image, got {image.dtype} {image.shape}"
        )
    pixels = image[..., None] if image.ndim == 2 else image
    height, width, channels = pixels.shape
    noise, (top, bottom, left, right) = blur_window(_squares_noise(height, width, channels, rng))
    window = pixels[top:bottom, left:right]
    base = window.astype(np.float32)
    elements = pixels.size

    def change(n: np.ndarray) -> float:
        return float(np.abs(np.clip(base + n, 0.0, 255.0) - base).sum()) / elements

    darkening = change(noise)
    if darkening < INVERT_THRESHOLD and change(-noise) > darkening:
        noise = -noise
    corrupted = pixels.copy()
    corrupted[top:bottom, left:right] = np.clip(base + noise, 0.0, 255.0).astype(np.uint8)
    changed = np.zeros((height, width), dtype=bool)
    changed[top:bottom, left:right] = (corrupted[top:bottom, left:right] != window).any(axis=2)
    return corrupted.reshape(image.shape), changed


class Confetti:
    """Anomaly source: the nominal image corrupted by confetti noise at its stored size.

    ``gt='ones'`` gives an all-ones ground-truth map (the paper), ``'changed'`` marks the changed pixels.
    Stateless, so it pickles trivially for DataLoader workers.
    """

    def __init__(self, gt: str = "ones") -> None:
        if gt not in ("ones", "changed"):
            raise ValueError(f"anomalies.confetti_gt: {gt!r} is not one of ones, changed")
        self.gt = gt

    def __call__(self, image: Image.Image, rng) -> tuple[Image.Image, np.ndarray]:
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"confetti: image mode {image.mode!r} is not supported; expected 'L' or 'RGB'")
        corrupted, changed = apply_confetti(np.asarray(image), rng)
        mask = changed if self.gt == "changed" else np.ones_like(changed)
        return Image.fromarray(corrupted), mask
