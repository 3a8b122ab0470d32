"""How a trained model turns its maps into one image score (docs/method.md §1): the names the
configuration accepts (``model.image_score``) and the reduction, shared by the Detector and its
exported graph so that both give the same number. No torch import: the configuration loads this."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGE_SCORES = ("mean", "max")  # mean of the low-resolution map A (the paper's); heatmap maximum
DEFAULT_IMAGE_SCORE = "mean"


def model_image_score(meta: dict) -> str:
    """A model file's image score; files written before the key existed score by the mean."""
    return str(meta.get("image_score", DEFAULT_IMAGE_SCORE))


def heatmap_maximum(heatmaps: torch.Tensor) -> torch.Tensor:
    """Per sample, the maximum of the upsampled heatmap: [B, H, W] or [B, 1, H, W] -> [B]."""
    return heatmaps.flatten(1).amax(1)
