"""HSC baseline nets (docs/baselines.md §2): each FCDD net's twin with a fully connected head.

The hypersphere classifier (HSC) maps an image to one feature vector φ(x) ∈ R^D instead of a
u×v map; its score is a function of ‖φ(x)‖ (fcdd/objectives/hsc.py). The nets follow the original
authors' baselines for each FCDD net:

| FCDD net | HSC net | head |
|---|---|---|
| cnn28 (wide) | conv5(C→128) BN LReLU MP; conv5(128→64) BN LReLU MP | FC → 48 |
| cnn32 (LW3K) | the FCDD trunk with BN LReLU MP after its last conv | FC → 512, BN1d, LReLU, FC → 64 |
| vgg11_bn | torchvision's whole VGG11-BN ``features``, 7×7 average pool | the classifier up to its 2nd FC: 4096 |

Every net records ``receptive_field``: that of its FCDD twin, the size of the Gaussian that
optionally blurs its gradient heatmaps for display (docs/baselines.md §4); the net itself has no
map. ``output_size`` is the input size: the heatmap (an input gradient) has one value per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fcdd.models.cnn28 import BN_EPS, CNN28
from fcdd.models.cnn32 import CNN32
from fcdd.models.receptive_field import ReceptiveField, walk_layers
from fcdd.models.vgg import FCDDVGG11, KEEP_MODULES, WeightsError, load_vgg_features, vgg11_bn_features

VGG_FEATURES = 29  # modules of torchvision's VGG11-BN `features`: 8 conv-BN-ReLU blocks, 5 max-pools
VGG_EMBEDDING = 4096


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _stored_size(size: int | Sequence[int]) -> int | tuple[int, int]:
    return size if isinstance(size, int) else tuple(int(v) for v in size)


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """BatchNorm1d that normalises a training batch of ONE sample with the running statistics:
    one sample has no batch variance (plain BatchNorm1d raises), and a training set whose size
    leaves one image in the last batch must not fail after an epoch of work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class HSCNet(nn.Module):
    """A feature extractor ``trunk`` then a fully connected ``head``: ``forward(x[B, C, H, W]) ->
    φ(x)[B, D]``. ``fcdd_net`` names the FCDD twin whose receptive field sizes the display blur."""

    fcdd_net = ""

    def __init__(self, trunk: nn.Module, head: nn.Module, in_channels: int, input_size: int | Sequence[int]):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.in_channels = in_channels
        self.input_size = _stored_size(input_size)

    @property
    def receptive_field(self) -> ReceptiveField:
        """The FCDD twin's (r, j, s): r sizes the display blur of the heatmaps."""
        return fcdd_receptive_field(self.fcdd_net)

    @property
    def output_size(self) -> int | tuple[int, int]:
        """The heatmap's size: the input's (gradients are per input pixel)."""
        return self.input_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected input [B, {self.in_channels}, H, W], got {list(x.shape)}"
            )
        return self.head(torch.flatten(self.trunk(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def _after_pools(size: int | Sequence[int], pools: int, name: str) -> tuple[int, int]:
    h, w = _pair(size)
    for _ in range(pools):
        h, w = h // 2, w // 2
    if min(h, w) < 1:
        raise ValueError(f"{name}: input size {size} is too small for {pools} 2x2 max-pools")
    return h, w


class HSC28(HSCNet):
    """The wide Fashion-MNIST baseline (28×28 → 48): twin of cnn28."""

    fcdd_net = "cnn28"
    dim = 48

    def __init__(self, in_channels: int = 1, input_size: int | Sequence[int] = 28):
        h, w = _after_pools(input_size, 2, "HSC28")
        trunk = nn.Sequential(
            nn.Conv2d(in_channels, 128, 5, padding=2),
            nn.BatchNorm2d(128, eps=BN_EPS),
            nn.LeakyReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 64, 5, padding=2),
            nn.BatchNorm2d(64, eps=BN_EPS),
            nn.LeakyReLU(),
            nn.MaxPool2d(2, 2),
        )
        super().__init__(trunk, nn.Linear(64 * h * w, self.dim), in_channels, input_size)


def _conv_bn_lrelu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=BN_EPS), nn.LeakyReLU()]


