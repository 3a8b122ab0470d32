"""CNN32 (the paper's LW3K CIFAR-10 net, docs/method.md §2): 3x32x32 -> 8x8, r 22, j 4, s 1.5."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fcdd.models.cnn28 import BN_EPS
from fcdd.models.receptive_field import FCDDNet


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=BN_EPS), nn.LeakyReLU()]


class CNN32(FCDDNet):
    """conv3(C->128) BN LReLU MP; conv3(128->256) BN LReLU; conv3(256->256) BN LReLU MP;
    conv3(256->128); conv1x1(128->1). All 3x3 convs have padding 1."""

    def __init__(self, in_channels: int = 3, input_size: int | Sequence[int] = 32):
        features = nn.Sequential(
            *_conv_bn_relu(in_channels, 128),
            nn.MaxPool2d(2, 2),
            *_conv_bn_relu(128, 256),
            *_conv_bn_relu(256, 256),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(256, 128, 3, padding=1),
        )
        super().__init__(features, nn.Conv2d(128, 1, 1), in_channels, input_size)
