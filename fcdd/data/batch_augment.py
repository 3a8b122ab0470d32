"""docs/method.md §4 augmentation of the small-image datasets (Fashion-MNIST, CIFAR-10) on a whole batch.

The per-sample path (fcdd.data.transforms) spends most of a CIFAR-10 epoch in Python dispatch:
torchvision's ColorJitter alone costs ~0.4 ms per 32-px image. Here the same random operations run
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

from fcdd.data.normalisation import normalise

GREY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device if generator is not None else "cpu")
    return (lo + (hi - lo) * u).to(like.device, like.dtype).view(n, 1, 1, 1)


def grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1 - f) * grey(x)).clamp_(0, 1)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (a fraction of the circle), through HSV as torchvision does.

    HSV -> RGB in closed form (channel = V - V·S·clamp(min(k, 4 - k), 0, 1) with k = (n + 6H) mod 6,
    n = 5, 3, 1 for R, G, B; V·S is max - min): the same values as torchvision's six-sector table
    in a third of the tensor passes, which matters at 224 px."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)  # not max(1)/min(1): their argmax indices cost 30x the values
    delta = maxc - minc
    # Which channel holds the maximum, as 0/1 floats (sign(max - c) is 0 exactly there): arithmetic,
    # not torch.where / ==, which on the CPU cost 10-25x an add. Ties go to r, then g, as torchvision's.
    is_r = 1.0 - torch.sign(maxc - r)
    is_g = (1.0 - torch.sign(maxc - g)).mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    # 6H = (g - b) / delta, 2 + (b - r) / delta or 4 + (r - g) / delta; grey pixels (delta 0, r = g = b)
    # get 0, and V - delta·(...) below leaves them as they are.
    h6 = is_r * (g - b) + is_g * (b - r + 2.0 * delta) + is_b * (r - g + 4.0 * delta)
    h6.mul_(delta.clamp_min(1e-12).reciprocal_())
    h6 = h6 + 6.0 * shift.view(-1, 1, 1)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = _mod6(h6 + n)
        channels.append(maxc - delta * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(channels, 1)


def _mod6(k: torch.Tensor) -> torch.Tensor:
    """k mod 6 in [0, 6), as k - 6 floor(k / 6): 2.5x faster than torch.remainder on the CPU."""
    return k.sub_(torch.floor(k * (1 / 6)).mul_(6.0))


class BatchColorJitter:
    """torchvision ColorJitter(b, c, s, h) per sample, over a float batch in [0, 1]."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        self.ranges = [
            (1 - brightness, 1 + brightness),
            (1 - contrast, 1 + contrast),
            (1 - saturation, 1 + saturation),
        ]
        self.hue = hue

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        gen_device = generator.device if generator is not None else "cpu"
        # torchvision: one random order of the four ops per call (here: per sample), then factors.
        order = torch.argsort(torch.rand(n, 4, generator=generator, device=gen_device), dim=1).to(x.device)
        factors = [_uniform(n, lo, hi, x, generator) for lo, hi in self.ranges]
        shift = _uniform(n, -self.hue, self.hue, x, generator).view(n)
        return apply_jitter(x, order, factors, shift)


def apply_jitter(
    x: torch.Tensor, order: torch.Tensor, factors: list[torch.Tensor], shift: torch.Tensor
) -> torch.Tensor:
    """The four colour ops on a float batch in [0, 1]: sample i runs them in the order ``order[i]``
    (0 brightness, 1 contrast, 2 saturation, 3 hue) with its factors [n, 1, 1, 1] and hue shift [n]."""
    n = x.shape[0]
    ops = [
        lambda y, idx: _brightness(y, factors[0][idx]),
        lambda y, idx: _contrast(y, factors[1][idx]),
        lambda y, idx: _saturation(y, factors[2][idx]),
        lambda y, idx: _hue(y, shift[idx]),
    ]
    x = x.clone()
    if x.is_cuda:  # every op on every sample, kept where it is the sample's turn: no host sync
        every = torch.arange(n, device=x.device)
        for position in range(4):
            for k, op in enumerate(ops):
                turn = (order[:, position] == k).view(n, 1, 1, 1)
                x = torch.where(turn, op(x, every), x)
        return x
    for position in range(4):
        for k, op in enumerate(ops):
            idx = (order[:, position] == k).nonzero().flatten()
            if len(idx):
                x[idx] = op(x[idx], idx)
    return x


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

    def __init__(self, transform: BatchAugment, device: torch.device):
        self.transform, self.device = transform, device
        self.generator = torch.Generator(device=device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.generator.manual_seed(int(batch.pop("seed")))  # a CPU tensor: no device sync
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True) if "mask" in batch else None
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
    return DeviceAugment(train_set.batch_transform, device)


def batch_augment(dataset: str, preprocess: dict[str, Any]) -> BatchAugment | None:
    """The batched docs/method.md §4 augmentation of ``dataset``, or None where there is none (ImageNet-30)."""
    norm = preprocess["normalisation"]
    if dataset == "fmnist":
        return BatchAugment(2, norm)
    if dataset == "cifar10":
        return BatchAugment(4, norm, BatchColorJitter(0.01, 0.01, 0.01, 0.01), noise=0.001)
    if dataset in ("mvtec", "folder"):
        from fcdd.data.stored_augment import StoredBatchAugment  # builds on this module's colour ops

        return StoredBatchAugment(preprocess["input_size"], norm)
    return None
