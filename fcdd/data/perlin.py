"""Perlin-noise anomalies (DRAEM: Zavrtanik et al., ICCV 2021; docs/synthetic-anomalies.md).

A smooth 2-D Perlin noise field (2^k cells per image side, k uniform in 0..5 for each axis
independently, the field rotated by U(-90°, 90°)) is thresholded at 0.5 into the anomaly mask.
Inside it the image is replaced by a texture image, itself changed by three of ten random colour
and geometry operations, and blended with the original: ``x·(1 − m) + (1 − β)·t·m + β·x·m``,
β ~ U(0, 0.8). The ground-truth map is exactly ``m``.

Where DRAEM draws textures from the Describable Textures Dataset, here any uint8 images serve
(the training set's own nominal images by default: always at hand, even offline). Two deviations,
both to keep every draw a real anomaly: the field is sampled at rotated coordinates (no empty
corners where a rotated noise image would leave zeros), and a mask smaller than ``MIN_AREA`` of
the image gets its threshold lowered to reach that area (DRAEM instead keeps such a draw as a
nominal sample).

Everything here works on whole batches [N, C, H, W] with per-sample draws from one
``torch.Generator`` on any device, without host synchronisation on CUDA: the batched training path
injects on the training device, and the per-sample form is the same code on a batch of one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fcdd.data.colour_jitter import grey, hue
from fcdd.data.colour_jitter import saturation as saturation_op

SCALE_EXPONENTS = 6  # cells per side: 2^k, k in 0..5 (DRAEM's perlin_scale = 6, min_perlin_scale = 0)
MAX_CELLS = 2 ** (SCALE_EXPONENTS - 1)
MAX_ROTATION = 90.0  # degrees, the noise field's rotation ~ U(-90, 90)
THRESHOLD = 0.5
BETA_MAX = 0.8  # the share of the original kept inside the mask ~ U(0, 0.8)
MIN_AREA = 0.005  # a mask covers at least this share of the image (lower threshold otherwise)
TEXTURE_OPS = 10
TEXTURE_OPS_PER_IMAGE = 3  # DRAEM: three distinct operations in random order


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _uniform(n: int, lo: float, hi: float, generator, device, *rest: int) -> torch.Tensor:
    return lo + (hi - lo) * _rand((n, *rest), generator, device)


def fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic fade curve 6t⁵ − 15t⁴ + 10t³ (zero first and second derivatives at 0, 1)."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    height: int,
    width: int,
    cells: torch.Tensor,
    angles: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gradient noise [N, H, W] in about [-1, 1]: ``cells`` [N, 2] (cells along height and width),
    ``angles`` [N] (degrees, the field's rotation about the image centre); the random gradients come
    from ``generator``. Equal to DRAEM's ``rand_perlin_2d`` (up to its gradients) at angle 0."""
    device = cells.device
    n = cells.shape[0]
    half_diag = math.hypot(height / 2, width / 2) + 1.0
    # Lattice coordinates of a pixel centre: its rotated offset from the image centre, scaled so
    # that the unrotated image spans `cells` cells. Rotated pixels reach half_diag from the centre.
    span = [math.ceil(2 * half_diag * MAX_CELLS / side) + 3 for side in (height, width)]
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2
    theta = torch.deg2rad(angles.float()).view(n, 1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    ry = cos * ys.view(1, -1, 1) - sin * xs.view(1, 1, -1)  # [N, H, W]
    rx = sin * ys.view(1, -1, 1) + cos * xs.view(1, 1, -1)
    u = ry * (cells[:, 0].float().view(n, 1, 1) / height) + span[0] / 2
    v = rx * (cells[:, 1].float().view(n, 1, 1) / width) + span[1] / 2
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    i0, j0 = u0.long().clamp_(0, span[0] - 2), v0.long().clamp_(0, span[1] - 2)
    phi = 2 * math.pi * _rand((n, span[0] * span[1]), generator, device)
    grad_y, grad_x = torch.cos(phi), torch.sin(phi)

    def corner(di: int, dj: int) -> torch.Tensor:
        index = ((i0 + di) * span[1] + (j0 + dj)).view(n, -1)
        gy = torch.gather(grad_y, 1, index).view_as(fu)
        gx = torch.gather(grad_x, 1, index).view_as(fu)
        return gy * (fu - di) + gx * (fv - dj)

    tu, tv = fade(fu), fade(fv)
    top = torch.lerp(corner(0, 0), corner(0, 1), tv)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tv)
    return math.sqrt(2) * torch.lerp(top, bottom, tu)


