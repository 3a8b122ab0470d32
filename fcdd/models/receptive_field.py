"""Receptive-field bookkeeping (docs/method.md §2) and the common base of the FCDD nets.

The values r (receptive field), j (jump) and s (shift) are derived by walking a net's conv and pool
modules in order, so they can never disagree with the layers actually used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

_TRACKED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class ReceptiveField:
    """r: receptive field in input pixels, j: jump (input pixels per output pixel), s: shift (the
    input coordinate of the centre of output pixel 0)."""

    r: int
    j: int
    s: float

    def to_dict(self) -> dict[str, float]:
        return {"r": self.r, "j": self.j, "s": self.s}

    @classmethod
    def from_dict(cls, values: dict) -> ReceptiveField:
        try:
            return cls(r=int(values["r"]), j=int(values["j"]), s=float(values["s"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"receptive field: expected a mapping with r, j, s, got {values!r}") from e


def _square(value: int | tuple[int, ...], name: str, module: nn.Module) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(
            f"receptive field: {module} has a non-square {name} {value}; only square layers are supported"
        )
    return int(value[0])


def _layer_params(module: nn.Module) -> tuple[int, int, int]:
    """(kernel, stride, padding) of a tracked layer."""
    if isinstance(module, nn.Conv2d) or isinstance(module, nn.MaxPool2d):
        dilation = _square(module.dilation, "dilation", module)
        if dilation != 1:
            raise ValueError(f"receptive field: {module} uses dilation {dilation}; only 1 is supported")
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.ceil_mode:
        raise ValueError(f"receptive field: {module} uses ceil_mode; only floor pooling is supported")
    kernel = _square(module.kernel_size, "kernel_size", module)
    stride = _square(module.stride, "stride", module)
    padding = module.padding
    if isinstance(padding, str):
        raise ValueError(f"receptive field: {module} uses padding={padding!r}; give it as a number")
    return kernel, stride, _square(padding, "padding", module)


def walk_layers(
    layers: nn.Module | Iterable[nn.Module], input_size: int | Sequence[int]
) -> tuple[ReceptiveField, int | tuple[int, int]]:
    """Apply the docs/method.md §2 recurrences over the conv/pool modules of ``layers`` in registration order
    (which is execution order for the sequential FCDD nets). Returns (receptive field, output size):
    the output size is an int for an int (square) input size and (u, v) for an (H, W) one."""
    modules = layers.modules() if isinstance(layers, nn.Module) else layers
    square = isinstance(input_size, int)
    h, w = (input_size, input_size) if square else (int(input_size[0]), int(input_size[1]))
    n, m, j, r, s = h, w, 1, 1, 0.0
    for module in modules:
        if not isinstance(module, _TRACKED):
            continue
        k, t, p = _layer_params(module)
        n, m = (n + 2 * p - k) // t + 1, (m + 2 * p - k) // t + 1
        if min(n, m) < 1:
            raise ValueError(
                f"receptive field: input size {input_size} is too small; {module} has no output left"
            )
        r = r + (k - 1) * j
        s = s + ((k - 1) / 2 - p) * j
        j = j * t
    return ReceptiveField(r=r, j=j, s=s), (n if square else (n, m))


def receptive_field(
    layers: nn.Module | Iterable[nn.Module], input_size: int | Sequence[int]
) -> ReceptiveField:
    """The (r, j, s) of ``layers`` (the same for any input size that leaves an output)."""
    return walk_layers(layers, input_size)[0]


class FCDDNet(nn.Module):
    """A fully convolutional net with one output channel: ``features`` then a 1x1 ``head``.

    ``forward(x[B, C, H, W]) -> φ(x)[B, 1, u, v]``. ``receptive_field`` and ``output_size`` are
    computed from the layers for ``input_size`` (an int: square; (H, W): rectangle; then
    ``output_size`` is (u, v)).
    """

    def __init__(
        self, features: nn.Sequential, head: nn.Conv2d, in_channels: int, input_size: int | Sequence[int]
    ):
        super().__init__()
        if head.out_channels != 1:
            raise ValueError(f"FCDD head must have 1 output channel, got {head.out_channels}")
        self.features = features
        self.head = head
        self.in_channels = in_channels
        self.input_size = input_size if isinstance(input_size, int) else tuple(int(v) for v in input_size)
        self.receptive_field, self.output_size = walk_layers(self, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected input [B, {self.in_channels}, H, W], got {list(x.shape)}"
            )
        return self.head(self.features(x))
