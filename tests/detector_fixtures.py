"""A tiny untrained Detector and test images, shared by the MLflow pyfunc and serving tests."""

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
