"""The results of a dataset's class runs: results.csv, <dataset>-tracking.csv and Prefect artifacts
(one table per class run, which a deployment run's parent reads back; the AUC table; a summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from fcdd.config import Config
from fcdd.experiment import class_slug

# The columns of results.csv, in order; a row may carry more (they follow).
RESULT_COLUMNS = [
    "dataset", "class", "seed", "status", "image_auc", "pixel_auc", "aupro", "image_aupr",
    "epochs", "run_dir", "error",
]  # fmt: skip
# What differs from one run of the same settings to the next: ids, registry versions, retries. results.csv
# lies in the train stage's DVC output, whose hash must repeat, so these go to <dataset>-tracking.csv
# beside the dataset's folder (with class and seed to join on).
TRACKING_COLUMNS = [
    "mlflow_run_id", "flow_run_id", "model_name", "model_version", "champion", "registry_note", "attempts",
    "first_epoch", "resubmissions",
]  # fmt: skip


def failed_row(cfg: Config, cls: str, seed: int, error: str) -> dict[str, Any]:
    return {"dataset": cfg.data.dataset, "class": cls, "seed": seed, "status": "failed", "error": error}


def one_line(text: str, limit: int = 300) -> str:
    """A state message fit for one results.csv cell and one UI line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ---------------------------------------------------------------- one class run's artifact
def result_artifact_key(dataset: str, cls: str, seed: int) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"fcdd-{class_slug(dataset)}-{class_slug(cls)}-seed{seed}"


def publish_result(cfg: Config, row: dict, packed: bool = False) -> None:
    """A class run's row as its table artifact: what the parent of a deployment run reads back."""
    create_table_artifact(
        key=result_artifact_key(cfg.data.dataset, row["class"], int(row["seed"])),
        table=[_plain_row(row)],
        description=f"FCDD result: {cfg.data.dataset}, class {row['class']}, seed {row['seed']}"
        + (" (packed)" if packed else ""),
    )


def rows_from_artifacts(flow_run_id) -> dict[str, dict]:
    """The result rows a class run (packed or not) published, by artifact key."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    rows = {}
    for artifact in artifacts:
        if artifact.type == "table" and artifact.key and artifact.key.startswith("fcdd-"):
            data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            rows[artifact.key] = dict(data[0])
    return rows


def _plain_row(row: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in row.items()}


# ---------------------------------------------------------------- the dataset's tables
def results_frame(rows: list[dict]) -> pd.DataFrame:
    """Every column of the rows, the known ones first (run-specific ones included)."""
    frame = pd.DataFrame(rows)
    for column in RESULT_COLUMNS + TRACKING_COLUMNS:
        if column not in frame:
            frame[column] = None
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS + TRACKING_COLUMNS]
    return frame[RESULT_COLUMNS + TRACKING_COLUMNS + extra]


def tracking_path(cfg: Config) -> Path:
    return Path(cfg.train.output_dir) / f"{cfg.data.dataset}-tracking.csv"


def partial_results_path(cfg: Config) -> Path:
    """Where a fan-out with failed class runs leaves its table: beside the dataset's folder, which
    (as the train stage's DVC output) must only ever hold a complete set."""
    return Path(cfg.train.output_dir) / f"{cfg.data.dataset}-results-partial.csv"


def write_results(cfg: Config, rows: list[dict]) -> Path:
    """results.csv (what the settings decide) in the dataset's folder when every class run
    completed, else partial_results_path(cfg) beside it; the run-specific columns in
    tracking_path(cfg), outside it."""
    complete = all(r.get("status") == "completed" for r in rows)
    path = Path(cfg.train.output_dir) / cfg.data.dataset / "results.csv"
    partial = partial_results_path(cfg)
    if not complete:
        path = partial
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = results_frame(rows)
    frame.drop(columns=TRACKING_COLUMNS).to_csv(path, index=False)
    if complete:
        partial.unlink(missing_ok=True)  # an earlier failed run's table: superseded
    frame[["class", "seed", *TRACKING_COLUMNS]].to_csv(tracking_path(cfg), index=False)
    what = "results table" if complete else "partial results (some class runs failed)"
    get_run_logger().info("%s: %s (run ids, versions, attempts: %s)", what, path, tracking_path(cfg))
    return path


def publish_artifacts(cfg: Config, rows: list[dict]) -> None:
    """A table of per-class AUCs and a markdown summary with links to the MLflow runs."""
    dataset = cfg.data.dataset
    table = [
        {k: r.get(k) for k in ("class", "seed", "status", "image_auc", "pixel_auc", "aupro", "error")}
        for r in rows
    ]
    create_table_artifact(
        key=f"fcdd-{class_slug(dataset)}-aucs", table=table, description=f"FCDD per-class AUCs on {dataset}"
    )
    create_markdown_artifact(
        key=f"fcdd-{class_slug(dataset)}-summary",
        markdown=summary_markdown(cfg, rows),
        description="FCDD summary",
    )


def summary_markdown(cfg: Config, rows: list[dict]) -> str:
    done = [r for r in rows if r.get("status") == "completed"]
    lines = [f"# FCDD on {cfg.data.dataset}", "", f"{len(done)} of {len(rows)} class runs completed.", ""]
    if len(done) < len(rows):
        lines[-1:] = [
            "**Failed**: a class run that fails fails the whole run; the rest are listed below.",
            "",
        ]
    for metric in ("image_auc", "pixel_auc", "aupro"):
        values = [r[metric] for r in done if isinstance(r.get(metric), (int, float))]
        if values:
            lines.append(f"- mean {metric.replace('_', ' ')}: **{sum(values) / len(values):.4f}**")
    lines += [
        "",
        "| class | seed | status | image AUC | pixel AUC | AUPRO | MLflow run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        link = _mlflow_link(cfg, r.get("mlflow_run_id"))
        status = r.get("status", "")
        if status != "completed":
            status = f"{status}: {one_line(str(r.get('error', '')))}"
        cells = [
            r.get("class"),
            r.get("seed"),
            status,
            *(fmt(r.get(m)) for m in ("image_auc", "pixel_auc", "aupro")),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in [*cells, link]) + " |")
    return "\n".join(lines) + "\n"


def _mlflow_link(cfg: Config, run_id: str | None) -> str:
    if not run_id or not cfg.tracking.enabled:
        return ""
    from pipelines.tracking import mlflow_run_url

    return f"[{run_id[:8]}]({mlflow_run_url(cfg, run_id)})"


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))
