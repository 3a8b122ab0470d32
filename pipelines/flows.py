"""Prefect 3 flows: ``fcdd-train-class`` (one dataset, class, seed) and ``fcdd-train`` (the fan-out).

Both read params.yaml + ``section.key=value`` overrides, so a deployment carries no setting of its own.
``orchestration.mode`` picks how the parent runs its classes: ``local`` runs ``train_class`` in-process
as subflows (``max_parallel`` at a time); ``deployments`` starts one run of the class deployment per
(class, seed) so the workers of the pool share them. See docs/orchestration.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import fcntl
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Failed

from fcdd.config import Config, load_config
from pipelines.worker_setup import WorkerSetupError, check_tracking_server, is_setup_failure

# Test-only hook: raise once after this epoch (per run folder) to exercise retry + resume.
FAIL_AFTER_EPOCH_ENV = "FCDD_FAIL_AFTER_EPOCH"
# Lease of a held GPU slot, renewed while the run lives: a run whose process or host is lost frees
# its slot this long after (Prefect's default, 300 s, kept the resubmitted run waiting that long).
SLOT_LEASE_S = 60
# The columns of results.csv, in order; a row may carry more (they follow).
RESULT_COLUMNS = [
    "dataset", "class", "seed", "status", "image_auc", "pixel_auc", "aupro", "image_aupr",
    "epochs", "run_dir", "error",
]  # fmt: skip
# What differs from one run of the same settings to the next: ids, registry versions, retries. results.csv
# lies in the train stage's DVC output, whose hash must repeat, so these go to <dataset>-tracking.csv
# beside the dataset's folder (with class and seed to join on).
TRACKING_COLUMNS = [
    "mlflow_run_id", "flow_run_id", "model_name", "model_version", "champion", "attempts", "first_epoch",
    "resubmissions",
]  # fmt: skip


def load_flow_config(params: str, overrides: list[str] | None = None, dataset: str | None = None) -> Config:
    """The flows' one way to a Config: the params file, the dataset switch, then the overrides."""
    return load_config(params, [*dataset_overrides(params, dataset), *(overrides or [])])


def dataset_overrides(params: str, dataset: str | None) -> list[str]:
    """``data.dataset=X``, and swap the dataset preset for X's when params.yaml defines one."""
    if not dataset:
        return []
    base = load_config(params)
    presets = _preset_names(params)
    chosen = [p for p in base.preset if p not in presets or p not in _dataset_names()]
    if dataset in presets:
        chosen.insert(0, dataset)
    return [f"preset={json.dumps(chosen)}", f"data.dataset={dataset}"]


def canonical_class(cfg: Config, cls: str) -> str:
    """The dataset's own name of a class given by name, slug or index ('0' -> 't-shirt-top' on fmnist).

    Run folders and result rows use it. A class the dataset does not know stays as given: its run
    then fails with the data module's error, which names it.
    """
    from fcdd.data import class_names
    from fcdd.data.training_set import resolve_class

    try:
        names = class_names(cfg)
        return names[resolve_class(str(cls), names, cfg.data.dataset)]
    except (ValueError, OSError):  # DataError is a ValueError
        return str(cls)


def _preset_names(params: str) -> set[str]:
    import yaml

    raw = yaml.safe_load(Path(params).read_text()) or {}
    return set((raw.get("presets") or {}).keys())


def _dataset_names() -> set[str]:
    from fcdd.config import DATASETS

    return set(DATASETS)


# ---------------------------------------------------------------- one class


class _EpochForwarder:
    """Engine callbacks: forward each epoch to the Prefect run log; the test-only failure hook."""

    def __init__(self, run_dir: Path, epochs: int):
        self.logger = get_run_logger()
        self.run_dir = run_dir
        self.epochs = epochs
        self.seen: list[int] = []
        fail_after = os.environ.get(FAIL_AFTER_EPOCH_ENV, "").strip()
        self.fail_after = int(fail_after) if fail_after else None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.seen.append(int(epoch))
        parts = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items() if k != "epoch"
        )
        self.logger.info("epoch %s/%s %s", epoch, self.epochs, parts)
        marker = self.run_dir / ".injected-failure"  # a file, so "once" holds across processes too
        if self.fail_after is not None and epoch == self.fail_after and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure after epoch {epoch} ({FAIL_AFTER_EPOCH_ENV})")


