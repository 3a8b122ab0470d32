"""The autoencoder (AE) baseline (docs/baselines.md §1): squared reconstruction error as loss and score.

The net reconstructs its input (fcdd/models/autoencoders.py) and trains on nominal images only.
Per pixel the anomaly score is the channel mean of the squared error; per image, its mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fcdd.objectives.base import Objective
from fcdd.scoring import AnomalyScores


def reconstruction_error(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(x̂ − x)² per element, [B, C, H, W], in float32."""
    if recon.shape != x.shape:
        raise ValueError(
            f"reconstruction_error: reconstruction {list(recon.shape)} and input {list(x.shape)} differ"
        )
    return (recon.float() - x.float()).pow(2)


def ae_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The mean squared reconstruction error over the batch (every sample is nominal)."""
    return reconstruction_error(recon, x).mean()


def nominal_reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean squared reconstruction error over the nominal samples (label 0) of a batch: an
    autoencoder never learns to reconstruct anomalies. A batch without nominal samples gives 0
    (with a gradient of zeros), so it changes nothing."""
    if labels.shape != x.shape[:1]:
        raise ValueError(f"ae loss: expected {x.shape[0]} labels, got shape {list(labels.shape)}")
    per_sample = reconstruction_error(recon, x).flatten(1).mean(1)
    nominal = (labels == 0).to(per_sample.dtype)
    return (per_sample * nominal).sum() / nominal.sum().clamp_min(1)


def ae_maps(recon: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image scores [B], pixel maps [B, 1, H, W]): the pixel map is the channel mean of the squared
    error, the image score the mean of that map (= the mean over all elements)."""
    pixel = reconstruction_error(recon, x).mean(1, keepdim=True)
    return pixel.flatten(1).mean(1), pixel


@torch.no_grad()
def ae_scores(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time scores of an autoencoder: ``ae_maps(model(x), x)``."""
    return ae_maps(model(x), x)


class AEObjective(Objective):
    """The autoencoder on the training loop (fcdd/objectives/base.py): reconstruction loss of the
    nominal images of each batch; the error map as heatmap, no low-resolution map."""

    name = "ae"
    net_variant = "ae"  # the autoencoder of model.net's input size (fcdd/models/autoencoders.py)
    loss_kind = "reconstruction"
    keys = ("label",)
    nominal_only = True  # fcdd.objectives.training_config: no synthetic anomalies are drawn

    @classmethod
    def from_config(cls, cfg: Any, upsampler: nn.Module | None = None) -> AEObjective:
        return cls()

    @classmethod
    def for_scoring(cls, meta: dict, upsampler: nn.Module | None = None) -> AEObjective:
        return cls()

    def loss(self, out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return nominal_reconstruction_loss(out, batch["image"], batch["label"])

    def score(self, model: nn.Module, x: torch.Tensor) -> AnomalyScores:
        image, pixel = ae_scores(model, x)
        return AnomalyScores(amap=None, image=image, pixel=pixel)

    def export_graph(self, model: nn.Module, upsampler: nn.Module | None = None) -> nn.Module:
        """fcdd export's graph: ``score`` [B], ``heatmap`` [B, 1, H, W] and, as ``anomaly_map``,
        the heatmap again (an autoencoder has no low-resolution map)."""
        return AEScoringGraph(model)


class AEScoringGraph(nn.Module):
    """Reconstruction, squared error, channel mean and image mean as one exportable module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The nets' layers without their input checks, which tracing would bake in.
        encoder = self.model.encoder
        recon = self.model.decoder(encoder.head(torch.flatten(encoder.trunk(x), 1)))
        pixel = (recon - x).pow(2).mean(1, keepdim=True)
        return pixel.flatten(1).mean(1), pixel, pixel
