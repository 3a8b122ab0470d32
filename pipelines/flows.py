"""Prefect 3 flows: ``fcdd-train-class`` (one dataset, class, seed) and ``fcdd-train`` (the fan-out).

Both read params.yaml + ``section.key=value`` overrides, so a deployment carries no setting of its own.
``orchestration.mode`` picks how the parent runs its classes (pipelines/fanout.py): ``local`` runs
``train_class`` in-process as subflows (``max_parallel`` at a time); ``deployments`` starts one run of
the class deployment per (class, seed) so the workers of the pool share them. A class run trains
holding a GPU slot (pipelines/gpu_slots.py) through ``fcdd.runs.run_one`` (tracked by MLflow when
``tracking.enabled``); the results go to results.csv and artifacts (pipelines/results.py).
See docs/orchestration.md.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.states import Failed

from fcdd.config import DATASETS, Config, load_config
from fcdd.config.loading import parse_override
from fcdd.errors import ConfigError, FCDDError
from fcdd.experiment import canonical_class, run_dir_for
from fcdd.runs import run_one
from fcdd.stage_outputs import check_output_owner
from pipelines.fanout import ClassRunsFailed, run_jobs
from pipelines.gpu_slots import gpu_pinned, on_cpu, training_slot
from pipelines.results import fmt, publish_artifacts, publish_result, write_results
from pipelines.run_log import log_notes, warnings_in_run_log
from pipelines.worker_setup import WorkerSetupError, check_tracking_server

__all__ = [
    "ClassRunsFailed",
    "canonical_class",
    "train_class",
    "train_dataset",
]  # canonical_class: fcdd.experiment's


def load_flow_config(params: str, overrides: list[str] | None = None, dataset: str | None = None) -> Config:
    """The flows' one way to a Config: the params file, the dataset switch, then the overrides."""
    return load_config(params, [*dataset_overrides(params, dataset), *(overrides or [])])


def dataset_overrides(params: str, dataset: str | None) -> list[str]:
    """``data.dataset=X``, and swap the dataset preset for X's when params.yaml defines one."""
    if not dataset:
        return []
    from fcdd.config import preset_definitions

    base = load_config(params)
    presets = set(preset_definitions(params))
    chosen = [p for p in base.preset if p not in presets or p not in DATASETS]
    if dataset in presets:
        chosen.insert(0, dataset)
    return [f"preset={json.dumps(chosen)}", f"data.dataset={dataset}"]


def _tracker(cfg: Config):
    """The MLflow tracker when tracking is on (MLflow is imported only then)."""
    if not cfg.tracking.enabled:
        return None
    from pipelines.tracking import MlflowTracker

    return MlflowTracker()


def check_tracking(cfg: Config) -> None:
    """With tracking on, a tracking server that does not answer is one line naming its URI."""
    if cfg.tracking.enabled:
        from pipelines.tracking import tracking_uri

        check_tracking_server(tracking_uri(cfg))


def heals_on_retry(task, task_run, state) -> bool:
    """Prefect's retry condition: the package's own errors (fcdd.errors.FCDDError: configuration,
    data, settings mismatch, ...) cannot heal by running again and fail at once; crashes, timeouts,
    lost connections and tracking-server outages are retried (orchestration.retries)."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as e:  # noqa: BLE001 - the run's own exception, whatever it is
            error = e
    if isinstance(error, FCDDError):
        get_run_logger().error(
            "%s: %s (not retried: running again cannot mend it)", type(error).__name__, error
        )
        return False
    return True


def retry_options(cfg: Config) -> dict[str, Any]:
    """The class and pack tasks' retry policy (the same for both)."""
    orch = cfg.orchestration
    return {
        "retries": orch.retries,
        "retry_delay_seconds": orch.retry_delay_s,
        "timeout_seconds": orch.timeout_s,
        "retry_condition_fn": heals_on_retry,
    }


def with_output_dir(overrides: list[str] | None, output_dir: str | None) -> list[str]:
    """The flows' ``output_dir`` parameter as the last override (train.output_dir). An override
    ``train.output_dir=`` that names another folder is refused: the parameter (which deployments
    always pass) would otherwise win silently and the runs would land where the user did not look."""
    overrides = list(overrides or [])
    if not output_dir:
        return overrides
    for text in overrides:
        path, value = parse_override(text)
        if (
            path == ["train", "output_dir"]
            and value is not None
            and Path(str(value)) != Path(str(output_dir))
        ):
            raise ConfigError(
                f"train.output_dir given twice: override {value!r} and output_dir parameter "
                f"{str(output_dir)!r}; give the run folder once, as output_dir"
            )
    return [*overrides, f"train.output_dir={json.dumps(str(output_dir))}"]


