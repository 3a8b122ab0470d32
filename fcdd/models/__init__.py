"""The FCDD nets (docs/method.md §2) and ``build_model(cfg)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fcdd.models.cnn28 import CNN28
from fcdd.models.cnn32 import CNN32
from fcdd.models.receptive_field import FCDDNet, ReceptiveField, receptive_field, walk_layers
from fcdd.models.vgg import FCDDVGG11, WeightsError, load_vgg_features

if TYPE_CHECKING:
    from fcdd.config import Config

NETS = ("cnn28", "cnn32", "vgg11_bn")
DEFAULT_CHANNELS = {"cnn28": 1, "cnn32": 3, "vgg11_bn": 3}

__all__ = [
    "CNN28",
    "CNN32",
    "FCDDNet",
    "FCDDVGG11",
    "NETS",
    "ReceptiveField",
    "WeightsError",
    "build_model",
    "build_net",
    "load_vgg_features",
    "receptive_field",
    "walk_layers",
]


def build_net(
    net: str,
    input_size: int | Sequence[int],
    in_channels: int | None = None,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    freeze: int = 0,
) -> FCDDNet:
    """One FCDD net by name. ``in_channels`` defaults to the paper's (cnn28: 1, others: 3); VGG
    takes 3 channels only. A detector rebuilding a trained net passes ``pretrained=False``."""
    if net not in NETS:
        raise ValueError(f"model.net: {net!r} is not one of {', '.join(NETS)}")
    channels = DEFAULT_CHANNELS[net] if in_channels is None else in_channels
    if net == "vgg11_bn":
        if channels != 3:
            raise ValueError(f"model.net vgg11_bn takes 3 input channels, got {channels}")
        return FCDDVGG11(input_size, pretrained=pretrained, weights_path=weights_path, freeze=freeze)
    if pretrained or weights_path or freeze:
        raise ValueError(f"model.net {net}: pretrained weights and freeze apply to vgg11_bn only")
    return CNN28(channels, input_size) if net == "cnn28" else CNN32(channels, input_size)


def build_model(
    cfg: Config, in_channels: int | None = None, input_size: int | Sequence[int] | None = None
) -> FCDDNet:
    """The net named by ``cfg.model``; ``input_size`` (the data's resolved size, e.g. under
    data.resize keep_aspect) replaces model.input_size where given."""
    m = cfg.model
    size = m.input_size if input_size is None else input_size
    return build_net(m.net, size, in_channels, m.pretrained, m.weights_path, m.freeze)