class HSC32(HSCNet):
    """The CIFAR-10 baseline (32×32 → 64): twin of cnn32 (LW3K)."""

    fcdd_net = "cnn32"
    dim = 64

    def __init__(self, in_channels: int = 3, input_size: int | Sequence[int] = 32):
        h, w = _after_pools(input_size, 3, "HSC32")
        trunk = nn.Sequential(
            *_conv_bn_lrelu(in_channels, 128),
            nn.MaxPool2d(2, 2),
            *_conv_bn_lrelu(128, 256),
            *_conv_bn_lrelu(256, 256),
            nn.MaxPool2d(2, 2),
            *_conv_bn_lrelu(256, 128),
            nn.MaxPool2d(2, 2),
        )
        head = nn.Sequential(
            nn.Linear(128 * h * w, 512),
            BatchNorm1dAnyBatch(512, eps=BN_EPS),
            nn.LeakyReLU(),
            nn.Linear(512, self.dim),
        )
        super().__init__(trunk, head, in_channels, input_size)


def _vgg_classifier_head() -> nn.Sequential:
    """torchvision's VGG classifier without its last ReLU, dropout and 1000-way layer: 25088 → 4096.
    Initialised as torchvision does (normal(0, 0.01) weights, zero bias)."""
    head = nn.Sequential(
        nn.Linear(512 * 7 * 7, VGG_EMBEDDING),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(VGG_EMBEDDING, VGG_EMBEDDING),
    )
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return head


class HSCVGG11(HSCNet):
    """VGG11-BN with its classifier up to the 4096-d layer: twin of vgg11_bn. ``pretrained`` /
    ``weights_path`` load ImageNet weights into ``features`` and, where the file has them, into
    the classifier's two layers kept here; ``freeze`` stops gradients for the first N feature
    modules (their BatchNorm layers stay in eval mode), as the FCDD net does."""

    fcdd_net = "vgg11_bn"
    dim = VGG_EMBEDDING

    def __init__(
        self,
        input_size: int | Sequence[int] = 224,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        freeze: int = 0,
    ):
        if not 0 <= freeze <= KEEP_MODULES:
            raise ValueError(f"model.freeze: must be in [0, {KEEP_MODULES}], got {freeze}")
        _after_pools(input_size, 5, "HSCVGG11")
        features, head = vgg11_bn_features(), _vgg_classifier_head()
        if weights_path is not None:
            load_vgg_features(features, weights_path)
            _load_classifier(head, weights_path)
        elif pretrained:
            _load_imagenet(features, head)
        trunk = nn.Sequential(features, nn.AdaptiveAvgPool2d((7, 7)))
        super().__init__(trunk, head, 3, input_size)
        self.freeze = freeze
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        return list(self.trunk[0].children())[: self.freeze]

    def train(self, mode: bool = True) -> HSCVGG11:
        super().train(mode)
        for module in self.frozen_modules():
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _load_classifier(head: nn.Sequential, path: str | Path) -> None:
    """The classifier's layers 0 and 3 from a whole-model VGG11-BN state dict; a features-only
    file leaves them at their random init (the features are what transfers)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    keys = [f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]
    if not all(k in state for k in keys):
        return
    try:
        head.load_state_dict({k[len("classifier.") :]: state[k] for k in keys})
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise WeightsError(f"{path}: classifier weights do not fit VGG11-BN: {first}") from None


def _load_imagenet(features: nn.Sequential, head: nn.Sequential) -> None:
    from torchvision.models import VGG11_BN_Weights, vgg11_bn

    try:
        full = vgg11_bn(weights=VGG11_BN_Weights.IMAGENET1K_V1)
    except Exception as e:  # no internet and no cached file
        raise WeightsError(
            f"could not fetch torchvision's VGG11_BN_Weights.IMAGENET1K_V1 ({e}); "
            "download it elsewhere and set model.weights_path to the .pth file"
        ) from e
    features.load_state_dict(full.features.state_dict())
    head.load_state_dict({k: v for k, v in full.classifier.state_dict().items() if k[0] in "03"})


@cache
def fcdd_receptive_field(net: str) -> ReceptiveField:
    """The receptive field of the FCDD net ``net`` (docs/method.md §2), from its layers, built on
    the meta device (no memory, no init cost)."""
    size = {"cnn28": 28, "cnn32": 32}.get(net, 224)
    with torch.device("meta"):
        model = {"cnn28": CNN28, "cnn32": CNN32, "vgg11_bn": FCDDVGG11}[net](input_size=size)
    return walk_layers(model, size)[0]
