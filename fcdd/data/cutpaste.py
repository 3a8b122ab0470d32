"""CutPaste anomalies (Li et al., CVPR 2021; docs/synthetic-anomalies.md).

*CutPaste*: a rectangle of 2 to 15 % of the image's area, aspect ratio log-uniform in
[0.3, 1/0.3], is cut at a random place, colour-jittered (brightness, contrast, saturation and hue,
each 0.1) and pasted at another random place of the same image. *CutPaste-Scar*: a thin rectangle,
2 to 16 px wide and 10 to 25 px long on the paper's 256 px images (here scaled with the image's
shorter side), jittered the same way and pasted rotated by U(-45°, 45°). The ground-truth map is
exactly the pasted region; pasted pixels are copies of source pixels (nearest neighbour, like PIL's
rotate), so an unrotated patch is the cut rectangle pixel for pixel.

Batched over [N, C, H, W] with per-sample draws from one ``torch.Generator`` on any device and no
host synchronisation: each output pixel asks whether it lies in its sample's pasted (rotated)
rectangle and, if so, which source pixel it copies.
"""

from __future__ import annotations

import math

import torch

from fcdd.data.colour_jitter import brightness, grey, hue, saturation

AREA = (0.02, 0.15)  # patch area, share of the image
ASPECT = 0.3  # patch aspect ratio log-uniform in [0.3, 1/0.3]
SCAR_WIDTH = (2, 16)  # scar size in px at REFERENCE_SIDE, integers, both ends included
SCAR_LENGTH = (10, 25)
SCAR_ROTATION = 45.0  # degrees
REFERENCE_SIDE = 256  # the paper's image side
JITTER = 0.1  # ColorJitter(0.1, 0.1, 0.1, 0.1) of the pasted patch


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _integers(low: torch.Tensor, high: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Uniform integers in [low, high] (both included, per sample) from uniforms ``u`` in [0, 1)."""
    return torch.minimum(low + torch.floor(u * (high - low + 1)), high)


def patch_sizes(
    n: int, height: int, width: int, scar: torch.Tensor, generator, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample (patch height, patch width, rotation in degrees): CutPaste's rectangle, or a
    scar where ``scar`` [N] (bool) is set. Sizes are whole pixels, at least 1, within the image."""
    u = _rand((n, 5), generator, device)
    area = (AREA[0] + (AREA[1] - AREA[0]) * u[:, 0]) * height * width
    aspect = torch.exp(math.log(ASPECT) + (math.log(1 / ASPECT) - math.log(ASPECT)) * u[:, 1])  # w / h
    patch_h = torch.round(torch.sqrt(area / aspect))
    patch_w = torch.round(torch.sqrt(area * aspect))
    scale = min(height, width) / REFERENCE_SIDE

    def scar_side(bounds: tuple[int, int], uniform: torch.Tensor) -> torch.Tensor:
        low, high = (torch.full((n,), float(b), device=device) for b in bounds)
        return torch.round(_integers(low, high, uniform) * scale).clamp_min(1)

    scar_w, scar_l = scar_side(SCAR_WIDTH, u[:, 2]), scar_side(SCAR_LENGTH, u[:, 3])
    angle = (2 * u[:, 4] - 1) * SCAR_ROTATION
    patch_h = torch.where(scar, scar_l, patch_h).clamp(1, height)
    patch_w = torch.where(scar, scar_w, patch_w).clamp(1, width)
    return patch_h, patch_w, torch.where(scar, angle, torch.zeros_like(angle))


def cutpaste_anomalies(
    images: torch.Tensor, scar: torch.Tensor | bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, C, H, W] -> (uint8 images with a pasted patch each, bool masks [N, 1, H, W]).
    ``scar``: bool [N] (or one bool for all): CutPaste-Scar instead of a CutPaste rectangle."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"cutpaste: expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    dev = images.device
    scar = torch.as_tensor(scar, device=dev).bool().expand(n)
    patch_h, patch_w, angle = patch_sizes(n, h, w, scar, generator, dev)
    theta = torch.deg2rad(angle)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # The rotated patch's bounding box decides where it can go; the cut rectangle is unrotated.
    box_h = torch.ceil(cos.abs() * patch_h + sin.abs() * patch_w - 1e-4).clamp(max=h)
    box_w = torch.ceil(sin.abs() * patch_h + cos.abs() * patch_w - 1e-4).clamp(max=w)
    u = _rand((n, 4), generator, dev)
    src_top = _integers(torch.zeros_like(patch_h), h - patch_h, u[:, 0])
    src_left = _integers(torch.zeros_like(patch_w), w - patch_w, u[:, 1])
    dst_top = _integers(torch.zeros_like(box_h), h - box_h, u[:, 2])
    dst_left = _integers(torch.zeros_like(box_w), w - box_w, u[:, 3])
    jitter = _jitter_draws(n, generator, dev)

    # Pixel centres relative to the destination box's centre, rotated back into the patch's frame.
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
    dy = ys - (dst_top + (box_h - 1) / 2).view(n, 1, 1)
    dx = xs - (dst_left + (box_w - 1) / 2).view(n, 1, 1)
    cos, sin = cos.view(n, 1, 1), sin.view(n, 1, 1)
    py = cos * dy + sin * dx
    px = -sin * dy + cos * dx
    half_h, half_w = (patch_h / 2).view(n, 1, 1), (patch_w / 2).view(n, 1, 1)
    inside = (py.abs() < half_h - 1e-4) & (px.abs() < half_w - 1e-4)
    inside |= (dy.abs() <= 0.5) & (dx.abs() <= 0.5)  # a tilted 1-px scar may miss every pixel centre
    sy = torch.floor(py + half_h).clamp(min=0) + src_top.view(n, 1, 1)
    sx = torch.floor(px + half_w).clamp(min=0) + src_left.view(n, 1, 1)
    sy = torch.minimum(sy, (src_top + patch_h - 1).view(n, 1, 1)).long()
    sx = torch.minimum(sx, (src_left + patch_w - 1).view(n, 1, 1)).long()

    index = (sy * w + sx).view(n, 1, h * w).expand(n, c, h * w)
    pasted = torch.gather(images.reshape(n, c, h * w), 2, index).view(n, c, h, w)
    masks = inside.view(n, 1, h, w)
    return torch.where(masks, _jitter_patches(pasted, masks, jitter), images), masks


def _jitter_patches(pasted: torch.Tensor, masks: torch.Tensor, jitter) -> torch.Tensor:
    """torchvision's ColorJitter of each pasted patch (uint8 [N, C, H, W], bool masks [N, 1, H, W]):
    brightness, saturation and hue per pixel, contrast about the patch's own mean grey (the paper
    jitters the cut patch as an image of its own). Greyscale goes through as three equal channels
    (saturation and hue then change nothing, as torchvision does for one channel)."""
    order, factors, shift = jitter
    x = pasted.float() / 255
    grey_input = x.shape[1] == 1
    x = x.expand(-1, 3, -1, -1).clone() if grey_input else x
    m = masks.float()
    area = m.sum((1, 2, 3), keepdim=True).clamp_min(1)

    def contrast(y: torch.Tensor, f: torch.Tensor, sel) -> torch.Tensor:
        mean = (grey(y) * m[sel]).sum((1, 2, 3), keepdim=True) / area[sel]
        return (f * y + (1 - f) * mean).clamp_(0, 1)

    ops = (
        lambda y, sel: brightness(y, factors[0][sel]),
        lambda y, sel: contrast(y, factors[1][sel], sel),
        lambda y, sel: saturation(y, factors[2][sel]),
        lambda y, sel: hue(y, shift[sel]),
    )
    n = x.shape[0]
    for position in range(4):
        for k, op in enumerate(ops):
            turn = order[:, position] == k
            if x.is_cuda:  # every op on every patch, kept where it is the patch's turn: no host sync
                x = torch.where(turn.view(n, 1, 1, 1), op(x, slice(None)), x)
                continue
            idx = turn.nonzero().flatten()
            if len(idx):
                x[idx] = op(x[idx], idx)
    x = x.mean(1, keepdim=True) if grey_input else x
    return torch.round(x * 255).clamp(0, 255).to(torch.uint8)


def _jitter_draws(n: int, generator, device) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """torchvision's ColorJitter(0.1, 0.1, 0.1, 0.1) per sample: order, factors [N, 1, 1, 1], hue shift."""
    order = torch.argsort(_rand((n, 4), generator, device), dim=1)
    u = _rand((n, 4), generator, device)
    factors = [(1 - JITTER + 2 * JITTER * u[:, k]).view(n, 1, 1, 1) for k in range(3)]
    return order, factors, JITTER * (2 * u[:, 3] - 1)
