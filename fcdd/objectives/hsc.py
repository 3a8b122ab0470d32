"""The hypersphere classifier (HSC) baseline (docs/baselines.md §1): loss, score and gradient heatmap.

The net maps an image to a vector φ(x) (fcdd/models/hsc.py). Its anomaly score is the pseudo-Huber
distance from the centre 0, A = sqrt(‖φ(x)‖² + 1) − 1; nominal samples minimise A, anomalous ones
(Outlier Exposure, confetti noise, real defects) minimise −log(1 − exp(−A)). The net has no map, so
its explanation is the input gradient of the per-sample score: |∂A/∂x| summed over channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fcdd.errors import ExportError
from fcdd.objectives.base import Objective
from fcdd.objectives.fcdd import LOG_EPS
from fcdd.scoring import AnomalyScores


def hsc_score(features: torch.Tensor) -> torch.Tensor:
    """A = sqrt(‖φ‖² + 1) − 1 per sample (``features`` [B, D] -> [B]), as s / (sqrt(s + 1) + 1)
    with s = ‖φ‖²: no cancellation for tiny s, and a smooth gradient at φ = 0."""
    s = features.float().flatten(1).pow(2).sum(1)
    return s / (torch.sqrt(s + 1) + 1)


def hsc_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of A (nominal, label 0) or −log(1 − exp(−A) + 1e-31) (anomalous, 1).

    Unlike FCDD's loss, a batch of anomalies only is not reduced to the plain mean of A: the
    original HSC applies the log term to every anomalous sample."""
    if labels.shape != features.shape[:1]:
        raise ValueError(f"hsc_loss: expected {features.shape[0]} labels, got shape {list(labels.shape)}")
    a = hsc_score(features)
    anomalous = labels.bool()
    # The log term only where it is used (an unused branch's gradient would still be computed).
    safe = torch.where(anomalous, a, torch.ones_like(a))
    log_term = -torch.log(-torch.expm1(-safe) + LOG_EPS)
    return torch.where(anomalous, log_term, a).mean()


def gradient_heatmap(
    score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B], heatmaps [B, 1, H, W]): ``score_fn(x)`` -> per-sample scores, and the absolute
    input gradient of each sample's score summed over channels.

    One backward pass of the summed scores gives every sample's own gradient as long as samples do
    not interact, i.e. the net is in eval mode (BatchNorm with running statistics). Gradients of
    the parameters are not computed. Works under ``torch.no_grad()`` callers too."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        scores = score_fn(x)
        if scores.shape != x.shape[:1]:
            raise ValueError(f"gradient_heatmap: expected {x.shape[0]} scores, got {list(scores.shape)}")
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return scores.detach(), grad.abs().sum(1, keepdim=True)


def hsc_scores(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time scores of an HSC net (eval mode): (image scores A [B], raw gradient heatmaps
    [B, 1, H, W]). Pixel AUC is computed on these raw gradients; blur is for display only."""
    if model.training:
        raise ValueError("hsc_scores: put the net in eval mode (training BatchNorm mixes the samples)")
    return gradient_heatmap(lambda inputs: hsc_score(model(inputs)), x)


class HSCObjective(Objective):
    """HSC on the training loop (fcdd/objectives/base.py): the loss of the image labels on the
    net's vector φ(X); scores A and the input-gradient heatmap, no low-resolution map. Anomalies of
    any kind (OE, confetti, real defects) enter through their labels."""

    name = "hsc"
    net_variant = "hsc"  # the FC-head twin of model.net (fcdd/models/hsc.py)
    loss_kind = "image"
    keys = ("label",)

    @classmethod
    def from_config(cls, cfg: Any, upsampler: nn.Module | None = None) -> HSCObjective:
        return cls()

    @classmethod
    def for_scoring(cls, meta: dict, upsampler: nn.Module | None = None) -> HSCObjective:
        return cls()

    def loss(self, out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return hsc_loss(out, batch["label"])

    def score(self, model: nn.Module, x: torch.Tensor) -> AnomalyScores:
        image, heatmap = hsc_scores(model, x)
        return AnomalyScores(amap=None, image=image, pixel=heatmap)

    exportable = False  # pipelines: a registered HSC version carries no ONNX copy

    def export_graph(self, model: nn.Module, upsampler: nn.Module | None = None) -> nn.Module:
        raise ExportError(NOT_EXPORTABLE)


NOT_EXPORTABLE = (
    "an HSC model cannot be exported: its heatmaps are input gradients, which need autograd and "
    "the exported graphs have none; score it with its model.pt (fcdd predict --model model.pt)"
)
