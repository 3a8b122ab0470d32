"""FCDD's scores (docs/method.md §1): the one definition the loss, the Detector and exports use.

- ``A = sqrt(φ² + 1) − 1`` (pseudo-Huber) of the net's raw output φ(X), the low-resolution map;
- the image score: the mean of A over the u×v map;
- the heatmap: A upsampled to the input size by the receptive-field upsampler (docs/method.md §3),
  then resized (nearest) to each image's own size.

``exportable=True`` selects the form an ONNX graph can hold (there is no ONNX op for
``aten::hypot``); it computes the same values up to float rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from fcdd.anomaly_map import resize_nearest


def _hypot1_exportable(a: torch.Tensor) -> torch.Tensor:
    """hypot(a, 1) for a >= 0 without aten::hypot: scaled by max(a, 1) so a² never overflows, as
    torch.hypot does."""
    m = a.clamp_min(1.0)
    return m * torch.sqrt((a / m) ** 2 + (1.0 / m) ** 2)


def pseudo_huber(out: torch.Tensor, exportable: bool = False) -> torch.Tensor:
    """A = sqrt(φ² + 1) − 1, as |φ|·|φ| / (hypot(φ, 1) + 1): no cancellation for tiny φ, no
    overflow of φ² for huge φ."""
    a = out.abs()
    hypot = _hypot1_exportable(a) if exportable else torch.hypot(a, torch.ones_like(a))
    return a * (a / (hypot + 1))


def image_score(amap: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean over every dimension but the batch's: [B, 1, u, v] -> [B]."""
    return amap.mean(dim=tuple(range(1, amap.dim())))


class AnomalyScores(NamedTuple):
    """What scoring a batch gives: the shape every objective's ``score`` returns (fcdd/objectives)."""

    amap: torch.Tensor | None  # A [B, 1, u, v]; None for an objective without a low-resolution map
    image: torch.Tensor  # image scores [B]
    pixel: torch.Tensor | None  # heatmap [B, 1, H, W] at the input size; None without an upsampler


def anomaly_scores(out: torch.Tensor, upsampler: nn.Module | None = None) -> AnomalyScores:
    """Test-time scores from the raw output φ(X) (docs/method.md §1; no log term)."""
    amap = pseudo_huber(out.float())
    pixel = upsampler(amap) if upsampler is not None else None
    return AnomalyScores(amap=amap, image=image_score(amap), pixel=pixel)


def full_heatmap(upsampled: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """docs/method.md §1: pixel scores are the upsampled map resized (nearest) to the image's own
    (h, w); float32."""
    if tuple(upsampled.shape) == tuple(size):  # nearest to the same size is the identity
        return upsampled.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(upsampled, dtype=np.float32))[None, None]
    return resize_nearest(t, size)[0, 0].numpy()