@contextlib.contextmanager
def training_slot(cfg: Config) -> Iterator[None]:
    """Hold one slot of the global concurrency limit (one per GPU) for the length of a training.

    A missing limit (the local default) is not an error: the run goes ahead without it.
    """
    logger = get_run_logger()
    name = cfg.orchestration.concurrency_limit
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        logger.info(
            "global concurrency limit %r not found: running without it "
            "(create one slot per GPU: prefect gcl create %s --limit <GPUs>)",
            name,
            name,
        )
        yield
        return
    logger.info("waiting for a slot of global concurrency limit %r", name)
    with concurrency(name, occupy=1, strict=True, lease_duration=SLOT_LEASE_S):
        logger.info("holding a slot of %r", name)
        yield


@contextlib.contextmanager
def gpu_pinned(cfg: Config) -> Iterator[Config]:
    """Pin the run to one GPU: the worker's CUDA_VISIBLE_DEVICES wins; else claim a free local GPU.

    The claim is an exclusive lock file per GPU index, so runs on one machine (subflows or worker
    processes) never share a GPU; the device goes into ``cfg.train.device`` (``cuda:i``) because
    CUDA_VISIBLE_DEVICES cannot change once CUDA is initialised in this process.
    """
    import torch

    logger = get_run_logger()
    wants_cuda = cfg.train.device in ("auto", "cuda") and torch.cuda.is_available()
    if not wants_cuda or os.environ.get("CUDA_VISIBLE_DEVICES"):
        if wants_cuda:
            logger.info("CUDA_VISIBLE_DEVICES=%s from the worker", os.environ["CUDA_VISIBLE_DEVICES"])
        yield cfg
        return
    with _claim_gpu(torch.cuda.device_count()) as index:
        cfg = copy.deepcopy(cfg)  # a retry gets the caller's config back and claims afresh
        cfg.train.device = f"cuda:{index}"
        logger.info("pinned to GPU %d", index)
        yield cfg


@contextlib.contextmanager
def _claim_gpu(count: int, poll_s: float = 5.0) -> Iterator[int]:
    lock_dir = Path(tempfile.gettempdir())
    while True:
        for index in range(count):
            handle = open(lock_dir / f"fcdd-gpu-{index}.lock", "w")  # noqa: SIM115 (held while training)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield index
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_s)  # every GPU busy (a run outside the concurrency limit): wait


@task(name="fcdd-fit-class", cache_policy=NO_CACHE)
def fit_class(cfg: Config, cls: str, seed: int, parent_run_id: str | None) -> dict[str, Any]:
    """Train (resuming from the run folder's checkpoint on a retry), evaluate, track; one result row."""
    from fcdd.experiment import run_dir_for

    logger = get_run_logger()
    run_context = TaskRunContext.get()
    attempt = run_context.task_run.run_count if run_context else 1
    cls = canonical_class(cfg, cls)
    run_dir = run_dir_for(cfg, cls, seed)
    resuming = (run_dir / "checkpoint.pt").exists()
    logger.info(
        "%s class %r seed %d, attempt %d%s",
        cfg.data.dataset,
        cls,
        seed,
        attempt,
        f", resuming from {run_dir / 'checkpoint.pt'}" if resuming else "",
    )
    forwarder = _EpochForwarder(run_dir, cfg.train.epochs)
    with training_slot(cfg), gpu_pinned(cfg) as pinned:
        row = _run_experiment(pinned, cls, seed, parent_run_id, forwarder)
    row.update(
        status="completed",
        attempts=attempt,
        first_epoch=forwarder.seen[0] if forwarder.seen else None,
        error="",
    )
    logger.info(
        "image AUC %s, pixel AUC %s", _fmt(row.get("image_auc")) or "n/a", _fmt(row.get("pixel_auc")) or "n/a"
    )
    if row.get("warning"):
        logger.warning("%s", row["warning"])
    return row


