"""Shared test material: a tiny untrained Detector and test images (fcdd.testing), and the overrides
of a seconds-long run."""

from __future__ import annotations

from fcdd.testing import PREPROCESS, images, tiny_detector

__all__ = ["PREPROCESS", "TINY_RUN", "images", "tiny_detector"]

# One epoch on 64 Fashion-MNIST images on the CPU, tracking off: seconds of real training (flow tests).
TINY_RUN = [
    "train.batch_size=32",
    "data.train_limit=64",
    "data.test_limit=64",
    "anomalies.oe_limit=32",
    "train.threads=1",
    "data.num_workers=0",
    "train.device=cpu",
    "evaluation.heatmap_count=4",
    "train.progress=false",
    "tracking.enabled=false",
]
