"""Small objects for tests and benchmarks of code that uses fcdd (as torch.testing is for torch):
an untrained detector that scores in milliseconds, one of any net, images of a few sizes, and
``fcdd app`` as a subprocess. Timing, machine header and tables: ``fcdd.testing.benchmark``."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import Config, ModelConfig
from fcdd.detector import Detector
from fcdd.models import build_model, build_net
from fcdd.training import seed_everything

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


IMAGENET_NORM = {"kind": "meanstd", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def untrained_detector(net: str, input_size: int, device: torch.device | str = "cpu") -> Detector:
    """An untrained Detector of any net (seeded weights, default sigma; ImageNet statistics for
    colour nets): for timing inference and exports, where the weights do not matter."""
    seed_everything(0)
    model = build_net(net, input_size)
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, None, input_size)
    grey = {"kind": "meanstd", "mean": [0.5], "std": [0.5]}
    preprocess = {
        "input_size": input_size,
        "channels": model.in_channels,
        "resize": None,
        "crop": None,
        "normalisation": IMAGENET_NORM if model.in_channels == 3 else grey,
    }
    meta = {"net": {"net": net, "input_size": input_size}, "dataset": "bench", "class": "bench"}
    return Detector(model, upsampler, preprocess, meta).to(device)


@contextlib.contextmanager
def running_app(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> Iterator:
    """``fcdd app ... --port 0`` as a subprocess; yields (url, process); stopped with SIGINT (Ctrl-C)."""
    exe = Path(sys.executable).with_name("fcdd")
    proc = subprocess.Popen(
        [str(exe), "app", *args, "--port", "0"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url, deadline = None, time.monotonic() + timeout
    try:
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"fcdd app exited {proc.wait()}: {proc.stderr.read()[-2000:]}")
            m = re.search(r"serving (http://\S+)", line)
            url = m.group(1) if m else None
            assert time.monotonic() < deadline, "fcdd app did not start"
        yield url, proc
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