def _run_experiment(cfg: Config, cls: str, seed: int, parent_run_id: str | None, callbacks: Any) -> dict:
    """The experiment through MLflow tracking when enabled, else straight from fcdd."""
    if cfg.tracking.enabled:
        from pipelines.tracking import tracked_experiment

        if "callbacks" in inspect.signature(tracked_experiment).parameters:
            row = dict(tracked_experiment(cfg, cls, seed, parent_run_id=parent_run_id, callbacks=callbacks))
        else:  # an older tracking module: no per-epoch forwarding to Prefect
            get_run_logger().warning("pipelines.tracking takes no callbacks: epoch logs go to MLflow only")
            row = dict(tracked_experiment(cfg, cls, seed, parent_run_id=parent_run_id))
        row["run_dir"] = str(row.get("run_dir", ""))
        return row
    from fcdd.experiment import run_experiment

    result = run_experiment(cfg, cls, seed, callbacks=callbacks)
    row = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, type(None)))}
    row.update(
        dataset=result.dataset,
        seed=result.seed,
        run_dir=str(result.run_dir),
        epochs=len(result.history),
        mlflow_run_id=None,
    )
    row["class"] = result.cls
    return row


@task(name="fcdd-fit-pack", cache_policy=NO_CACHE)
def fit_pack(cfg: Config, jobs: list[tuple[str, int]], parent_run_id: str | None) -> list[dict[str, Any]]:
    """Train K (class, seed) runs as one packed model (fcdd/training/packed.py) holding ONE training slot, then
    evaluate and track each as its own run (run folder, MLflow run, registry version)."""
    from fcdd.experiment import train_pack

    logger = get_run_logger()
    jobs = [(canonical_class(cfg, c), int(s)) for c, s in jobs]
    logger.info("%s: packed training of %d runs: %s", cfg.data.dataset, len(jobs), jobs)
    rows = []
    with training_slot(cfg), gpu_pinned(cfg) as pinned:
        if pinned.train.device == "cpu" or (pinned.train.device == "auto" and not _cuda()):
            logger.warning(
                "orchestration.pack on a CPU is slower than one run at a time (docs/benchmarks.md)"
            )
        train_pack(pinned, jobs)
        for cls, seed in jobs:  # each finds its training complete: evaluation, tracking, registry
            forwarder = _EpochForwarder(run_dir_for_flow(pinned, cls, seed), pinned.train.epochs)
            row = _run_experiment(pinned, cls, seed, parent_run_id, forwarder)
            row.update(status="completed", attempts=1, first_epoch=None, error="", packed=len(jobs))
            rows.append(row)
    return rows


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_dir_for_flow(cfg: Config, cls: str, seed: int) -> Path:
    from fcdd.experiment import run_dir_for

    return run_dir_for(cfg, cls, seed)


