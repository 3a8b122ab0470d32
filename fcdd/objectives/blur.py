"""Display blur of pixel heatmaps that have no receptive-field upsampling (docs/baselines.md §4).

HSC gradients and AE errors are per-pixel and noisy; the original baselines optionally smooth them
for display with a normalised Gaussian as large as the receptive field r of the matching FCDD net
(r − 1 where r is even, so the kernel has a centre), with the dataset's σ. Metrics (pixel AUC) use
the raw maps, never the blurred ones.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fcdd.anomaly_map import default_sigma


def blur_kernel(r: int, sigma: float | None = None) -> torch.Tensor:
    """1-D Gaussian of odd length (r, or r − 1 for even r), summing to 1; σ None: docs/method.md §3's
    default for r."""
    if r < 1:
        raise ValueError(f"blur_kernel: r must be at least 1, got {r}")
    size = r - 1 if r % 2 == 0 else r
    sigma = default_sigma(r) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"blur_kernel: sigma must be positive, got {sigma}")
    n = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-0.5 * (n / sigma) ** 2)
    return (line / line.sum()).float()


class DisplayBlur(nn.Module):
    """``forward(maps[B, C, H, W]) -> maps`` of the same shape, blurred separably with
    :func:`blur_kernel`; borders are reflected (replicated where a map is smaller than the kernel)."""

    kernel: torch.Tensor

    def __init__(self, r: int, sigma: float | None = None):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(r, sigma), persistent=False)
        self.r = r

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.dim() != 4:
            raise ValueError(f"DisplayBlur: expected [B, C, H, W], got {list(maps.shape)}")
        b, c, h, w = maps.shape
        k = self.kernel.to(maps.dtype)
        pad = (k.numel() - 1) // 2
        if pad == 0:
            return maps
        x = maps.reshape(b * c, 1, h, w)
        mode = "reflect" if pad < min(h, w) else "replicate"
        x = F.pad(x, (pad, pad, pad, pad), mode=mode)
        x = F.conv2d(x, k.view(1, 1, 1, -1))
        x = F.conv2d(x, k.view(1, 1, -1, 1))
        return x.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"r={self.r}, size={self.kernel.numel()}"


def display_blur(detector: Any) -> DisplayBlur | None:
    """The display blur of a baseline detector's heatmaps (its FCDD twin's receptive field, the
    model's σ); None for FCDD, whose heatmaps are Gaussian upsamplings already."""
    if detector.meta.get("objective", "fcdd") == "fcdd":
        return None
    return DisplayBlur(detector.model.receptive_field.r, detector.upsampler.sigma).to(detector.device)


def display_heatmaps(detector: Any, heatmaps: Any, blur: bool, batch: int = 256) -> Any:
    """Heatmaps (n, H, W) numpy as figures show them: blurred for a baseline when ``blur``
    (``evaluation.blur_heatmaps``), else as they are. Never for metrics."""
    smooth = display_blur(detector) if blur else None
    if smooth is None or len(heatmaps) == 0:
        return heatmaps
    import numpy as np

    smooth = smooth.cpu()
    out = np.empty_like(heatmaps, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(heatmaps), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(heatmaps[start : start + batch], np.float32))
            out[start : start + batch] = smooth(chunk[:, None])[:, 0].numpy()
    return out


def overlay_blur(det: Any) -> Any:
    """For heatmap overlays (``fcdd predict``): a function blurring one map (H, W) numpy when
    ``det`` (a Detector or an exported one) is a baseline trained with
    ``evaluation.blur_heatmaps``, else None. Scores and calibrated masks use the raw maps."""
    meta = det.meta
    if meta.get("objective", "fcdd") == "fcdd" or not meta.get("config", {}).get("evaluation.blur_heatmaps"):
        return None
    export = getattr(det, "export", None)
    if export is not None:
        blur = DisplayBlur(int(export["receptive_field"]["r"]), float(export["sigma"]))
    else:
        blur = DisplayBlur(det.model.receptive_field.r, det.upsampler.sigma)

    def apply(heat: Any) -> Any:
        with torch.no_grad():
            return blur(torch.from_numpy(heat.astype("float32", copy=False))[None, None])[0, 0].numpy()

    return apply
