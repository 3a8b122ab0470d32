"""CNN28 (the paper's wide Fashion-MNIST net, docs/method.md §2): 1x28x28 -> 7x7, r 16, j 4, s 1.5."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fcdd.models.receptive_field import FCDDNet

BN_EPS = 1e-4  # docs/method.md §2: the small nets use BN eps 1e-4


class CNN28(FCDDNet):
    """conv5x5(C->128, p2) BN LeakyReLU maxpool2; conv5x5(128->128, p2) maxpool2; conv1x1(128->1).

    The second block has no BN/activation, as in the docs/method.md §2 table (and the authors' FCDD_CNN28_W).
    """

    def __init__(self, in_channels: int = 1, input_size: int | Sequence[int] = 28, width: int = 128):
        features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2),
            nn.BatchNorm2d(width, eps=BN_EPS),
            nn.LeakyReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(width, width, 5, padding=2),
            nn.MaxPool2d(2, 2),
        )
        super().__init__(features, nn.Conv2d(width, 1, 1), in_channels, input_size)
