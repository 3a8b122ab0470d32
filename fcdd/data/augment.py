"""Training augmentations of docs/method.md §4 as recipes: a dataset names its recipe and numbers
(fcdd/data/datasets/), and the recipe builds both forms from them, so the two cannot drift apart:

- ``train_transform(preprocess, stored_size)``: per sample, (uint8 image, mask) -> (normalised
  float image, float mask) with torchvision v2 (fcdd.data.transforms.TrainTransform);
- ``batch_transform(preprocess)``: the same draws as tensor ops over a whole batch
  (fcdd.data.batch_augment, fcdd.data.stored_augment), or None where there is no batched form.

torch and torchvision load inside the builders: the configuration reads the dataset modules (which
hold these recipes) whenever a params file loads, and that must not cost a torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fcdd.data.geometry import size_hw

if TYPE_CHECKING:
    from fcdd.data.transforms import TrainTransform

Jitter = tuple[float, float, float, float]  # ColorJitter(brightness, contrast, saturation, hue)


class Augment(Protocol):
    def train_transform(
        self, preprocess: dict[str, Any], stored_size: int | list[int] | None = None
    ) -> TrainTransform: ...

    def batch_transform(self, preprocess: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class SmallImageAugment:
    """28/32-px images: [colour jitter,] a random crop of the image padded with zeros, a horizontal
    flip with probability 1/2 [, then x + noise * N(0, 1)]."""

    padding: int
    jitter: Jitter | None = None
    noise: float | None = None

    def train_transform(
        self, preprocess: dict[str, Any], stored_size: int | list[int] | None = None
    ) -> TrainTransform:
        from torchvision.transforms import v2

        from fcdd.data.transforms import AddNoise, TrainTransform

        size = list(size_hw(preprocess["input_size"]))
        colour = [v2.ColorJitter(*self.jitter)] if self.jitter else []
        joint = v2.Compose([*colour, v2.RandomCrop(size, padding=self.padding), v2.RandomHorizontalFlip()])
        noise = AddNoise(self.noise) if self.noise else None
        return TrainTransform(joint, noise, preprocess["normalisation"])

    def batch_transform(self, preprocess: dict[str, Any]) -> Any:
        from fcdd.data.batch_augment import BatchAugment
        from fcdd.data.colour_jitter import BatchColorJitter

        colour = BatchColorJitter(*self.jitter) if self.jitter else None
        return BatchAugment(self.padding, preprocess["normalisation"], colour, noise=self.noise)


@dataclass(frozen=True)
class ResizeCropAugment:
    """Images read from files: the short side resized to ``preprocess["resize"]``, colour jitter,
    a horizontal flip, a random crop of the input size, then x + noise * N(0, 1). Per sample only."""

    jitter: Jitter
    noise: float

    def train_transform(
        self, preprocess: dict[str, Any], stored_size: int | list[int] | None = None
    ) -> TrainTransform:
        from torchvision.transforms import v2

        from fcdd.data.transforms import AddNoise, AlignedResize, TrainTransform

        size = list(size_hw(preprocess["input_size"]))
        joint = v2.Compose(
            [
                AlignedResize(int(preprocess["resize"])),
                v2.ColorJitter(*self.jitter),
                v2.RandomHorizontalFlip(),
                v2.RandomCrop(size),
            ]
        )
        return TrainTransform(joint, AddNoise(self.noise), preprocess["normalisation"])

    def batch_transform(self, preprocess: dict[str, Any]) -> None:
        return None  # per sample: file-backed images of any size do not stack before the crop


@dataclass(frozen=True)
class StoredImageAugment:
    """Images cached at ``data.stored_size`` (paper: 240 for 224 px inputs): per image, a random
    choice of (a random crop of the input size from the stored image | a resize to the input
    size), a random choice of the ColorJitters in ``jitters``, then with probability ``noise_p``
    x + noise * std(x) * N(0, 1), clamped to [0, 1]."""

    jitters: tuple[Jitter, Jitter]
    noise: float
    noise_p: float

    def train_transform(
        self, preprocess: dict[str, Any], stored_size: int | list[int] | None = None
    ) -> TrainTransform:
        from torchvision.transforms import v2

        from fcdd.data.transforms import AddNoise, AlignedResize, TrainTransform, stored_before_crop

        hw = size_hw(preprocess["input_size"])
        size = list(hw)
        # Paper: stored 240, crop 224. Keep that ratio when input_size is changed (per side).
        stored = size_hw(stored_size or hw)
        before_crop = tuple(stored_before_crop(n) for n in hw)
        crop = (
            [v2.RandomCrop(size)]
            if before_crop == stored
            else [AlignedResize(list(before_crop)), v2.RandomCrop(size)]
        )
        joint = v2.Compose(
            [
                v2.RandomChoice([v2.Compose(crop), AlignedResize(size)]),
                v2.RandomChoice([v2.ColorJitter(*j) for j in self.jitters]),
            ]
        )
        noise = AddNoise(self.noise, relative=True, p=self.noise_p, clamp=True)
        return TrainTransform(joint, noise, preprocess["normalisation"])

    def batch_transform(self, preprocess: dict[str, Any]) -> Any:
        from fcdd.data.stored_augment import StoredBatchAugment

        return StoredBatchAugment(preprocess["input_size"], preprocess["normalisation"], self)
