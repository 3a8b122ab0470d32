"""MLflow tracking of FCDD experiments: the functions the Prefect flows call.

Layout: one experiment per dataset (``<experiment_prefix>-<dataset>``), one run per (class, seed)
nested under a parent run per dataset. Store: ``MLFLOW_TRACKING_URI`` from the environment wins,
else ``cfg.tracking.uri`` (default: SQLite ``mlruns.db`` plus the local artifact folder
``cfg.tracking.artifact_location``).

A retried (crashed) run continues the SAME MLflow run: it is found by its ``fcdd.run_key`` and
``fcdd.run_dir`` tags and an unfinished status; training resumes from the run folder's checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from fcdd.config import Config
from fcdd.experiment import run_dir_for
from fcdd.runs import run_one
from pipelines import registry, run_page
from pipelines.store_check import creating_store
from pipelines.tracked_run import MlflowRun, quick_requests

# fcdd's own lines say what a run is doing. MLflow's INFO lines (database set-up, input-example
# validation) and, outside a terminal, its artifact transfer bars (carriage-return frames in a log
# file) are noise there; its warnings and errors still show.
logging.getLogger("mlflow").setLevel(logging.WARNING)
if not sys.stderr.isatty():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

UNFINISHED = ("RUNNING", "FAILED", "KILLED")
SUMMARY_METRICS = ("image_auc", "image_aupr", "pixel_auc", "aupro")
DEFAULT_UI = "http://127.0.0.1:5000"  # where `mlflow ui --backend-store-uri <local store>` listens


# The user's MLFLOW_TRACKING_URI, read before anything here calls mlflow.set_tracking_uri: MLflow
# writes that variable itself, and reading it later would send every later run of the process (a
# second flow with another tracking.uri) to the first run's store.
_ENV_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(cfg: Config) -> str:
    return _ENV_TRACKING_URI or cfg.tracking.uri


def experiment_name(cfg: Config) -> str:
    return f"{cfg.tracking.experiment_prefix}-{cfg.data.dataset}"


def run_key(cfg: Config, cls: str, seed: int) -> str:
    return f"{cfg.data.dataset}/{registry.slugify(cls)}/seed{seed}"


def _client(cfg: Config) -> tuple[MlflowClient, str]:
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)  # the fluent API (log_model) follows the same store
    if uri in _opened:
        return MlflowClient(tracking_uri=uri, registry_uri=uri), uri
    with creating_store(uri):  # the stores' tables are created on first use: one process at a time
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _opened.add(uri)
    return client, uri


_opened: set[str] = set()  # stores this process has opened (and so created) already


def ensure_experiment(client: MlflowClient, cfg: Config) -> str:
    """The dataset's experiment id; created with the local artifact folder for local stores."""
    name = experiment_name(cfg)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if registry.local_store_path(client.tracking_uri) is not None:
        location = (Path(cfg.tracking.artifact_location).resolve() / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel run
        return client.get_experiment_by_name(name).experiment_id


def data_version(cfg: Config, root: Path = Path(".")) -> str:
    """The DVC md5 of the data (``data.dvc`` or ``<data.root>.dvc``), else 'untracked'."""
    for dvc_file in (root / "data.dvc", root / f"{cfg.data.root.rstrip('/')}.dvc"):
        if not dvc_file.is_file():
            continue
        try:
            outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
        except yaml.YAMLError as e:
            raise ValueError(f"{dvc_file}: not valid YAML: {e}") from e
        if outs and outs[0].get("md5"):
            return str(outs[0]["md5"])
    return "untracked"


def git_commit(root: Path = Path(".")) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def protocol_for(cfg: Config, cls: str, seed: int, version: str) -> str:
    """What makes two runs' test metrics comparable: the same test split of the same data."""
    parts = [cfg.data.dataset, registry.slugify(cls), f"data={version}"]
    if cfg.anomalies.kind == "semi":  # real defects moved from test to train
        parts.append(f"semi_k={cfg.anomalies.semi_k}")
    if cfg.data.test_limit is not None:  # a seeded subset of the test split
        parts += [f"test_limit={cfg.data.test_limit}", f"seed={seed}"]
    if cfg.data.dataset == "folder":  # a seeded nominal hold-out
        parts += [f"test_ratio={cfg.data.folder.test_ratio}", f"seed={seed}"]
    return "/".join(parts)


def find_unfinished_run(
    client: MlflowClient, experiment_id: str, key: str, run_dir: Path, checkpoint_uri: str | None = None
) -> str | None:
    """The newest RUNNING/FAILED/KILLED run of this (dataset, class, seed) and run folder; with a
    shared checkpoint folder (train.checkpoint_uri), of that folder: a run resumed on another worker
    (another run folder) continues the lost run's MLflow run instead of leaving it orphaned."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`fcdd.run_key` = '{key}'",  # slugs only: safe to quote
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        tags = run.data.tags
        same = (
            tags.get("fcdd.checkpoint_uri") == checkpoint_uri
            if checkpoint_uri
            else tags.get("fcdd.run_dir") == str(run_dir)
        )
        if run.info.status in UNFINISHED and same:
            return run.info.run_id
    return None


TRACKING_KEYS = (
    "mlflow_run_id",
    "model_name",
    "model_version",
    "champion",
    "registry_note",
)  # a tracked row's own columns


class MlflowTracker:
    """fcdd.runs.Tracker for MLflow: one run per (dataset, class, seed) in the dataset's experiment,
    tagged, with every config value as a param; a retry continues the run it left unfinished."""

    @contextlib.contextmanager
    def run(self, cfg: Config, cls: str, seed: int, parent_run_id: str | None = None) -> Iterator[MlflowRun]:
        client, uri = _client(cfg)
        with_onnx = _onnx_available(cfg)  # said before training, not after
        undecided = registry.promotion_unavailable(uri) if cfg.tracking.register else None
        if undecided:  # likewise: the version will be registered, without a champion decision
            warnings.warn(f"versions will be registered as challenger only: {undecided}", stacklevel=2)
        experiment_id = ensure_experiment(client, cfg)
        run_dir = run_dir_for(cfg, cls, seed).resolve()
        key, version = run_key(cfg, cls, seed), data_version(cfg)
        tags = run_tags(cfg, cls, seed, run_dir, key, version)
        run_id = find_unfinished_run(client, experiment_id, key, run_dir, cfg.train.checkpoint_uri)
        if run_id is None:
            run_id = client.create_run(experiment_id, run_name=f"{cls}-seed{seed}", tags=tags).info.run_id
        else:  # a retry: continue the same run, count the attempt
            attempts = int(client.get_run(run_id).data.tags.get("fcdd.attempts", "1")) + 1
            client.set_tag(run_id, "fcdd.attempts", str(attempts))
        if parent_run_id:
            client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
        _log_params(client, run_id, cfg)
        run_page.log_training_data(client, run_id, cfg, cls, version)
        tracked = MlflowRun(client, uri, run_id, cfg, cls, tags[registry.TAG_PROTOCOL], with_onnx)
        # The run ends FAILED if anything inside raises; nested if the caller has a run open.
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
        status = "KILLED"
        try:
            yield tracked
            status = "FINISHED"
        except Exception:
            status = "FAILED"
            raise
        finally:
            _end_run(tracked, status)

    def describe(self, row: dict[str, Any]) -> str:
        note = f"; MLflow run {row.get('mlflow_run_id')}"
        if row.get("tracking") == "incomplete":
            return note + " (incomplete: the tracking store did not answer)"
        if row.get("model_name"):
            note += f", registered {row['model_name']} version {row['model_version']}"
            note += " (champion)" if row.get("champion") else ""
        return note


def run_tags(cfg: Config, cls: str, seed: int, run_dir: Path, key: str, version: str) -> dict[str, str]:
    commit = git_commit()
    return {
        "fcdd.run_key": key,
        "fcdd.run_dir": str(run_dir),
        **({"fcdd.checkpoint_uri": cfg.train.checkpoint_uri} if cfg.train.checkpoint_uri else {}),
        "fcdd.dataset": cfg.data.dataset,
        "fcdd.class": cls,
        "fcdd.seed": str(seed),
        "fcdd.data_version": version,
        "fcdd.git_commit": commit,
        "mlflow.source.git.commit": commit,
        **run_page.source_tags(),
        registry.TAG_PROTOCOL: protocol_for(cfg, cls, seed, version),
        registry.TAG_OBJECTIVE: cfg.train.objective,
    }


def tracker(cfg: Config) -> MlflowTracker | None:
    """The MLflow tracker when ``tracking.enabled``, else None."""
    return MlflowTracker() if cfg.tracking.enabled else None


def tracked_experiment(
    cfg: Config,
    cls: str,
    seed: int,
    parent_run_id: str | None = None,
    callbacks: Any = None,
    restart: bool = False,
) -> dict:
    """One experiment through ``fcdd.runs.run_one`` with MLflow tracking (and registration) when
    ``tracking.enabled``; its result row with the tracking columns (None when tracking is off)."""
    row = run_one(
        cfg,
        cls,
        seed,
        tracker=tracker(cfg),
        callbacks=callbacks,
        restart=restart,
        parent_run_id=parent_run_id,
    )
    return row | {k: row.get(k) for k in TRACKING_KEYS}


def _onnx_available(cfg: Config) -> bool:
    """tracking.onnx, when the export extra is installed; a warning line when it is not."""
    if not (cfg.tracking.register and cfg.tracking.onnx):
        return False
    if cfg.train.objective == "hsc":  # gradient heatmaps need autograd: no exported graph
        print(
            "tracking.onnx: HSC models carry no ONNX copy (their heatmaps are input gradients)",
            file=sys.stderr,
        )
        return False
    if importlib.util.find_spec("onnx") is None:
        warnings.warn(
            "tracking.onnx: the onnx package is missing (pip install 'fcdd[export]'): the registry "
            "version gets no ONNX file (set tracking.onnx=false to silence this)",
            stacklevel=2,
        )
        return False
    return True


def _log_params(client: MlflowClient, run_id: str, cfg: Config) -> None:
    """All config values; on a retry only those not logged yet (MLflow params are immutable)."""
    logged = client.get_run(run_id).data.params
    params = [Param(k, str(v)[:6000]) for k, v in cfg.flat().items() if k not in logged]
    for start in range(0, len(params), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=params[start : start + 100])


def _end_run(tracked: MlflowRun, status: str) -> None:
    """End the active MLflow run; a store that is away leaves it unfinished (a later ``fcdd
    train`` continues it) instead of holding the command for MLflow's minutes of retries."""
    if not (tracked.incomplete or tracked.away):
        mlflow.end_run(status)
        return
    with quick_requests():
        try:  # an incomplete run ends FAILED where the store answers: the next `fcdd train` continues it
            mlflow.end_run("FAILED" if status == "FINISHED" else status)
            return
        except Exception:  # noqa: BLE001 (the store is away: the run stays unfinished there)
            pass
    stack = mlflow.tracking.fluent._active_run_stack.get()  # end_run pops only after the store answered
    if stack and stack[-1].info.run_id == tracked.run_id:
        stack.pop()
    os.environ.pop("MLFLOW_RUN_ID", None)


@contextlib.contextmanager
def dataset_parent_run(cfg: Config) -> Iterator[str | None]:
    """A parent run for one dataset; yields its id (None when tracking is off)."""
    if not cfg.tracking.enabled:
        yield None
        return
    client, _ = _client(cfg)
    experiment_id = ensure_experiment(client, cfg)
    tags = {"fcdd.role": "dataset", "fcdd.dataset": cfg.data.dataset, "fcdd.git_commit": git_commit()}
    tags["fcdd.data_version"] = data_version(cfg)
    run = client.create_run(experiment_id, run_name=f"{cfg.data.dataset}-summary", tags=tags)
    status = "FAILED"
    try:
        yield run.info.run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status)