# ---------------------------------------------------------------- one class run


class EpochLog:
    """Training callbacks: each epoch to the Prefect run log; the first epoch this attempt trained."""

    def __init__(self, epochs: int):
        self.logger = get_run_logger()
        self.epochs = epochs
        self.seen: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.seen.append(int(epoch))
        parts = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items() if k != "epoch"
        )
        self.logger.info("epoch %s/%s %s", epoch, self.epochs, parts)


@task(name="fcdd-fit-class", cache_policy=NO_CACHE, log_prints=True)
def fit_class(
    cfg: Config, cls: str, seed: int, parent_run_id: str | None, restart: bool = False
) -> dict[str, Any]:
    """Train (resuming from the run folder's checkpoint on a retry), evaluate, track; one result row.
    ``restart``: start the run folder afresh, on the first attempt only (a retry resumes)."""
    logger = get_run_logger()
    run_context = TaskRunContext.get()
    attempt = run_context.task_run.run_count if run_context else 1
    cls = canonical_class(cfg, cls)
    checkpoint = run_dir_for(cfg, cls, seed) / "checkpoint.pt"
    logger.info(
        "%s class %r seed %d, attempt %d%s",
        cfg.data.dataset,
        cls,
        seed,
        attempt,
        f", resuming from {checkpoint}" if checkpoint.exists() else "",
    )
    epochs = EpochLog(cfg.train.epochs)
    with warnings_in_run_log() as logged, training_slot(cfg), gpu_pinned(cfg) as pinned:
        row = run_one(
            pinned,
            cls,
            seed,
            tracker=_tracker(pinned),
            callbacks=epochs,
            parent_run_id=parent_run_id,
            restart=restart and attempt == 1,
        )
    row.update(
        status="completed", attempts=attempt, first_epoch=epochs.seen[0] if epochs.seen else None, error=""
    )
    logger.info(
        "image AUC %s, pixel AUC %s", fmt(row.get("image_auc")) or "n/a", fmt(row.get("pixel_auc")) or "n/a"
    )
    log_notes(logger, row, logged)
    return row


@task(name="fcdd-fit-pack", cache_policy=NO_CACHE, log_prints=True)
def fit_pack(
    cfg: Config, jobs: list[tuple[str, int]], parent_run_id: str | None, restart: bool = False
) -> list[dict[str, Any]]:
    """Train K (class, seed) runs as one packed model (fcdd/training/packed.py) holding ONE training slot, then
    evaluate and track each as its own run (run folder, MLflow run, registry version)."""
    from fcdd.experiment import train_pack

    logger = get_run_logger()
    run_context = TaskRunContext.get()
    attempt = run_context.task_run.run_count if run_context else 1
    jobs = [(canonical_class(cfg, c), int(s)) for c, s in jobs]
    logger.info("%s: packed training of %d runs: %s", cfg.data.dataset, len(jobs), jobs)
    rows = []
    with warnings_in_run_log() as logged, training_slot(cfg), gpu_pinned(cfg) as pinned:
        if on_cpu(pinned):
            logger.warning(
                "orchestration.pack on a CPU is slower than one run at a time (docs/benchmarks.md)"
            )
        train_pack(pinned, jobs, restart=restart and attempt == 1)
        for cls, seed in jobs:  # each finds its training complete: evaluation, tracking, registry
            epochs = EpochLog(pinned.train.epochs)
            row = run_one(
                pinned, cls, seed, tracker=_tracker(pinned), callbacks=epochs, parent_run_id=parent_run_id
            )
            row.update(status="completed", attempts=attempt, first_epoch=None, error="", packed=len(jobs))
            rows.append(row)
    for row in rows:
        log_notes(logger, row, logged)
    return rows


