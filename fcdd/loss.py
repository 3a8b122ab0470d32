"""FCDD objective and scores (docs/method.md §1), written to stay finite for tiny and huge outputs."""

from __future__ import annotations

from typing import NamedTuple

import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler

LOG_EPS = 1e-31  # docs/method.md §1: added inside the log of the anomalous term


def pseudo_huber(out: torch.Tensor) -> torch.Tensor:
    """A = sqrt(φ² + 1) − 1, as |φ|·|φ| / (hypot(φ, 1) + 1): no cancellation for tiny φ, no
    overflow of φ² for huge φ."""
    a = out.abs()
    return a * (a / (torch.hypot(a, torch.ones_like(a)) + 1))


def _anomalous_term(mean_a: torch.Tensor) -> torch.Tensor:
    """−log(1 − exp(−m) + 1e-31), with 1 − exp(−m) as −expm1(−m) so tiny m keeps its precision."""
    return -torch.log(-torch.expm1(-mean_a) + LOG_EPS)


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def fcdd_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-level loss: per sample, nominal (0) mean A, anomalous (1) −log(1 − exp(−mean A));
    the mean over the batch. A batch with a single label (all nominal or all anomalous) minimises
    the plain mean of A, as the reference does (docs/method.md §1). ``out`` is the raw net output [B, 1, u, v]."""
    if labels.shape != out.shape[:1]:
        raise ValueError(f"fcdd_loss: expected {out.shape[0]} labels, got shape {list(labels.shape)}")
    mean_a = _per_sample_mean(pseudo_huber(out.float()))
    anomalous = labels.bool()
    # Evaluate the log term only where it is used: torch.where would otherwise pass a huge
    # gradient of an unused branch (times 0) and turn it into NaN if it ever overflowed.
    log_term = _anomalous_term(torch.where(anomalous, mean_a, torch.ones_like(mean_a)))
    mixed = torch.where(anomalous, log_term, mean_a).mean()
    # The single-label test stays on the device (a Python `if` on it would wait for the GPU each step).
    single_label = (anomalous == anomalous[0]).all()
    return torch.where(single_label, mean_a.mean(), mixed)


def pixel_loss(a_up: torch.Tensor, gt_maps: torch.Tensor) -> torch.Tensor:
    """Pixel-wise loss (docs/method.md §1, semi-supervised): per sample mean_HW(A′·(1−M)) plus
    −log(1 − exp(−mean_HW(A′·M))) when M has a 1; both means divide by H·W. ``a_up`` is the
    upsampled A [B, 1, H, W], ``gt_maps`` M in {0, 1} of the same shape."""
    if a_up.shape != gt_maps.shape:
        raise ValueError(f"pixel_loss: A′ {list(a_up.shape)} and masks {list(gt_maps.shape)} differ in shape")
    a_up, gt_maps = a_up.float(), gt_maps.float()
    nominal = _per_sample_mean(a_up * (1 - gt_maps))
    anomalous_mean = _per_sample_mean(a_up * gt_maps)
    has_anomaly = gt_maps.flatten(1).amax(1) > 0
    log_term = _anomalous_term(torch.where(has_anomaly, anomalous_mean, torch.ones_like(anomalous_mean)))
    return (nominal + torch.where(has_anomaly, log_term, torch.zeros_like(log_term))).mean()


class AnomalyScores(NamedTuple):
    amap: torch.Tensor  # A, [B, 1, u, v]
    image: torch.Tensor  # mean of A over u x v, [B]
    pixel: torch.Tensor | None  # A upsampled to the input size, [B, 1, H, W]; None without upsampler


def anomaly_scores(out: torch.Tensor, upsampler: ReceptiveFieldUpsampler | None = None) -> AnomalyScores:
    """Test-time scores from the raw output φ(X) (docs/method.md §1; no log term)."""
    amap = pseudo_huber(out.float())
    pixel = upsampler(amap) if upsampler is not None else None
    return AnomalyScores(amap=amap, image=_per_sample_mean(amap), pixel=pixel)
