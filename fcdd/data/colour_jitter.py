"""torchvision's ColorJitter per sample over a float batch [B, C, H, W] in [0, 1], as tensor ops.

Used by the batched augmentation of the small images (fcdd.data.batch_augment) and of the stored
MVTec/folder images (fcdd.data.stored_augment): per-sample parameters drawn in one call each, the
same distributions as torchvision's (uniform factors, a random order of the four colour ops).
Randomness comes from ``generator`` (default: torch's global generator, seeded per batch).
"""

from __future__ import annotations

import torch

GREY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device if generator is not None else "cpu")
    return (lo + (hi - lo) * u).to(like.device, like.dtype).view(n, 1, 1, 1)


def grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(1)


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1 - f) * grey(x)).clamp_(0, 1)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
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
        lambda y, idx: brightness(y, factors[0][idx]),
        lambda y, idx: contrast(y, factors[1][idx]),
        lambda y, idx: saturation(y, factors[2][idx]),
        lambda y, idx: hue(y, shift[idx]),
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
