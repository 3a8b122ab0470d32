"""A run's identity and its folder: ``runs/<dataset>/<class>/seed<k>/`` and the files in it.

Identity: the dataset's own class name (``canonical_class``) and the seed name the folder
(``run_dir_for``); the settings fingerprint (fcdd/fingerprint.py) says which configuration a folder's
checkpoint and model belong to. The folder's files (besides checkpoint.pt, written by the training
loop, and model.pt, the Detector file): metrics.json, scores.csv, ROC points, figures/,
data_summary.json, calibration.json and, when a limit chose the images, kept_images.csv.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcdd.data import describe
from fcdd.data.training_set import slug
from fcdd.errors import DataError, shown_path

RUN_OUTPUTS = (
    "checkpoint.pt",
    "checkpoint.pt.tmp",
    "model.pt",
    "model.pt.tmp",
    "metrics.json",
    "scores.csv",
    "roc_image.csv",
    "roc_pixel.csv",
    "data_summary.json",
    "kept_images.csv",
)
KEPT_IMAGES = "kept_images.csv"


@dataclass
class RunResult:
    dataset: str
    cls: str
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    model_path: Path
    artifacts: dict[str, Path] = field(default_factory=dict)


def class_slug(name: str) -> str:
    """'T-shirt/top' -> 't-shirt-top': safe in paths and registry names."""
    return slug(str(name)) or "class"


def run_dir_for(cfg, cls: str, seed: int) -> Path:
    return Path(cfg.train.output_dir) / cfg.data.dataset / class_slug(cls) / f"seed{seed}"


def canonical_class(cfg, cls: str) -> str:
    """The dataset's own name of a class given by name, slug or index ('0' -> 't-shirt-top' on
    fmnist); DataError for a class the dataset does not know. Where the classes cannot be listed
    yet (data not there), the class stays as given and the data module's error names it."""
    from fcdd.data import class_names
    from fcdd.data.datasets import dataset_spec
    from fcdd.data.training_set import resolve_class

    try:
        names = class_names(cfg)
    except (ValueError, OSError):  # DataError is a ValueError
        return str(cls)
    try:
        return names[resolve_class(str(cls), names, cfg.data.dataset)]
    except DataError as e:
        if dataset_spec(cfg.data.dataset).one_named_class:  # `--classes a b` on one folder
            raise DataError(
                f"{e} (a {cfg.data.dataset} dataset has one class; data.classes: [NAME] names it)"
            ) from None
        raise


def clear_run_folder(run_dir: Path) -> None:
    """Remove an earlier run's outputs (not the lock, not files of the user's own)."""
    for name in RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "figures", ignore_errors=True)


def write_data_files(run_dir: Path, data) -> None:
    """data_summary.json (also printed to stderr) and, when data.train_limit / test_limit chose
    the images, kept_images.csv (removed otherwise: no file of an earlier, limited run)."""
    (run_dir / "data_summary.json").write_text(json.dumps(data.summary, indent=2, default=str))
    print(describe(data.summary), file=sys.stderr, flush=True)
    if data.kept.get("limited"):
        _write_kept(run_dir / KEPT_IMAGES, data.kept)
    else:
        (run_dir / KEPT_IMAGES).unlink(missing_ok=True)


def _write_kept(path: Path, kept: dict) -> Path:
    """split,index,path of every image in use (the raw dataset's index; path where files exist)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "index", "path"])
        for split in ("train", "test"):
            indices, paths = kept[split]["indices"], kept[split]["paths"]
            for k, j in enumerate(indices):
                w.writerow([split, j, shown_path(paths[k]) if k < len(paths) else ""])
    return path
