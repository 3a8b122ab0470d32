"""The FCDD objective (docs/method.md §1): the image-level loss, the pixel-wise loss through the
receptive-field upsampler, and FCDD's scores. Written to stay finite for tiny and huge outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.data.datasets import dataset_spec
from fcdd.errors import TrainingError
from fcdd.objectives.base import Objective
from fcdd.scoring import AnomalyScores, anomaly_scores, image_score, pseudo_huber

LOG_EPS = 1e-31  # docs/method.md §1: added inside the log of the anomalous term
LOSS_KINDS = ("image", "pixel")


def _anomalous_term(mean_a: torch.Tensor) -> torch.Tensor:
    """−log(1 − exp(−m) + 1e-31), with 1 − exp(−m) as −expm1(−m) so tiny m keeps its precision."""
    return -torch.log(-torch.expm1(-mean_a) + LOG_EPS)


def fcdd_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-level loss: per sample, nominal (0) mean A, anomalous (1) −log(1 − exp(−mean A));
    the mean over the batch. A batch with a single label (all nominal or all anomalous) minimises
    the plain mean of A, as the reference does (docs/method.md §1). ``out`` is the raw net output [B, 1, u, v]."""
    if labels.shape != out.shape[:1]:
        raise ValueError(f"fcdd_loss: expected {out.shape[0]} labels, got shape {list(labels.shape)}")
    mean_a = image_score(pseudo_huber(out.float()))
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
    nominal = image_score(a_up * (1 - gt_maps))
    anomalous_mean = image_score(a_up * gt_maps)
    has_anomaly = gt_maps.flatten(1).amax(1) > 0
    log_term = _anomalous_term(torch.where(has_anomaly, anomalous_mean, torch.ones_like(anomalous_mean)))
    return (nominal + torch.where(has_anomaly, log_term, torch.zeros_like(log_term))).mean()


def choose_loss(cfg: Any) -> str:
    """'image' or 'pixel' (``train.loss``). 'auto' follows the reference: pixel-wise whenever the
    training data carry ground-truth maps, i.e. mvtec/folder with injected anomalies (confetti and
    OE: all-ones maps, semi: real masks); image-level otherwise (fmnist/cifar10/imagenet30, or no
    anomalies at all, where both reduce to a mean of A over nominal images)."""
    if cfg.train.loss == "auto":
        has_maps = dataset_spec(cfg.data.dataset).has_maps and cfg.anomalies.kind != "none"
        return "pixel" if has_maps else "image"
    return cfg.train.loss


class FCDDObjective(Objective):
    """FCDD: the net's output φ(X) is a map; A = pseudo-Huber(φ) is pulled towards 0 on nominal
    images (or pixels) and away from it on anomalous ones. ``loss_kind`` "image" trains on image
    labels, "pixel" on ground-truth maps against A upsampled to the input size."""

    name = "fcdd"

    def __init__(self, loss_kind: str = "image", upsampler: ReceptiveFieldUpsampler | None = None):
        if loss_kind not in LOSS_KINDS:
            raise ValueError(f"FCDD loss kind {loss_kind!r}: expected one of {', '.join(LOSS_KINDS)}")
        if loss_kind == "pixel" and upsampler is None:
            raise TrainingError("train.loss 'pixel' needs the receptive-field upsampler; pass upsampler=")
        self.loss_kind, self.upsampler = loss_kind, upsampler
        self.keys = ("mask",) if loss_kind == "pixel" else ("label",)

    @classmethod
    def from_config(cls, cfg: Any, upsampler: ReceptiveFieldUpsampler | None = None) -> FCDDObjective:
        return cls(choose_loss(cfg), upsampler)

    @classmethod
    def for_scoring(cls, meta: dict, upsampler: ReceptiveFieldUpsampler | None = None) -> FCDDObjective:
        return cls(upsampler=upsampler)

    def loss(self, out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.loss_kind == "pixel":
            return pixel_loss(self.upsampler(pseudo_huber(out.float())), batch["mask"])  # type: ignore[misc]
        return fcdd_loss(out, batch["label"])

    def packed_loss(self, out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.loss_kind != "pixel":
            return super().packed_loss(out, batch)
        # One upsampling call for all K nets' maps: [K, B, ...] flattened to [K*B, ...] and back.
        a_up = self.upsampler(pseudo_huber(out.float()).flatten(0, 1)).unflatten(0, out.shape[:2])  # type: ignore[misc]
        return torch.stack([pixel_loss(a_up[k], batch["mask"][k]) for k in range(out.shape[0])])

    @torch.no_grad()
    def score(self, model: nn.Module, x: torch.Tensor) -> AnomalyScores:
        if self.upsampler is None:
            raise ValueError("FCDD scoring needs the receptive-field upsampler")
        return anomaly_scores(model(x), self.upsampler)

    def to(self, device: torch.device | str) -> FCDDObjective:
        if self.upsampler is not None:
            self.upsampler.to(device)
        return self
