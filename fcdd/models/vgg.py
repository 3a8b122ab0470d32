"""VGG11-BN FCDD net (docs/method.md §2): the first 21 modules of torchvision's VGG11-BN ``features``, then
conv1x1(512->1). 3x224x224 -> 28x28, r 62, j 8, s 3.5 (3x256x256 -> 32x32).

ImageNet weights come from torchvision's weights API (needs internet or a filled torch hub cache) or
from a local ``.pth`` state dict, and are loaded into the full ``features`` BEFORE truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG11_BN_Weights, vgg11_bn
from torchvision.models.vgg import cfgs, make_layers

from fcdd.errors import ModelError
from fcdd.models.receptive_field import FCDDNet

KEEP_MODULES = 21  # conv-BN-ReLU x6 with 3 max-pools: 64, MP, 128, MP, 256, 256, MP, 512, 512


class WeightsError(ModelError):
    """A pretrained weights file is missing or does not fit VGG11-BN; the message names it."""


def _features_state(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """The ``features`` part of a VGG11-BN state dict (whole-model keys ``features.N.*`` or
    features-only keys ``N.*``)."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path}: expected a state dict of tensors (torchvision VGG11-BN), got {type(state).__name__}"
        )
    prefixed = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    return prefixed if prefixed else dict(state)


def load_vgg_features(features: nn.Sequential, path: str | Path) -> None:
    """Load a local VGG11-BN state dict into the full (untruncated) ``features``; every key and
    shape must match."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (model.weights_path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or non-torch file
        raise WeightsError(f"{path}: cannot be read as a torch state dict: {e}") from e
    state = _features_state(state, path)
    expected = features.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            problems.append(f"shape mismatches {shapes[:8]}")
        raise WeightsError(f"{path}: not a VGG11-BN state dict: {'; '.join(problems)}")
    features.load_state_dict(state)


def vgg11_bn_features() -> nn.Sequential:
    """torchvision's full VGG11-BN ``features`` with its random init, without building the
    ~120M-parameter classifier that ``vgg11_bn()`` would initialise and throw away."""
    features = make_layers(cfgs["A"], batch_norm=True)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features


def _imagenet_features() -> nn.Sequential:
    try:
        return vgg11_bn(weights=VGG11_BN_Weights.IMAGENET1K_V1).features
    except Exception as e:  # no internet and no cached file
        raise WeightsError(
            f"could not fetch torchvision's VGG11_BN_Weights.IMAGENET1K_V1 ({e}); "
            "download it elsewhere and set model.weights_path to the .pth file"
        ) from e


class FCDDVGG11(FCDDNet):
    """``freeze`` > 0 stops gradients for the first ``freeze`` feature modules (paper, MVTec: 15, up
    to and including the 3rd max-pool); their BatchNorm layers stay in eval mode through
    ``train()`` so the pretrained statistics do not drift."""

    def __init__(
        self,
        input_size: int | Sequence[int] = 224,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        freeze: int = 0,
    ):
        if not 0 <= freeze <= KEEP_MODULES:
            raise ValueError(f"model.freeze: must be in [0, {KEEP_MODULES}], got {freeze}")
        if weights_path is not None:
            full = vgg11_bn_features()
            load_vgg_features(full, weights_path)
        elif pretrained:
            full = _imagenet_features()
        else:
            full = vgg11_bn_features()
        features = nn.Sequential(*list(full.children())[:KEEP_MODULES])
        super().__init__(features, nn.Conv2d(512, 1, 1), in_channels=3, input_size=input_size)
        self.freeze = freeze
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        return list(self.features.children())[: self.freeze]

    def train(self, mode: bool = True) -> FCDDVGG11:
        super().train(mode)
        for module in self.frozen_modules():
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
