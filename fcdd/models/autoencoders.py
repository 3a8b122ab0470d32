"""Autoencoder baselines (docs/baselines.md §3): the HSC net of each input size as encoder, a
mirrored decoder that reconstructs the image from the encoder's feature vector.

| FCDD net | encoder (fcdd/models/hsc.py) | bottleneck | decoder | output |
|---|---|---|---|---|
| cnn28 | HSC28 → 48 | 3×4×4 | up2, deconv5(→64) BN LReLU, up2, deconv5(→128, p3) BN LReLU, up2, deconv5(→C) | sigmoid, 28×28 |
| cnn32 | HSC32 → 64, BN1d | 4×4×4 | deconv3(→128) BN LReLU up2, deconv3(→256) BN LReLU, deconv3(→256) BN LReLU up2, deconv3(→128) BN LReLU up2, deconv3(→C) | linear, 32×32 |
| vgg11_bn | HSCVGG11 → 4096, BN1d ReLU, FC → 512·h·w, BN1d ReLU | 512×h×w | five ×2 stages mirroring VGG's (512, 512, 256, 128, 64 channels) | linear, 32h×32w |

The 28 and 32 nets reconstruct exactly 28×28 and 32×32 images (their bottlenecks are fixed, as
in the original baselines); the VGG decoder follows the input size: h×w = ⌈H/32⌉×⌈W/32⌉ (7×7 at
224, the original's 25088 features), its output cropped to H×W. Fashion-MNIST's min-max scaled
inputs lie in [0, 1], hence AE28's sigmoid; the other inputs are standardised, so unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fcdd.models.cnn28 import BN_EPS
from fcdd.models.hsc import (
    HSC28,
    HSC32,
    HSCVGG11,
    VGG_EMBEDDING,
    BatchNorm1dAnyBatch,
    HSCNet,
    _pair,
    _stored_size,
)
from fcdd.models.receptive_field import ReceptiveField


class Autoencoder(nn.Module):
    """``forward(x[B, C, H, W]) -> x̂[B, C, H, W]``: ``decoder(encoder(x))``."""

    native_size: tuple[int, int] | None = None  # None: any size

    def __init__(self, encoder: HSCNet, decoder: nn.Module, input_size: int | Sequence[int]):
        super().__init__()
        size = _pair(input_size)
        if self.native_size is not None and size != self.native_size:
            raise ValueError(
                f"{type(self).__name__} reconstructs {self.native_size[0]}x{self.native_size[1]} images; "
                f"model.input_size is {input_size}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.in_channels = encoder.in_channels
        self.input_size = _stored_size(input_size)
        self.fcdd_net = encoder.fcdd_net

    @property
    def receptive_field(self) -> ReceptiveField:
        """The FCDD twin's (r, j, s): r sizes the display blur of the error maps."""
        return self.encoder.receptive_field

    @property
    def output_size(self) -> int | tuple[int, int]:
        """The error map's size: the input's."""
        return self.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.embed(x))


class _Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class _CropTo(nn.Module):
    """Crop a reconstruction to the input's (H, W) (the VGG decoder works in multiples of 32)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.size[0], : self.size[1]]


def _up() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="nearest")


def _deconv_bn_lrelu(cin: int, cout: int, k: int, p: int, eps: float = BN_EPS) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, k, padding=p), nn.BatchNorm2d(cout, eps=eps), nn.LeakyReLU()]


class AE28(Autoencoder):
    """Encoder HSC28 (48-d), decoder to 28×28 in [0, 1]."""

    native_size = (28, 28)

    def __init__(self, in_channels: int = 1, input_size: int | Sequence[int] = 28):
        decoder = nn.Sequential(
            _Reshape(3, 4, 4),
            nn.LeakyReLU(),
            _up(),  # 8
            *_deconv_bn_lrelu(3, 64, 5, 2),
            _up(),  # 16
            *_deconv_bn_lrelu(64, 128, 5, 3),  # 14
            _up(),  # 28
            nn.ConvTranspose2d(128, in_channels, 5, padding=2),
            nn.Sigmoid(),
        )
        super().__init__(HSC28(in_channels, input_size), decoder, input_size)


class AE32(Autoencoder):
    """Encoder HSC32 (64-d), decoder to 32×32."""

    native_size = (32, 32)

    def __init__(self, in_channels: int = 3, input_size: int | Sequence[int] = 32):
        decoder = nn.Sequential(
            BatchNorm1dAnyBatch(64, eps=BN_EPS),
            _Reshape(4, 4, 4),
            nn.LeakyReLU(),
            *_deconv_bn_lrelu(4, 128, 3, 1),
            _up(),  # 8
            *_deconv_bn_lrelu(128, 256, 3, 1),
            *_deconv_bn_lrelu(256, 256, 3, 1),
            _up(),  # 16
            *_deconv_bn_lrelu(256, 128, 3, 1),
            _up(),  # 32
            nn.ConvTranspose2d(128, in_channels, 3, padding=1),
        )
        super().__init__(HSC32(in_channels, input_size), decoder, input_size)


def _deconv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True)]


class AE224(Autoencoder):
    """Encoder HSCVGG11 (4096-d; pretrained and frozen as configured), decoder mirroring VGG."""

    def __init__(
        self,
        input_size: int | Sequence[int] = 224,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        freeze: int = 0,
    ):
        h, w = _pair(input_size)
        gh, gw = math.ceil(h / 32), math.ceil(w / 32)
        decoder = nn.Sequential(
            BatchNorm1dAnyBatch(VGG_EMBEDDING),
            nn.ReLU(True),
            nn.Linear(VGG_EMBEDDING, 512 * gh * gw),
            BatchNorm1dAnyBatch(512 * gh * gw),
            nn.ReLU(True),
            _Reshape(512, gh, gw),
            _up(),
            *_deconv_bn_relu(512, 512),
            *_deconv_bn_relu(512, 512),
            _up(),
            *_deconv_bn_relu(512, 512),
            *_deconv_bn_relu(512, 256),
            _up(),
            *_deconv_bn_relu(256, 256),
            *_deconv_bn_relu(256, 128),
            _up(),
            *_deconv_bn_relu(128, 64),
            _up(),
            nn.ConvTranspose2d(64, 3, 3, padding=1),
            _CropTo((h, w)),
        )
        encoder = HSCVGG11(input_size, pretrained=pretrained, weights_path=weights_path, freeze=freeze)
        super().__init__(encoder, decoder, input_size)
