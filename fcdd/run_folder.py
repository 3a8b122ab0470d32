"""A run's identity and its folder: ``runs/<dataset>/<class>/seed<k>/`` and the files in it.

Identity: the dataset's own class name (``canonical_class``) and the seed name the folder
(``run_dir_for``); the settings fingerprint (fcdd/fingerprint.py) says which configuration a folder's
checkpoint and model belong to. The folder's files (besides checkpoint.pt, written by the training
loop, and model.pt, the Detector file): metrics.json, scores.csv, ROC points, figures/,
data_summary.json, calibration.json, separation.json (fcdd/separation.py) and, when a limit chose the images, kept_images.csv.
"""

from __future__ import annotations

import csv
import json
import math
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
    "calibration.json",
    "separation.json",
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
    fmnist); a class the dataset does not know stays as given (``known_class`` refuses it)."""
    try:
        return known_class(cfg, cls)
    except DataError:
        return str(cls)


def known_class(cfg, cls: str) -> str:
    """``canonical_class``, but DataError naming the known classes for a class the dataset does not
    know. Where the classes cannot be listed yet (data not there), the class stays as given and the
    data module's error names it."""
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
    the images or evaluation.calibration held some out, kept_images.csv (removed otherwise: no
    file of an earlier, limited run)."""
    (run_dir / "data_summary.json").write_text(json.dumps(data.summary, indent=2, default=str))
    print(describe(data.summary), file=sys.stderr, flush=True)
    if data.kept.get("limited"):
        _write_kept(run_dir / KEPT_IMAGES, data.kept)
    else:
        (run_dir / KEPT_IMAGES).unlink(missing_ok=True)


def write_calibration(path: Path, summary: dict[str, Any]) -> Path:
    """calibration.json as strict JSON: a threshold that does not exist (alpha below 1/(n+1), no
    image can be flagged) is null, not Infinity, with a note saying so."""
    safe, missing = _finite_or_null(summary)
    if missing:
        safe["null_note"] = (
            "null: no threshold at that alpha (alpha below min_alpha = 1/(n+1): no image can be flagged)"
        )
    path.write_text(json.dumps(safe, indent=2, allow_nan=False))
    return path


def read_calibration(path: Path) -> dict[str, Any]:
    """calibration.json of any version: null thresholds (and the Infinity older files wrote) read
    as infinity."""
    data = json.loads(Path(path).read_text())  # Python's reader accepts Infinity
    for levels in (data.get("thresholds") or {}).values():
        for key, value in levels.items():
            if value is None:
                levels[key] = math.inf
    return data


def _finite_or_null(value: Any) -> tuple[Any, bool]:
    """``value`` with every non-finite float replaced by None, and whether any was."""
    if isinstance(value, dict):
        pairs = {k: _finite_or_null(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(m for _, m in pairs.values())
    if isinstance(value, list):
        pairs = [_finite_or_null(v) for v in value]
        return [v for v, _ in pairs], any(m for _, m in pairs)
    if isinstance(value, float) and not math.isfinite(value):
        return None, True
    return value, False


def _write_kept(path: Path, kept: dict) -> Path:
    """split,index,path of every image in use (the raw dataset's index; path where files exist):
    split ``train``, ``calibration`` (training images held out to calibrate the model) or ``test``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "index", "path"])
        for split in ("train", "calibration", "test"):
            if split not in kept:
                continue
            indices, paths = kept[split]["indices"], kept[split]["paths"]
            for k, j in enumerate(indices):
                w.writerow([split, j, shown_path(paths[k]) if k < len(paths) else ""])
    return path
