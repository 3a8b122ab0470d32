"""What a person sees on an MLflow run's page: which numbers are charts, the training data under
"Datasets", the run's source, and the heatmap figure.

- Metrics are only what measures the model: AUCs, false-alarm and detection rates, F1, mask IoU.
  Counts (``n_test``, ``calibration_n``), the seed, thresholds and interval bounds are run tags
  (``fcdd.result.<key>``): a chart of one bar says nothing.
- Epoch curves are ``train/loss`` and ``train/lr``: MLflow draws sections named by a metric's
  prefix before the unprefixed "Model metrics", so the training curves open the metrics tab. The
  throughput (``images_per_s``, ``epoch_time_s``) goes to the "System metrics" tab (``system/``).
- The training data is an MLflow dataset (its source: the data folder; its digest: the DVC data
  version where ``data.dvc`` tracks it, else a digest of the files' names, sizes and times).
- The run's description shows the heatmap figure of a few test images (an artifact of the run).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, RunTag

# Per-epoch logs: the curves of the training section, then the machine's speed.
EPOCH_NAMES = {"loss": "train/loss", "lr": "train/lr"}
SPEED_NAMES = {"images_per_s": "system/images_per_s", "epoch_time_s": "system/epoch_time_s"}
TRUE_METRICS = {"image_auc", "image_aupr", "pixel_auc", "aupro", "oracle_f1", "oracle_mask_iou"}
DECISION_METRIC = re.compile(r"^a[0-9.]+_(far|detection_rate|f1|mask_precision|mask_recall|mask_iou)$")
RESULT_TAG = "fcdd.result."
HEATMAP_FIGURE = "figures/heatmaps_local.png"  # the run artifact the run and model pages show
NOTE_TAG = "mlflow.note.content"  # the run's description (markdown) on its Overview
MAX_DIGEST_FILES = 200_000  # a data folder larger than this is digested by its first files only


def epoch_metric_name(key: str) -> str:
    return EPOCH_NAMES.get(key) or SPEED_NAMES.get(key) or f"train/{key}"


def is_metric(key: str) -> bool:
    """A number that measures the model (a chart), not a count, setting, threshold or bound."""
    return key in TRUE_METRICS or bool(DECISION_METRIC.match(key))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def split_results(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics to chart, tags): counts, thresholds and interval bounds become tags."""
    charts, tags = {}, {}
    for key, value in metrics.items():
        if not _is_number(value):
            continue
        if is_metric(key):
            charts[key] = float(value)
        elif key != "seed":  # the run is tagged with its seed already (fcdd.seed)
            tags[RESULT_TAG + key] = f"{value:.6g}" if isinstance(value, float) else str(value)
    return charts, tags


def log_results(
    client: MlflowClient, run_id: str, metrics: dict[str, Any], timestamp: int, model_id: str | None = None
) -> None:
    """The run's results. With ``model_id`` (logged after the model: MLflow copies only the metrics
    a run has when its model is logged, without their data) they are the logged model's metrics too,
    each tied to the run's training data (log_training_data; they measure its test split): the
    logged-model page lists its "Datasets used" from them."""
    charts, tags = split_results(metrics)
    name = digest = None
    if model_id is not None and (inputs := client.get_run(run_id).inputs.dataset_inputs):
        name, digest = inputs[0].dataset.name, inputs[0].dataset.digest
    client.log_batch(
        run_id,
        metrics=[
            Metric(
                k, v, timestamp, 0, model_id=model_id, dataset_name=name, dataset_digest=digest, run_id=run_id
            )
            for k, v in charts.items()
        ],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


# ---------------------------------------------------------------- source and data
def source_tags(entry_point: str | None = None) -> dict[str, str]:
    """MLflow's source tags: the run page's "Source" (the command or script that ran)."""
    entry = entry_point or Path(sys.argv[0]).name or "python"
    return {"mlflow.source.type": "LOCAL", "mlflow.source.name": entry}


def data_digest(root: str | Path, version: str) -> str:
    """The DVC data version where known; else a digest of the data's file names, sizes and
    modification times (a file: its size and time), so changed data shows a new digest."""
    if version and version != "untracked":
        return version.removesuffix(".dir")[:16]
    path = Path(root).expanduser()
    h = hashlib.sha256()
    if path.is_file():
        stat = path.stat()
        h.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    elif path.is_dir():
        count = 0
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file = Path(folder) / name
                try:
                    stat = file.stat()
                except OSError:
                    continue
                h.update(f"{file.relative_to(path).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
                count += 1
                if count >= MAX_DIGEST_FILES:
                    return h.hexdigest()[:16]
    return h.hexdigest()[:16]


def training_dataset(cfg: Any, cls: str, version: str) -> DatasetInput:
    """The training data as an MLflow dataset input (context ``training``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    root = Path(cfg.data.root).expanduser().resolve()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path is local
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(root))
    name = f"{cfg.data.dataset}/{cls}"
    dataset = MetaDataset(source, name=name, digest=data_digest(root, version))
    tags = [InputTag("mlflow.data.context", "training"), InputTag("fcdd.data_version", version)]
    return DatasetInput(dataset._to_mlflow_entity(), tags=tags)


def log_training_data(client: MlflowClient, run_id: str, cfg: Any, cls: str, version: str) -> None:
    """Fill the run's "Datasets" (once: a retried run already has it)."""
    if client.get_run(run_id).inputs.dataset_inputs:
        return
    client.log_inputs(run_id, datasets=[training_dataset(cfg, cls, version)])


# ---------------------------------------------------------------- the heatmap figure
def artifact_url(run_id: str, path: str) -> str:
    """The MLflow UI's URL of a run artifact, relative to the UI's own address."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def show_heatmaps(client: MlflowClient, run_id: str, run_dir: Path, title: str) -> bool:
    """The run's description shows its heatmap figure (logged as an artifact before); False when
    the run folder has none."""
    if not (Path(run_dir) / HEATMAP_FIGURE).is_file():
        return False
    note = (
        f"**{title}**: heatmaps of test images, most nominal to most anomalous "
        f"(artifact `{HEATMAP_FIGURE}`).\n\n![heatmaps]({artifact_url(run_id, HEATMAP_FIGURE)})\n"
    )
    client.set_tag(run_id, NOTE_TAG, note)
    return True
