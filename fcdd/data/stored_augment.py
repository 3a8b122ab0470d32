"""docs/method.md §4 augmentation of MVTec/folder images (stored at 240 px, trained at 224) on a whole batch.

The per-sample path (fcdd.data.augment.StoredImageAugment.train_transform) runs torchvision v2
per image: a random choice of (random crop | resize to the input size), a random choice of two
ColorJitters, relative Gaussian noise with probability 1/2, then the normalisation. Here the same
draws run as tensor ops over the batch [B, C, S, S]: geometry first and in uint8 (the same resize
kernels as torchvision's, only 224² of 240² pixels go on), one conversion to float, the jitter of
fcdd.data.colour_jitter with per-sample parameter sets, noise with per-sample scale and coin.

Randomness comes from ``generator`` (default: torch's global generator, seeded per batch by
fcdd.engine), so a batch depends on its seed only: exact resume, any num_workers. On CUDA every
branch runs on every sample and ``torch.where`` keeps the drawn one (no host sync); on the CPU
each branch runs on its own samples only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from fcdd.data.colour_jitter import apply_jitter, brightness, contrast, hue, saturation
from fcdd.data.geometry import size_hw
from fcdd.data.normalisation import normalise
from fcdd.data.transforms import stored_before_crop

if TYPE_CHECKING:
    from fcdd.data.augment import StoredImageAugment

COLOUR_OPS = (brightness, contrast, saturation)  # order codes 0, 1, 2 of apply_jitter; 3 is the hue


def every_branch(x: torch.Tensor) -> bool:
    """Run each random branch on all samples and select (CUDA: no host sync), or on its own samples."""
    return x.is_cuda


class StoredBatchAugment:
    """(uint8 images [B, C, S, T], bool masks [B, 1, S, T] or None) -> (normalised float images
    [B, C, H, W], float masks [B, 1, H, W]); S x T is the stored size, ``size`` = H x W (an int: square)."""

    def __init__(self, size: int | Sequence[int], normalisation: dict[str, Any], recipe: StoredImageAugment):
        self.size, self.normalisation = size_hw(size), normalisation
        self.jitters, self.noise, self.noise_p = recipe.jitters, recipe.noise, recipe.noise_p
        self.before_crop = tuple(stored_before_crop(n) for n in self.size)  # per side

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, c, dev = images.shape[0], images.shape[1], images.device
        gen_device = generator.device if generator is not None else "cpu"

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=gen_device).to(dev)

        # Every draw up front, in one order for both paths: which geometry (v2.RandomChoice: crop or
        # plain resize), crop offsets, which jitter, the jitter's op order and factors, the noise coin.
        crop = rand(n) < 0.5
        spans = [b - s + 1 for b, s in zip(self.before_crop, self.size, strict=True)]
        if spans[0] == spans[1]:  # square: the one draw of before, so square batches are unchanged
            offsets = torch.randint(0, spans[0], (2, n), generator=generator, device=gen_device).to(dev)
        else:
            offsets = torch.stack(
                [torch.randint(0, span, (n,), generator=generator, device=gen_device) for span in spans]
            ).to(dev)
        second = (rand(n) < 0.5).float()  # the second ColorJitter of the recipe's two
        order = torch.argsort(rand(n, 4), dim=1)  # torchvision: a random order of the four ops
        u = rand(n, 4)
        (b0, c0, s0, h0), (b1, c1, s1, h1) = self.jitters
        strength = [a + (b - a) * second for a, b in ((b0, b1), (c0, c1), (s0, s1), (h0, h1))]
        factors = torch.stack([1 - strength[k] + 2 * strength[k] * u[:, k] for k in range(3)], 1)  # [n, 3]
        shift = strength[3] * (2 * u[:, 3] - 1)
        noisy = rand(n) < self.noise_p
        draws = crop, offsets, order, factors, shift, noisy
        stacked = images if masks is None else torch.cat([images, masks.to(images.dtype)], 1)
        if every_branch(images):
            x, m = self._batched(stacked, c, draws, generator, gen_device)
        else:
            x, m = self._per_image(stacked, c, draws, generator)
        return normalise(x, self.normalisation), (m if masks is not None else None)

    # --- CPU: one image at a time ----------------------------------------------------------------
    # At 224 px an op over one image is ~150k elements, so a Python loop costs nothing next to the
    # work, while gathering each op's samples out of the batch (and scattering them back) would copy
    # the batch 16 times. What the loop saves against the per-sample v2 path: uint8 until the float
    # conversion (one, after the crop), the closed-form hue, noise drawn only for the noisy images.

    def _per_image(
        self, x: torch.Tensor, channels: int, draws, generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crop, offsets, order, factors, shift, noisy = (d.tolist() for d in draws)
        n, (sh, sw) = x.shape[0], self.size
        images = torch.empty((n, channels, sh, sw))
        masks = torch.empty((n, x.shape[1] - channels, sh, sw))
        for i in range(n):
            if crop[i]:
                top, left = offsets[0][i], offsets[1][i]
                src = (
                    x[i]
                    if tuple(x.shape[-2:]) == self.before_crop
                    else self._resize(x[i : i + 1], self.before_crop, channels)[0]
                )
                g = src[:, top : top + sh, left : left + sw]  # a view: the crop copies nothing
            else:
                g = self._resize(x[i : i + 1], self.size, channels)[0]
            torch.div(g[:channels], 255, out=images[i])
            masks[i].copy_(g[channels:])
            y = images[i : i + 1]
            for k in order[i]:
                if k == 3:
                    y = hue(y, torch.tensor([shift[i]]))
                else:
                    y = COLOUR_OPS[k](y, factors[i][k])
            if noisy[i]:
                scale = self.noise * float(y.std())
                y = y.add_(torch.randn(y.shape, generator=generator).mul_(scale)).clamp_(0, 1)
            images[i : i + 1] = y
        return images, masks

    # --- CUDA: every branch on every image, the drawn one kept (no host sync) ---------------------

    def _batched(self, x: torch.Tensor, channels: int, draws, generator, gen_device):
        crop, offsets, order, factors, shift, noisy = draws
        n = x.shape[0]
        g = torch.where(
            crop.view(-1, 1, 1, 1), self._crop(x, offsets, channels), self._resize(x, self.size, channels)
        )
        y = g[:, :channels].float().div_(255)
        y = apply_jitter(y, order, [factors[:, k].view(n, 1, 1, 1) for k in range(3)], shift)
        scale = self.noise * y.flatten(1).std(1).view(n, 1, 1, 1)
        noise = torch.randn(y.shape, generator=generator, device=gen_device).to(y.device)
        y = torch.where(noisy.view(n, 1, 1, 1), (y + scale * noise).clamp_(0, 1), y)
        return y, g[:, channels:].float()

    # --- geometry, on uint8 ----------------------------------------------------------------------

    def _resize(self, x: torch.Tensor, hw: tuple[int, int], channels: int) -> torch.Tensor:
        """Images bilinear (antialiased), masks NEAREST_EXACT: transforms.AlignedResize per sample."""
        size = list(hw)
        image = F.resize(x[:, :channels], size, antialias=True)
        if x.shape[1] == channels:
            return image
        mask = F.resize(x[:, channels:], size, interpolation=InterpolationMode.NEAREST_EXACT)
        return torch.cat([image, mask], 1)

    def _crop(self, x: torch.Tensor, offsets: torch.Tensor, channels: int) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.before_crop:
            x = self._resize(x, self.before_crop, channels)
        (sh, sw), n = self.size, x.shape[0]
        rows = offsets[0][:, None] + torch.arange(sh, device=x.device)  # [n, H]
        cols = offsets[1][:, None] + torch.arange(sw, device=x.device)  # [n, W]
        b = torch.arange(n, device=x.device)[:, None, None]
        return x[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [n, C, s, s]
