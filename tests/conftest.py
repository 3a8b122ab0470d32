"""Shared fixtures: a tiny folder dataset with masks that any test can train on in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcdd.config import load_config

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session, exitstatus):
    """Stop Prefect's temporary server (started by flows run in-process) while pytest still holds
    the streams its log handler writes to: left to its exit hook, it logs into a closed stream and
    prints a traceback after the summary."""
    server = sys.modules.get("prefect.server.api.server")
    running = getattr(getattr(server, "SubprocessASGIServer", None), "_instances", None)
    if not running:  # no flow ran in-process, or a Prefect whose internals differ: its exit hook does it
        return
    # First the services that still send events and logs to it (what Prefect's own exit does first).
    from prefect._internal.concurrency.services import QueueService

    QueueService.drain_all(timeout=30)
    for instance in list(running.values()):
        instance.stop()


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth grey-green texture: the 'good' surface."""
    base = rng.normal(120, 8, (size, size, 1)) + np.array([0, 20, 0])
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def defect_folder(tmp_path_factory) -> Path:
    """good/*.png (nominal), defect/*.png with a bright square, masks/*_mask.png; 48 px images."""
    root = tmp_path_factory.mktemp("defects")
    rng = np.random.default_rng(0)
    for sub in ("good", "defect", "masks"):
        (root / sub).mkdir()
    for i in range(40):
        Image.fromarray(_texture(rng, 48)).save(root / "good" / f"g{i:02d}.png")
    for i in range(12):
        img = _texture(rng, 48)
        mask = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(4, 30, 2)
        img[y : y + 14, x : x + 14] = [250, 40, 40]
        mask[y : y + 14, x : x + 14] = 255
        Image.fromarray(img).save(root / "defect" / f"d{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"d{i:02d}_mask.png")
    return root


def folder_config(root: Path, out: Path, *extra: str):
    """The folder preset shrunk to a 32 px CNN: trains and evaluates in a few seconds."""
    return load_config(
        REPO / "params.yaml",
        [
            "data.dataset=folder",
            f"data.root={root}",
            "data.classes=[tiles]",
            "data.folder={nominal: [good], anomalous: [defect], masks: [masks], mask_suffix: _mask, test_ratio: 0.25}",
            f"data.cache_dir={out / 'cache'}",
            "data.num_workers=0",
            "model={net: cnn32, input_size: 32, sigma: 4.0, pretrained: false, freeze: 0}",
            "train.epochs=4",
            "train.batch_size=16",
            "train.optimizer=adam",
            "train.lr=0.001",
            "train.scheduler=none",
            "train.threads=1",
            "train.progress=false",
            f"train.output_dir={out / 'runs'}",
            "evaluation.heatmap_count=6",
            "evaluation.batch_size=16",
            "tracking.enabled=false",
            # these tiny runs keep the anomalies, BatchNorm statistics and image score they were
            # written with (the folder preset now recommends CutPaste anomalies, re-estimated
            # statistics and the heatmap maximum)
            "anomalies.kind=confetti",
            "train.bn_recalibration=off",
            "model.image_score=mean",
            *extra,
        ],
        preset=["folder"],
    )


@pytest.fixture(scope="session")
def make_folder_config():
    return folder_config
