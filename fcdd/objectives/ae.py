"""The autoencoder (AE) baseline (docs/baselines.md §1): squared reconstruction error as loss and score.

The net reconstructs its input (fcdd/models/autoencoders.py) and trains on nominal images only.
Per pixel the anomaly score is the channel mean of the squared error; per image, its mean.
"""

from __future__ import annotations

import torch


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


def ae_maps(recon: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image scores [B], pixel maps [B, 1, H, W]): the pixel map is the channel mean of the squared
    error, the image score the mean of that map (= the mean over all elements)."""
    pixel = reconstruction_error(recon, x).mean(1, keepdim=True)
    return pixel.flatten(1).mean(1), pixel


@torch.no_grad()
def ae_scores(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time scores of an autoencoder: ``ae_maps(model(x), x)``."""
    return ae_maps(model(x), x)
