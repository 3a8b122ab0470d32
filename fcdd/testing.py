"""Small objects for tests and benchmarks of code that uses fcdd (as torch.testing is for torch):
an untrained detector that scores in milliseconds, and images of a few sizes."""

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
    """An untrained CNN-28 Detector (Fashion-MNIST's net, sigma 1.2) with seeded weights."""
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
    """``n`` grey uint8 images of growing, non-square sizes (28 x 28, 34 x 31, ...), seeded."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (28 + 6 * i, 28 + 3 * i), dtype=np.uint8) for i in range(n)]