@flow(name="fcdd-train-class")
def train_class(
    cls: str | int,  # int too: `prefect deployment run ... -p cls=0` sends a JSON number
    seed: int = 0,
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    parent_run_id: str | None = None,
    pack: list[list[Any]] | None = None,
    restart: bool = False,
    output_dir: str | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Train and evaluate one (dataset, class, seed); retries resume from the last checkpoint.
    With ``pack`` ([[class, seed], ...]) train those runs together as one packed model and return
    their rows (one result artifact each). ``restart``: discard what an earlier run left in the run
    folder (fcdd train --restart); ``output_dir``: train.output_dir for this run."""
    cfg = load_flow_config(params, with_output_dir(overrides, output_dir))
    check_output_owner(cfg)  # a DVC stage's output is that stage's alone
    try:
        check_tracking(cfg)  # before the training, not after it
    except WorkerSetupError as e:
        get_run_logger().error("%s", e)
        return Failed(message=str(e))  # the one line is the run's state message in the UI
    limits = retry_options(cfg)
    if pack:
        jobs = [(str(c), int(s)) for c, s in pack]
        rows = fit_pack.with_options(**limits)(cfg, jobs, parent_run_id, restart)
        for row in rows:
            publish_result(cfg, row, packed=True)
        return rows
    row = fit_class.with_options(**limits)(cfg, str(cls), int(seed), parent_run_id, restart)
    publish_result(cfg, row)
    return row


# ---------------------------------------------------------------- the fan-out


@flow(name="fcdd-train")
def train_dataset(
    params: str = "params.yaml",
    dataset: str | None = None,
    classes: list[str | int] | None = None,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    restart: bool = False,
    output_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Train every (class, seed) of a dataset; gather one results table (CSV + Prefect artifacts).

    Ends Failed when any class run failed (the state message: how many and the first reason; the
    results and artifacts still list every run), so `prefect deployment run --watch` and the DVC
    stage exit non-zero. ``restart``: every class run starts its run folder afresh;
    ``output_dir``: train.output_dir for every run (the DVC stage's folder is the stage's alone)."""
    from fcdd.data import class_names

    logger = get_run_logger()
    child_overrides = [*dataset_overrides(params, dataset), *with_output_dir(overrides, output_dir)]
    cfg = load_config(params, child_overrides)
    check_output_owner(cfg)
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
        rows = run_jobs(cfg, params, child_overrides, jobs, parent_run_id, train_class, restart)
        if cfg.tracking.enabled:
            from pipelines.tracking import log_dataset_summary

            log_dataset_summary(cfg, parent_run_id, rows)
    write_results(cfg, rows)
    publish_artifacts(cfg, rows)
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        error = ClassRunsFailed(rows)
        logger.error("%s", error)
        return Failed(message=str(error), data=error)  # a direct call raises it; .rows has every row
    return rows


@contextlib.contextmanager
def _parent_run(cfg: Config) -> Iterator[str | None]:
    if not cfg.tracking.enabled:  # MLflow is imported only when tracking is on
        yield None
        return
    from pipelines.tracking import dataset_parent_run

    with dataset_parent_run(cfg) as parent_run_id:
        yield parent_run_id


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.flows [--classes 0 1] [-o train.epochs=3]``: the fan-out, in-process;
    exit 1 when a class run failed."""
    import argparse

    from pipelines.results import results_frame

    parser = argparse.ArgumentParser(description="Run the fcdd-train flow (orchestration.mode decides how).")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--classes", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("-o", "--override", action="append", default=[], help="section.key=value")
    parser.add_argument("--output-dir", default=None, help="train.output_dir for every run")
    parser.add_argument("--restart", action="store_true", help="start every run folder afresh")
    args = parser.parse_args(argv)
    state = train_dataset(
        params=args.params,
        dataset=args.dataset,
        classes=args.classes,
        seeds=args.seeds,
        overrides=args.override,
        restart=args.restart,
        output_dir=args.output_dir,
        return_state=True,
    )
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, ClassRunsFailed):
        rows = rows.rows
    if isinstance(rows, BaseException):  # the parent itself failed (configuration, data root, ...)
        print(f"fcdd-train: {rows}", file=sys.stderr)
        return 2 if isinstance(rows, FCDDError) else 1
    table = results_frame(rows)[["class", "seed", "status", "image_auc", "pixel_auc", "error"]]
    print(table.to_string(index=False))
    if not state.is_completed():
        print(f"fcdd-train: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
