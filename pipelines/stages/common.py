"""What the DVC stages share: the params file, the output paths, JSON writing."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fcdd.config import Config, load_config

# The stages read params.yaml in the working directory (DVC runs them at the repository root).
PARAMS = os.environ.get("FCDD_PARAMS", "params.yaml")

OUTPUTS = Path("outputs")
PREPARE_SUMMARY = OUTPUTS / "prepare" / "summary.json"
EVAL_DIR = OUTPUTS / "evaluate"
EVAL_RUNS = EVAL_DIR / "runs"  # per-run re-evaluation folders (scores, ROC points, figures)
EVAL_SUMMARY = EVAL_DIR / "summary.json"
AUC_BARS = EVAL_DIR / "auc_per_class.csv"
ROC_POINTS = EVAL_DIR / "roc_image.csv"  # class, seed, auc, fpr, tpr of every run: one ROC chart per class
HEATMAP_GRIDS = EVAL_DIR / "heatmaps"  # <class>.png: one heatmap grid per class (its first seed)
METRICS = Path("metrics.json")  # compact: the means and the weakest class (dvc metrics show)
METRICS_DETAIL = EVAL_DIR / "metrics_detail.json"  # per class mean/std/runs of every metric
REPORT = OUTPUTS / "report.md"

# Prefect's local ephemeral server: allow a slow start on a busy machine, send nothing out.
PREFECT_ENV = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


# A stage's output is a log (DVC's, CI's): MLflow's artifact transfer bars would fill it with
# carriage-return frames; each class run says what it is doing in one line instead.
LOG_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def stage_config() -> Config:
    return load_config(PARAMS)


def stage_classes(cfg: Config) -> list[str]:
    """The classes the pipeline runs: ``data.classes``, or every class of the dataset."""
    from fcdd.data import class_names

    return [str(c) for c in (cfg.data.classes or class_names(cfg))]


def plain(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (DVC and browsers reject them), paths become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(data), indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run the stage that writes it first (dvc repro)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON: {e}") from e
