"""The FCDD nets (docs/method.md §2), their HSC and autoencoder variants (docs/baselines.md) and
``build_model(cfg)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fcdd.models.autoencoders import AE28, AE32, AE224, Autoencoder
from fcdd.models.cnn28 import CNN28
from fcdd.models.cnn32 import CNN32
from fcdd.models.hsc import HSC28, HSC32, HSCVGG11, HSCNet, fcdd_receptive_field
from fcdd.models.receptive_field import FCDDNet, ReceptiveField, receptive_field, walk_layers
from fcdd.models.vgg import FCDDVGG11, WeightsError, load_vgg_features

if TYPE_CHECKING:
    from fcdd.config import Config

NETS = ("cnn28", "cnn32", "vgg11_bn")
DEFAULT_CHANNELS = {"cnn28": 1, "cnn32": 3, "vgg11_bn": 3}
VARIANTS = ("fcdd", "hsc", "ae")  # the net an objective trains (fcdd.objectives: net_variant)


__all__ = [
    "AE28",
    "AE32",
    "AE224",
    "Autoencoder",
    "CNN28",
    "CNN32",
    "FCDDNet",
    "FCDDVGG11",
    "HSC28",
    "HSC32",
    "HSCNet",
    "HSCVGG11",
    "NETS",
    "VARIANTS",
    "ReceptiveField",
    "WeightsError",
    "build_model",
    "build_net",
    "fcdd_receptive_field",
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
    variant: str = "fcdd",
) -> FCDDNet | HSCNet | Autoencoder:
    """One net by name, in ``variant`` (:data:`VARIANTS`: the FCDD net, its HSC twin with a fully
    connected head, or the autoencoder of its input size; docs/baselines.md §2-3). ``in_channels``
    defaults to the paper's (cnn28: 1, others: 3); VGG takes 3 channels only. A detector
    rebuilding a trained net passes ``pretrained=False``."""
    if net not in NETS:
        raise ValueError(f"model.net: {net!r} is not one of {', '.join(NETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"net variant {variant!r} is not one of {', '.join(VARIANTS)}")
    channels = DEFAULT_CHANNELS[net] if in_channels is None else in_channels
    if net == "vgg11_bn":
        if channels != 3:
            raise ValueError(f"model.net vgg11_bn takes 3 input channels, got {channels}")
        vgg = {"fcdd": FCDDVGG11, "hsc": HSCVGG11, "ae": AE224}[variant]
        return vgg(input_size, pretrained=pretrained, weights_path=weights_path, freeze=freeze)
    if pretrained or weights_path or freeze:
        raise ValueError(f"model.net {net}: pretrained weights and freeze apply to vgg11_bn only")
    small = {"fcdd": (CNN28, CNN32), "hsc": (HSC28, HSC32), "ae": (AE28, AE32)}[variant]
    return small[0](channels, input_size) if net == "cnn28" else small[1](channels, input_size)


def build_model(
    cfg: Config,
    in_channels: int | None = None,
    input_size: int | Sequence[int] | None = None,
    variant: str = "fcdd",
) -> FCDDNet | HSCNet | Autoencoder:
    """The net named by ``cfg.model`` in ``variant`` (the objective's: fcdd.objectives.net_variant);
    ``input_size`` (the data's resolved size, e.g. under data.resize keep_aspect) replaces
    model.input_size where given."""
    m = cfg.model
    size = m.input_size if input_size is None else input_size
    return build_net(m.net, size, in_channels, m.pretrained, m.weights_path, m.freeze, variant)