def log_dataset_summary(cfg: Config, parent_run_id: str | None, rows: list[dict]) -> dict[str, float]:
    """Mean metrics over classes (each class: mean over seeds) and a results table on the parent run."""
    if not rows:
        raise ValueError("log_dataset_summary: no result rows to summarise")
    table = pd.DataFrame(rows)
    if "class" not in table:
        raise ValueError(f"log_dataset_summary: rows need a 'class' key, got {sorted(table.columns)}")
    columns = [c for c in SUMMARY_METRICS if c in table and table[c].notna().any()]
    if not columns:  # every class failed: nothing to average, the results table still gets written
        return {}
    per_class = table.groupby("class")[columns].agg(["mean", "std"])
    per_class.columns = [f"{m}_{stat}" for m, stat in per_class.columns]
    means = {f"mean_{m}": float(per_class[f"{m}_mean"].mean()) for m in columns}
    if not cfg.tracking.enabled or parent_run_id is None:
        return means
    client, _ = _client(cfg)
    client.log_batch(parent_run_id, metrics=[Metric(k, v, _now(), 0) for k, v in means.items()])
    client.log_batch(
        parent_run_id, params=[Param("n_classes", str(len(per_class))), Param("n_runs", str(len(table)))]
    )
    with tempfile.TemporaryDirectory() as tmp:
        per_class.reset_index().to_csv(Path(tmp) / "results_per_class.csv", index=False)
        table.to_csv(Path(tmp) / "results_runs.csv", index=False)
        client.log_artifacts(parent_run_id, tmp, artifact_path="results")
    return means


def mlflow_run_url(cfg: Config, run_id: str) -> str:
    """A link to the run in the MLflow UI (for local stores: where `mlflow ui` serves by default)."""
    client, uri = _client(cfg)
    experiment_id = client.get_run(run_id).info.experiment_id
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _now() -> int:
    return int(time.time() * 1000)
