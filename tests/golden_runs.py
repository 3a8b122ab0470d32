"""Tiny end-to-end runs whose output digests pin the package's numerical results.

``python tests/golden_runs.py DIR`` runs them in DIR (relative paths only, so the digests do not
depend on where DIR is) and prints the digests as JSON; tests/system/test_golden.py compares them with
the digests recorded in tests/golden_digests.json for this machine type. Covered: a folder dataset
with confetti and the pixel-wise loss, calibration split and heatmaps (CNN32, fp32); Fashion-MNIST
one-vs-rest with Outlier Exposure and the image-level loss on the default fast path (bf16 where the
CPU has it, channels-last); two Fashion-MNIST classes trained as one pack.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = (
    "checkpoint.pt",
    "model.pt",
    "metrics.json",
    "scores.csv",
    "roc_image.csv",
    "roc_pixel.csv",
    "data_summary.json",
    "kept_images.csv",
    "calibration.json",
    "figures/heatmaps_local.png",
    "figures/heatmaps_global.png",
)


def signature() -> str:
    """What decides the bits: torch, the CPU's instruction sets and the thread count (fixed at 1)."""
    from fcdd.hardware import cpu_info

    info = cpu_info()
    return f"torch {torch.__version__} | {info.model} | {' '.join(info.flags)} | {info.torch_capability}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def make_folder_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("good", "defect", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(40):
        img = np.clip(rng.normal(120, 8, (48, 48, 1)) + np.array([0, 20, 0]), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "good" / f"g{i:02d}.png")
    for i in range(12):
        img = np.clip(rng.normal(120, 8, (48, 48, 1)) + np.array([0, 20, 0]), 0, 255).astype(np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(4, 30, 2)
        img[y : y + 14, x : x + 14] = [250, 40, 40]
        mask[y : y + 14, x : x + 14] = 255
        Image.fromarray(img).save(root / "defect" / f"d{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"d{i:02d}_mask.png")


def make_oe_pool(root: Path) -> None:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"oe{i:02d}.png")


COMMON = [
    "data.cache_dir=cache",
    "data.num_workers=0",
    "train.threads=1",
    "train.progress=false",
    "train.device=cpu",
    "train.output_dir=runs",
    "tracking.enabled=false",
    "evaluation.heatmap_count=4",
]
FOLDER = [
    "data.dataset=folder",
    "data.root=folder",
    "data.classes=[tiles]",
    "data.folder={nominal: [good], anomalous: [defect], masks: [masks], mask_suffix: _mask, test_ratio: 0.25}",
    "model={net: cnn32, input_size: 32, sigma: 4.0, pretrained: false, freeze: 0}",
    "train.epochs=3",
    "train.batch_size=16",
    "train.optimizer=adam",
    "train.lr=0.001",
    "train.scheduler=none",
    "train.amp=false",
    "evaluation.calibration=0.25",
    "evaluation.batch_size=16",
    # the case this records: confetti, training-time BatchNorm statistics (the folder preset's own
    # recommendation changed to other anomalies, re-estimated statistics and the heatmap maximum
    # after these were recorded)
    "anomalies.kind=confetti",
    "train.bn_recalibration=off",
    "model.image_score=mean",
]
FMNIST = [
    "data.root=fashion-mnist",
    "data.train_limit=64",
    "data.test_limit=64",
    "anomalies.oe_source=oe",
    "anomalies.oe_limit=16",
    "train.epochs=2",
    "train.batch_size=32",
    "evaluation.calibration=0.25",
]


def digest_run(run_dir: Path, detector_inputs: list[Path]) -> dict[str, str]:
    from fcdd.detector import Detector

    out = {name: _sha((run_dir / name).read_bytes()) for name in RUN_FILES if (run_dir / name).exists()}
    det = Detector.load(run_dir / "model.pt")
    result = det.score([str(p) for p in detector_inputs])
    out["scores"] = _sha(np.asarray(result.scores, np.float32).tobytes())
    out["heatmaps"] = _sha(b"".join(np.asarray(h, np.float32).tobytes() for h in result.heatmaps))
    return out


def run_all(workdir: Path) -> dict[str, dict[str, str]]:
    from fcdd.config import load_config
    from fcdd.experiment import run_experiment, train_pack

    os.chdir(workdir)
    make_folder_data(Path("folder"))
    make_oe_pool(Path("oe"))
    fm = Path("fashion-mnist")
    if not fm.exists():
        fm.symlink_to(REPO / "data" / "fashion-mnist")
    digests: dict[str, dict[str, str]] = {}

    cfg = load_config(REPO / "params.yaml", COMMON + FOLDER, preset=["folder"])
    res = run_experiment(cfg, "tiles", 0)
    probe = sorted(Path("folder/defect").glob("*.png"))[:3] + sorted(Path("folder/good").glob("*.png"))[:3]
    digests["folder-confetti-pixel"] = digest_run(Path(res.run_dir), probe)

    fm_probe = sorted(Path("oe").glob("*.png"))[:4]
    cfg = load_config(REPO / "params.yaml", COMMON + FMNIST, preset=["fmnist", "cpu"])
    res = run_experiment(cfg, "sneaker", 1)
    digests["fmnist-oe-image"] = digest_run(Path(res.run_dir), fm_probe)

    cfg = load_config(
        REPO / "params.yaml", COMMON + FMNIST + ["train.output_dir=packed"], preset=["fmnist", "cpu"]
    )
    jobs = [("bag", 0), ("coat", 0)]
    train_pack(cfg, jobs)
    for cls, seed in jobs:
        res = run_experiment(cfg, cls, seed)  # finds training complete: evaluates and saves
        digests[f"fmnist-packed-{cls}"] = digest_run(Path(res.run_dir), fm_probe)
    return digests


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = run_all(Path(sys.argv[1]).resolve())
    print(json.dumps({"signature": signature(), "digests": result}, indent=1, sort_keys=True))
