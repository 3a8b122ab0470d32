"""Receptive-field upsampling (docs/method.md §3, Algorithm 1): each low-resolution score spreads over its
receptive field with a fixed Gaussian, via a transposed convolution with stride j, then a crop that
aligns low-res pixel i with input pixel i*j + s."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fcdd.models.receptive_field import FCDDNet, ReceptiveField


def default_sigma(r: int) -> float:
    """docs/method.md §3: σ when none is configured."""
    return math.log10(0.45 * r + 1) + 0.25 if r < 32 else 10.0


def _window(length: int, sigma: float) -> torch.Tensor:
    """A 1-D Gaussian window with peak 1 at the centre (scipy.signal.windows.gaussian)."""
    n = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    return torch.exp(-0.5 * (n / sigma) ** 2)


def gaussian_kernel(r: int, sigma: float) -> torch.Tensor:
    """The r x r kernel G (float32): outer product of a 1-D window of peak 1. For even r the window
    of length r-1 has its centre duplicated and is halved, so the 2-D peak is 0.25 (an even window
    sampled directly would miss the peak at the half-integer centre)."""
    if r < 1:
        raise ValueError(f"gaussian_kernel: r must be at least 1, got {r}")
    if not sigma > 0:
        raise ValueError(f"gaussian_kernel: sigma must be positive, got {sigma}")
    if r % 2:
        line = _window(r, sigma)
    else:
        odd = _window(r - 1, sigma)
        centre = (r - 1) // 2
        line = torch.cat([odd[: centre + 1], odd[centre:]]) / 2
    return torch.outer(line, line).float()


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"input_size must be positive, got {size}")
    return int(h), int(w)


class ReceptiveFieldUpsampler(nn.Module):
    """``forward(a[B, C, u, v]) -> [B, C, H, W]`` with (H, W) = ``input_size``.

    The peak of low-res pixel i lands at input pixel ~ i*j + s; output pixels no receptive field
    reaches (e.g. a remainder that floor pooling dropped) are 0.
    """

    kernel: torch.Tensor

    def __init__(self, rf: ReceptiveField, sigma: float | None, input_size: int | tuple[int, int]):
        super().__init__()
        self.rf = rf
        self.sigma = default_sigma(rf.r) if sigma is None else float(sigma)
        self.input_size = _pair(input_size)
        # Offset of input pixel 0 in the full transposed-conv output: kernel centre minus shift.
        # Equals the total padding in input pixels, an integer for the nets here.
        self.offset = round((rf.r - 1) / 2 - rf.s)
        # Not persistent: the kernel is a function of (r, σ), never learned or saved.
        self.register_buffer("kernel", gaussian_kernel(rf.r, self.sigma)[None, None], persistent=False)

    @classmethod
    def for_model(cls, model: FCDDNet, sigma: float | None = None) -> ReceptiveFieldUpsampler:
        return cls(model.receptive_field, sigma, model.input_size)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.dim() != 4:
            raise ValueError(f"ReceptiveFieldUpsampler: expected [B, C, u, v], got {list(a.shape)}")
        b, c, u, v = a.shape
        full = F.conv_transpose2d(a.reshape(b * c, 1, u, v), self.kernel.to(a.dtype), stride=self.rf.j)
        h, w = self.input_size
        top, left = self.offset, self.offset
        # Negative padding crops; positive pads zeros where the map does not reach the border.
        out = F.pad(full, (-left, w - (full.shape[-1] - left), -top, h - (full.shape[-2] - top)))
        return out.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"rf={self.rf}, sigma={self.sigma:.4g}, input_size={self.input_size}"


def resize_nearest(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel scores [B, 1, H, W] at a mask's original resolution (docs/method.md §1: nearest)."""
    return F.interpolate(maps, size=tuple(size), mode="nearest")