def perlin_masks(
    n: int, height: int, width: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """DRAEM's anomaly masks, bool [N, 1, H, W]: Perlin noise > 0.5, each at least MIN_AREA."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    exponents = torch.floor(_rand((n, 2), generator, device) * SCALE_EXPONENTS)
    cells = torch.pow(2.0, exponents)
    angles = _uniform(n, -MAX_ROTATION, MAX_ROTATION, generator, device)
    noise = perlin_noise(height, width, cells, angles, generator).view(n, -1)
    k = max(1, math.ceil(MIN_AREA * height * width))
    kth_largest = torch.topk(noise, k, dim=1).values[:, -1:]
    threshold = torch.clamp(kth_largest, max=THRESHOLD)
    above = noise > threshold
    masks = torch.where(kth_largest > THRESHOLD, above, noise >= threshold)
    return masks.view(n, 1, height, width)


# --- the texture's random operations (imgaug's, as DRAEM lists them) ------------------------------
# Each is (draw, apply): ``draw(n, channels, generator, device)`` returns the per-sample parameters
# (tensors with the sample on dim 0), ``apply(x, *params)`` changes a float batch in [0, 1].


def _draw_gamma(n, c, g, dev):  # GammaContrast((0.5, 2.0), per_channel=True)
    return (_uniform(n, 0.5, 2.0, g, dev, c, 1, 1),)


def _gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    return x.clamp(1e-6, 1.0).pow(gamma)


def _draw_brightness(n, c, g, dev):  # MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))
    return _uniform(n, 0.8, 1.2, g, dev, 1, 1, 1), _uniform(n, -30 / 255, 30 / 255, g, dev, 1, 1, 1)


def _brightness(x: torch.Tensor, mul: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    luma = grey(x) if x.shape[1] == 3 else x
    return (x + luma * (mul - 1) + add).clamp(0, 1)  # the luma channel's change, added to R, G and B


def _draw_sharpness(n, c, g, dev):  # pillike.EnhanceSharpness(factor=(0.0, 2.0))
    return (_uniform(n, 0.0, 2.0, g, dev, 1, 1, 1),)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, border pixels kept) blended with
    the image: a separable 3x3 box sum plus 4x the centre (a depthwise conv is 20x slower on a CPU)."""
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = (box + 4 * x[..., 1:-1, 1:-1]) / 13
    return (smooth + factor * (x - smooth)).clamp(0, 1)


def _draw_hue_saturation(n, c, g, dev):  # AddToHueAndSaturation((-50, 50), per_channel=True)
    # imgaug's ±50 of ±255 turns the hue by up to ±35° and moves the saturation by up to ±20 %
    return _uniform(n, -50 / 510, 50 / 510, g, dev), _uniform(n, 1 - 50 / 255, 1 + 50 / 255, g, dev, 1, 1, 1)


def _hue_saturation(x: torch.Tensor, shift: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x  # greyscale: no hue, no saturation
    return saturation_op(hue(x, shift), saturation)


def _draw_solarize(n, c, g, dev):  # Solarize(p=0.5, threshold=(32, 128))
    return _rand((n, 1, 1, 1), g, dev) < 0.5, _uniform(n, 32 / 255, 128 / 255, g, dev, 1, 1, 1)


def _solarize(x: torch.Tensor, on: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(on & (x >= threshold), 1 - x, x)


def _draw_posterize(n, c, g, dev):  # Posterize(nb_bits=(1, 8)): keep 1 to 8 bits
    return (torch.floor(_uniform(n, 1, 9, g, dev, 1, 1, 1)).clamp(max=8),)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = torch.pow(2.0, 8 - bits)
    return torch.floor(torch.round(x * 255) / step) * step / 255


def _draw_nothing(n, c, g, dev):
    return ()


def _invert(x: torch.Tensor) -> torch.Tensor:  # Invert()
    return 1 - x


def _draw_autocontrast(n, c, g, dev):  # pillike.Autocontrast(cutoff=(0, 20)): percent per end
    return (_uniform(n, 0.0, 0.2, g, dev, 1, 1),)


def _autocontrast(x: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """PIL's autocontrast per channel: cut ``cutoff`` of the pixels from each end of the 8-bit
    histogram, stretch the grey levels left between the lowest and the highest to 0..255."""
    n, c = x.shape[:2]
    levels, hist = _histogram(x)
    cut = torch.floor(cutoff.view(n, 1).expand(n, c).reshape(n * c, 1) * levels.shape[1])
    grey_levels = torch.arange(256, device=x.device)
    lo = torch.where(torch.cumsum(hist, 1) > cut, grey_levels, 256).amin(1, keepdim=True)
    hi = torch.where(torch.cumsum(hist.flip(1), 1).flip(1) > cut, grey_levels, -1).amax(1, keepdim=True)
    scale = 255 / (hi - lo).clamp_min(1)
    lut = torch.floor(grey_levels * scale - lo * scale).clamp(0, 255)
    lut = torch.where(hi > lo, lut, grey_levels.float())
    return (torch.gather(lut, 1, levels) / 255).view_as(x)


def _histogram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(8-bit levels [N·C, H·W], their histograms [N·C, 256]) of a float batch in [0, 1]."""
    n, c = x.shape[:2]
    levels = torch.round(x * 255).long().clamp_(0, 255).view(n * c, -1)
    ones = torch.ones_like(levels, dtype=torch.float32)
    return levels, torch.zeros(n * c, 256, device=x.device).scatter_add_(1, levels, ones)


def _equalize(x: torch.Tensor) -> torch.Tensor:  # pillike.Equalize(): PIL's lookup table per channel
    levels, hist = _histogram(x)
    grey_levels = torch.arange(256, device=x.device)
    last_level = torch.where(hist > 0, grey_levels, 0).amax(1, keepdim=True)
    step = torch.floor((hist.sum(1, keepdim=True) - torch.gather(hist, 1, last_level)) / 255)
    before = torch.cumsum(hist, 1) - hist  # pixels below each level
    lut = torch.floor((torch.floor(step / 2) + before) / step.clamp_min(1)).clamp(0, 255)
    lut = torch.where(step > 0, lut, grey_levels.float())  # a single grey level: unchanged
    return (torch.gather(lut, 1, levels) / 255).view_as(x)


def _draw_rotation(n, c, g, dev):  # Affine(rotate=(-45, 45)), zeros outside
    return (torch.deg2rad(_uniform(n, -45.0, 45.0, g, dev)),)


def _rotate(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    cos, sin = torch.cos(theta), torch.sin(theta)
    affine = torch.zeros(n, 2, 3, device=x.device)  # a rotation in pixels, in grid_sample's units
    affine[:, 0, 0], affine[:, 0, 1] = cos, -sin * h / w
    affine[:, 1, 0], affine[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


TEXTURE_OPERATIONS = (
    (_draw_gamma, _gamma),
    (_draw_brightness, _brightness),
    (_draw_sharpness, _sharpness),
    (_draw_hue_saturation, _hue_saturation),
    (_draw_solarize, _solarize),
    (_draw_posterize, _posterize),
    (_draw_nothing, _invert),
    (_draw_autocontrast, _autocontrast),
    (_draw_nothing, _equalize),
    (_draw_rotation, _rotate),
)
assert len(TEXTURE_OPERATIONS) == TEXTURE_OPS


def augment_textures(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Three distinct operations of TEXTURE_OPERATIONS per sample, in random order (DRAEM's
    randAugmenter), on a float batch in [0, 1]. Every operation's parameters are drawn for every
    sample, so the random stream does not depend on the choices; on the CPU an operation runs only
    on the samples that chose it, on CUDA on all of them, the chosen result kept (no host sync)."""
    n, c, dev = x.shape[0], x.shape[1], x.device
    order = torch.argsort(_rand((n, TEXTURE_OPS), generator, dev), dim=1)[:, :TEXTURE_OPS_PER_IMAGE]
    params = [draw(n, c, generator, dev) for draw, _ in TEXTURE_OPERATIONS]
    x = x.clone()  # the CPU path writes into it
    for position in range(TEXTURE_OPS_PER_IMAGE):
        for k, (_, apply) in enumerate(TEXTURE_OPERATIONS):
            turn = order[:, position] == k
            if x.is_cuda:
                x = torch.where(turn.view(n, 1, 1, 1), apply(x, *params[k]), x)
                continue
            idx = turn.nonzero().flatten()
            if len(idx):
                x[idx] = apply(x[idx], *(p[idx] for p in params[k]))
    return x


def perlin_anomalies(
    images: torch.Tensor, textures: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images [N, C, H, W], uint8 textures [N, C, h, w]) -> (uint8 images with a Perlin
    anomaly each, bool masks [N, 1, H, W]); textures of another size are resized to the images'."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"perlin: expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    if textures.shape[:2] != (n, c):
        raise ValueError(
            f"perlin: textures {tuple(textures.shape)} do not match images {tuple(images.shape)}"
        )
    x = images.float() / 255
    t = textures.to(x.device).float() / 255
    if tuple(t.shape[-2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    masks = perlin_masks(n, h, w, generator, x.device)
    t = augment_textures(t, generator)
    beta = _uniform(n, 0.0, BETA_MAX, generator, x.device, 1, 1, 1)
    m = masks.float()
    out = x * (1 - m) + (1 - beta) * t * m + beta * x * m
    return torch.round(out * 255).clamp(0, 255).to(torch.uint8), masks
