"""docs/method.md §4 augmentation of the small images (Fashion-MNIST, CIFAR-10) on a whole batch.

The per-sample path (fcdd.data.augment.SmallImageAugment) spends most of a CIFAR-10 epoch in Python
dispatch: torchvision's ColorJitter alone costs ~0.4 ms per 32-px image. Here the same random operations run
as tensor ops over the batch [B, C, H, W]: per-sample parameters drawn in one call each, the same
distributions as torchvision's (uniform factors, a random order of the four colour ops, crop offsets
uniform over the padded image, flip with probability 1/2). The ops are device-agnostic: the engine
can run them on the GPU as well as in a DataLoader worker.

Randomness comes from ``generator`` (default: torch's global generator, which fcdd.engine seeds per
batch), so a batch's augmentation depends only on its seed: exact resume and num_workers-independence
hold as on the per-sample path.
"""

from __future__ import annotations

from typing import Any

import torch

from fcdd.data.colour_jitter import BatchColorJitter
from fcdd.data.normalisation import normalise


def pad_crop_flip(
    x: torch.Tensor, masks: torch.Tensor | None, padding: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per sample: zero-pad by ``padding``, crop back to H x W at a uniform offset, flip with p 1/2
    (torchvision RandomCrop(size, padding) + RandomHorizontalFlip()); the masks move along."""
    n, _, h, w = x.shape
    gen_device = generator.device if generator is not None else "cpu"
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device).to(x.device)
    flip = (torch.rand(n, generator=generator, device=gen_device) < 0.5).to(x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = left[:, None] + torch.arange(w, device=x.device)  # [n, w]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    b = torch.arange(n, device=x.device)[:, None, None]

    def crop(t: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(t, (padding,) * 4)
        return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [n, C, h, w]

    return crop(x), (crop(masks) if masks is not None else None)


class BatchAugment:
    """(uint8 images [B, C, H, W], bool masks [B, 1, H, W] or None) -> (normalised float images,
    float masks): colour jitter, crop + flip, noise, normalisation, in the per-sample path's order."""

    def __init__(
        self,
        padding: int,
        normalisation: dict[str, Any],
        colour: BatchColorJitter | None = None,
        noise: float | None = None,
    ):
        self.padding, self.normalisation, self.colour, self.noise = padding, normalisation, colour, noise

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = images.float().div_(255)
        if self.colour is not None and x.shape[1] == 3:
            x = self.colour(x, generator)
        x, masks = pad_crop_flip(x, masks.float() if masks is not None else None, self.padding, generator)
        if self.noise:
            gen_device = generator.device if generator is not None else "cpu"
            x = x + self.noise * torch.randn(x.shape, generator=generator, device=gen_device).to(x.device)
        return normalise(x, self.normalisation), masks


class DeviceAugment:
    """A training set's batch transform run on the training device: the loader's uint8 batch (with
    its "seed", see TrainingSet.collate) is moved there and augmented with a generator on that
    device, re-seeded from the batch's seed, so a batch depends on its seed only (any num_workers,
    exact resume) and nothing waits for the host."""

    def __init__(self, transform: BatchAugment, device: torch.device, injector: Any = None):
        self.transform, self.device, self.injector = transform, device, injector
        self.generator = torch.Generator(device=device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.generator.manual_seed(int(batch.pop("seed")))  # a CPU tensor: no device sync
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True) if "mask" in batch else None
        if self.injector is not None and "synthetic" in batch:  # synthetic anomalies, made here
            codes = batch.pop("synthetic").to(self.device, non_blocking=True)
            textures = batch.pop("texture").to(self.device, non_blocking=True)
            images, masks = self.injector(images, masks, codes, textures, self.generator)
        batch["image"], m = self.transform(images, masks, self.generator)
        if m is not None:
            batch["mask"] = m
        return batch


def augments_on_device(train_set: Any, augment_on: str, device: torch.device) -> bool:
    """Whether ``data.augment_on`` puts ``train_set``'s batch transform on the training device."""
    if getattr(train_set, "batch_transform", None) is None:
        return False
    return augment_on == "device" or (augment_on == "auto" and device.type == "cuda")


def device_augment(train_set: Any, augment_on: str, device: torch.device) -> DeviceAugment | None:
    if not augments_on_device(train_set, augment_on, device):
        return None
    return DeviceAugment(train_set.batch_transform, device, getattr(train_set, "injector", None))
