"""Shared test material: a tiny untrained Detector, test images, and the overrides of a seconds-long run."""

from __future__ import annotations

import numpy as np
import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import Config, ModelConfig
from fcdd.detector import Detector
from fcdd.models import build_model

PREPROCESS = {
    "input_size": 28,
    "channels": 1,
    "resize": None,
    "crop": None,
    "normalisation": {"kind": "gcn-minmax", "min": -2.0, "max": 8.0},
}


def tiny_detector(seed: int = 0) -> Detector:
    torch.manual_seed(seed)
    model = build_model(Config(model=ModelConfig(net="cnn28", input_size=28)))
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, 1.2, 28)
    net = {
        "net": "cnn28",
        "input_size": 28,
        "pretrained": False,
        "weights_path": None,
        "freeze": 0,
        "sigma": 1.2,
    }
    return Detector(
        model, upsampler, PREPROCESS, {"net": net, "dataset": "fmnist", "class": "0", "seed": seed}
    )


def images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (28 + 6 * i, 28 + 3 * i), dtype=np.uint8) for i in range(n)]


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