@flow(name="fcdd-train-class")
def train_class(
    cls: str | int,  # int too: `prefect deployment run ... -p cls=0` sends a JSON number
    seed: int = 0,
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    parent_run_id: str | None = None,
    pack: list[list[Any]] | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Train and evaluate one (dataset, class, seed); retries resume from the last checkpoint.
    With ``pack`` ([[class, seed], ...]) train those runs together as one packed model and return
    their rows (one result artifact each)."""
    cfg = load_flow_config(params, overrides)
    orch = cfg.orchestration
    try:
        check_tracking(cfg)  # before the training, not after it
    except WorkerSetupError as e:
        get_run_logger().error("%s", e)
        return Failed(message=str(e))  # the one line is the run's state message in the UI
    if pack:
        fit_packed = fit_pack.with_options(
            retries=orch.retries, retry_delay_seconds=orch.retry_delay_s, timeout_seconds=orch.timeout_s
        )
        rows = fit_packed(cfg, [(str(c), int(s)) for c, s in pack], parent_run_id)
        for row in rows:
            create_table_artifact(
                key=result_artifact_key(cfg.data.dataset, row["class"], int(row["seed"])),
                table=[_plain_row(row)],
                description=f"FCDD result: {cfg.data.dataset}, class {row['class']}, seed {row['seed']} (packed)",
            )
        return rows
    fit = fit_class.with_options(
        retries=orch.retries, retry_delay_seconds=orch.retry_delay_s, timeout_seconds=orch.timeout_s
    )
    row = fit(cfg, str(cls), int(seed), parent_run_id)
    create_table_artifact(
        key=result_artifact_key(cfg.data.dataset, row["class"], int(seed)),
        table=[_plain_row(row)],
        description=f"FCDD result: {cfg.data.dataset}, class {cls}, seed {seed}",
    )
    return row


def result_artifact_key(dataset: str, cls: str, seed: int) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    from fcdd.experiment import class_slug

    return f"fcdd-{class_slug(dataset)}-{class_slug(cls)}-seed{seed}"


# ---------------------------------------------------------------- the fan-out


@flow(name="fcdd-train")
def train_dataset(
    params: str = "params.yaml",
    dataset: str | None = None,
    classes: list[str | int] | None = None,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Train every (class, seed) of a dataset; gather one results table (CSV + Prefect artifacts)."""
    from fcdd.data import class_names

    logger = get_run_logger()
    child_overrides = [*dataset_overrides(params, dataset), *(overrides or [])]
    cfg = load_config(params, child_overrides)
    classes = [canonical_class(cfg, c) for c in (classes or cfg.data.classes or class_names(cfg))]
    seeds = [int(s) for s in (seeds or cfg.train.seeds)]
    jobs = [(c, s) for c in classes for s in seeds]
    logger.info(
        "%s: %d classes x %d seeds in %s mode",
        cfg.data.dataset,
        len(classes),
        len(seeds),
        cfg.orchestration.mode,
    )
    check_tracking(cfg)
    with _parent_run(cfg) as parent_run_id:
        if cfg.orchestration.pack > 1:
            rows = _run_as_packs(cfg, params, child_overrides, jobs, parent_run_id)
        elif cfg.orchestration.mode == "deployments":
            rows = _run_as_deployments(cfg, params, child_overrides, jobs, parent_run_id)
        else:
            rows = _run_as_subflows(cfg, params, child_overrides, jobs, parent_run_id)
        if cfg.tracking.enabled:
            from pipelines.tracking import log_dataset_summary

            log_dataset_summary(cfg, parent_run_id, rows)
    write_results(cfg, rows)
    publish_artifacts(cfg, rows)
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        logger.warning("%d of %d class runs failed: %s", len(failed), len(rows), [r["class"] for r in failed])
    return rows


def check_tracking(cfg: Config) -> None:
    """With tracking on, a tracking server that does not answer is one line naming its URI."""
    if cfg.tracking.enabled:
        from pipelines.tracking import tracking_uri

        check_tracking_server(tracking_uri(cfg))


@contextlib.contextmanager
def _parent_run(cfg: Config) -> Iterator[str | None]:
    if not cfg.tracking.enabled:  # MLflow is imported only when tracking is on
        yield None
        return
    from pipelines.tracking import dataset_parent_run

    with dataset_parent_run(cfg) as parent_run_id:
        yield parent_run_id


def _run_as_subflows(cfg: Config, params: str, overrides: list[str], jobs: list, parent_run_id) -> list[dict]:
    def one(job: tuple[str, int]) -> dict:
        cls, seed = job
        state = train_class(
            cls=cls,
            seed=seed,
            params=params,
            overrides=overrides,
            parent_run_id=parent_run_id,
            return_state=True,
        )
        if state.is_completed():
            return state.result()
        return failed_row(cfg, cls, seed, _state_error(state))

    return _map_in_threads(one, jobs, cfg.orchestration.max_parallel)


def _run_as_deployments(
    cfg: Config, params: str, overrides: list[str], jobs: list, parent_run_id
) -> list[dict]:
    orch = cfg.orchestration

    def one(job: tuple[str, int]) -> dict:
        cls, seed = job
        parameters = {"cls": cls, "seed": seed, "params": params, "overrides": overrides}
        parameters["parent_run_id"] = parent_run_id
        run, crashed = resubmit_crashed(
            lambda attempt: run_deployment(
                name=orch.deployment,
                parameters=parameters,
                timeout=orch.timeout_s,
                flow_run_name=f"{cfg.data.dataset}-{cls}-seed{seed}"
                + (f"-resubmit{attempt - 1}" if attempt > 1 else ""),
            ),
            orch.retries,
            f"{cfg.data.dataset} class {cls} seed {seed}",
        )
        extra = {"flow_run_id": str(run.id), "resubmissions": crashed}
        if run.state is not None and run.state.is_completed():
            row = _row_from_artifact(run.id)
            if row is not None:
                return {**row, **extra}
            return {
                **failed_row(cfg, cls, seed, f"flow run {run.id} completed without its result artifact"),
                **extra,
            }
        message = run.state.message if run.state is not None else "no state"
        state_name = run.state.name if run.state is not None else "unknown"
        return {**failed_row(cfg, cls, seed, one_line(f"{state_name}: {message}")), **extra}

    # Each thread only waits on the API; the workers and the concurrency limit bound real work.
    return _map_in_threads(one, jobs, len(jobs))


def resubmit_crashed(submit: Callable[[int], Any], retries: int, what: str) -> tuple[Any, int]:
    """Run ``submit(attempt)`` (a class deployment run, waited for) again while its flow run ends
    lost, at most ``retries`` more times. Lost: Crashed, Prefect's verdict on a lost run (the worker
    reports a killed process; the zombie automation, docs/orchestration.md, marks a run whose
    heartbeats stopped, e.g. its host vanished), or Failed because its worker could not prepare it
    (clone, dvc pull, tracking server: pipelines.worker_setup), which another worker may. Any other
    Failed run already had its in-process retries. The new run resumes from the shared checkpoint
    (train.checkpoint_uri). Returns (last run, number of lost runs)."""
    logger = get_run_logger()
    crashed = 0
    while True:
        run = submit(crashed + 1)
        if not _lost(run.state) or crashed >= retries:
            return run, crashed
        crashed += 1
        logger.warning(
            "%s: flow run %s %s (%s); resubmitting (%d of %d)",
            what,
            run.id,
            "crashed" if run.state.is_crashed() else "failed on its worker",
            one_line(run.state.message or "no message"),
            crashed,
            retries,
        )


def _lost(state) -> bool:
    return state is not None and (
        state.is_crashed() or (state.is_failed() and is_setup_failure(state.message))
    )


def one_line(text: str, limit: int = 300) -> str:
    """A state message fit for one results.csv cell and one UI line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _run_as_packs(cfg: Config, params: str, overrides: list[str], jobs: list, parent_run_id) -> list[dict]:
    """orchestration.pack: K runs per class run (a subflow, or a deployment run on the pool)."""
    orch = cfg.orchestration
    packs = [jobs[i : i + orch.pack] for i in range(0, len(jobs), orch.pack)]

    def one(pack: list[tuple[str, int]]) -> list[dict]:
        failed = lambda error: [failed_row(cfg, c, s, error) for c, s in pack]  # noqa: E731
        if orch.mode == "deployments":
            run = run_deployment(
                name=orch.deployment,
                parameters={
                    "cls": pack[0][0],
                    "seed": pack[0][1],
                    "params": params,
                    "overrides": overrides,
                    "parent_run_id": parent_run_id,
                    "pack": [list(job) for job in pack],
                },
                timeout=orch.timeout_s,
                flow_run_name=f"{cfg.data.dataset}-pack-{pack[0][0]}-{len(pack)}",
            )
            if run.state is None or not run.state.is_completed():
                return failed(
                    f"{run.state.name if run.state else 'unknown'}: {run.state.message if run.state else ''}"
                )
            published = _rows_from_artifacts(run.id)
            rows = []
            for c, s in pack:
                key = result_artifact_key(cfg.data.dataset, canonical_class(cfg, c), int(s))
                row = published.get(key) or failed_row(cfg, c, s, f"flow run {run.id} has no artifact {key}")
                rows.append({**row, "flow_run_id": str(run.id)})
            return rows
        state = train_class(
            cls=pack[0][0],
            seed=pack[0][1],
            params=params,
            overrides=overrides,
            parent_run_id=parent_run_id,
            pack=[list(job) for job in pack],
            return_state=True,
        )
        return state.result() if state.is_completed() else failed(_state_error(state))

    groups = _map_in_threads(one, packs, orch.max_parallel if orch.mode == "local" else len(packs))
    return [row for group in groups for row in group]


def _rows_from_artifacts(flow_run_id) -> dict[str, dict]:
    """The result rows a (packed) class run published, by artifact key."""
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


def _map_in_threads(fn: Callable[[Any], dict], items: list, max_workers: int) -> list[dict]:
    """fn over items, max_workers at a time, each thread inside the parent's Prefect context."""
    if max_workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
        return [f.result() for f in futures]


def _row_from_artifact(flow_run_id) -> dict | None:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    for artifact in artifacts:
        if artifact.type == "table" and artifact.key and artifact.key.startswith("fcdd-"):
            data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            return dict(data[0])
    return None


def failed_row(cfg: Config, cls: str, seed: int, error: str) -> dict[str, Any]:
    return {"dataset": cfg.data.dataset, "class": cls, "seed": seed, "status": "failed", "error": error}


def _state_error(state) -> str:
    try:
        state.result(raise_on_failure=True)
    except BaseException as e:  # the class run's own exception, when it is still there
        return f"{type(e).__name__}: {e}"
    return state.message or state.name


# ---------------------------------------------------------------- the report


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


def write_results(cfg: Config, rows: list[dict]) -> Path:
    """results.csv (what the settings decide) in the dataset's folder; the run-specific columns in
    tracking_path(cfg), outside it."""
    path = Path(cfg.train.output_dir) / cfg.data.dataset / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = results_frame(rows)
    frame.drop(columns=TRACKING_COLUMNS).to_csv(path, index=False)
    frame[["class", "seed", *TRACKING_COLUMNS]].to_csv(tracking_path(cfg), index=False)
    get_run_logger().info("results table: %s (run ids, versions, attempts: %s)", path, tracking_path(cfg))
    return path


def publish_artifacts(cfg: Config, rows: list[dict]) -> None:
    """A table of per-class AUCs and a markdown summary with links to the MLflow runs."""
    dataset = cfg.data.dataset
    table = [
        {k: r.get(k) for k in ("class", "seed", "status", "image_auc", "pixel_auc", "aupro", "error")}
        for r in rows
    ]
    create_table_artifact(
        key=f"fcdd-{_key(dataset)}-aucs", table=table, description=f"FCDD per-class AUCs on {dataset}"
    )
    create_markdown_artifact(
        key=f"fcdd-{_key(dataset)}-summary", markdown=summary_markdown(cfg, rows), description="FCDD summary"
    )


def summary_markdown(cfg: Config, rows: list[dict]) -> str:
    done = [r for r in rows if r.get("status") == "completed"]
    lines = [f"# FCDD on {cfg.data.dataset}", "", f"{len(done)} of {len(rows)} class runs completed.", ""]
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
            status = f"{status}: {str(r.get('error', ''))[:120]}"
        cells = [
            r.get("class"),
            r.get("seed"),
            status,
            *(_fmt(r.get(m)) for m in ("image_auc", "pixel_auc", "aupro")),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in [*cells, link]) + " |")
    return "\n".join(lines) + "\n"


def _mlflow_link(cfg: Config, run_id: str | None) -> str:
    if not run_id or not cfg.tracking.enabled:
        return ""
    from pipelines.tracking import mlflow_run_url

    return f"[{run_id[:8]}]({mlflow_run_url(cfg, run_id)})"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _key(text: str) -> str:
    from fcdd.experiment import class_slug

    return class_slug(text)


def _plain_row(row: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in row.items()}


def main(argv: list[str] | None = None) -> None:
    """``python -m pipelines.flows [--classes 0 1] [-o train.epochs=3]``: the fan-out, in-process."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the fcdd-train flow (orchestration.mode decides how).")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--classes", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("-o", "--override", action="append", default=[], help="section.key=value")
    args = parser.parse_args(argv)
    rows = train_dataset(
        params=args.params,
        dataset=args.dataset,
        classes=args.classes,
        seeds=args.seeds,
        overrides=args.override,
    )
    print(
        results_frame(rows)[["class", "seed", "status", "image_auc", "pixel_auc", "error"]].to_string(
            index=False
        )
    )


if __name__ == "__main__":
    main()
