"""How the parent flow runs its (class, seed) jobs: in-process subflows (``orchestration.mode:
local``) or runs of the class deployment that the pool's workers share (``deployments``); with
``orchestration.pack: K``, K jobs per class run. A deployment run that ends lost (Crashed, or Failed
because its worker could not prepare it) is resubmitted, a packed one like a single one.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import get_run_logger
from prefect.deployments import run_deployment

from fcdd.config import Config
from fcdd.experiment import canonical_class
from pipelines.results import failed_row, one_line, result_artifact_key, rows_from_artifacts
from pipelines.worker_setup import is_setup_failure

Job = tuple[str, int]  # (class, seed)


class ClassRunsFailed(Exception):
    """Some class runs of a fan-out failed: how many and the first one's reason, in one line;
    ``rows`` holds every result row (the completed ones too)."""

    def __init__(self, rows: list[dict]):
        super().__init__(rows)
        self.rows = rows

    def __str__(self) -> str:
        failed = [r for r in self.rows if r.get("status") != "completed"]
        first = failed[0] if failed else {}
        return one_line(
            f"{len(failed)} of {len(self.rows)} class runs failed; class {first.get('class')} seed "
            f"{first.get('seed')}: {first.get('error') or 'no reason given'}"
        )


def run_jobs(
    cfg: Config,
    params: str,
    overrides: list[str],
    jobs: list[Job],
    parent_run_id,
    subflow: Callable,
    restart: bool = False,
) -> list[dict]:
    """One result row per job, in the jobs' order. ``subflow``: the class flow (train_class);
    ``restart``: each class run starts its run folder afresh (a resubmission then resumes)."""
    orch = cfg.orchestration
    pack = max(1, orch.pack)
    groups = [jobs[i : i + pack] for i in range(0, len(jobs), pack)]
    shared = {"params": params, "overrides": overrides, "parent_run_id": parent_run_id}
    shared["output_dir"] = cfg.train.output_dir  # over a class deployment's own default
    shared.update({"restart": True} if restart else {})

    def one(group: list[Job]) -> list[dict]:
        packed = {"pack": [list(job) for job in group]} if orch.pack > 1 else {}
        if orch.mode == "deployments":
            return _deployment_run(cfg, group, {**_first(group), **shared, **packed})
        state = subflow(**_first(group), **shared, **packed, return_state=True)
        if not state.is_completed():
            return [failed_row(cfg, c, s, _state_error(state)) for c, s in group]
        result = state.result()
        return result if packed else [result]

    # In deployments mode each thread only waits on the API; the workers and the limit bound real work.
    threads = orch.max_parallel if orch.mode == "local" else len(groups)
    return [row for rows in map_in_threads(one, groups, threads) for row in rows]


def _first(group: list[Job]) -> dict[str, Any]:
    return {"cls": group[0][0], "seed": group[0][1]}


def _deployment_run(cfg: Config, group: list[Job], parameters: dict) -> list[dict]:
    """One class run (of one job, or a pack) on the pool, resubmitted while it ends lost."""
    orch, dataset = cfg.orchestration, cfg.data.dataset
    cls, seed = group[0]
    if "pack" in parameters:
        name, what = f"{dataset}-pack-{cls}-{len(group)}", f"{dataset} pack of {len(group)} from class {cls}"
    else:
        name, what = f"{dataset}-{cls}-seed{seed}", f"{dataset} class {cls} seed {seed}"
    run, lost = resubmit_crashed(
        lambda attempt: run_deployment(
            name=orch.deployment,
            parameters=parameters
            if attempt == 1
            else {k: v for k, v in parameters.items() if k != "restart"},
            timeout=orch.timeout_s,
            flow_run_name=name + (f"-resubmit{attempt - 1}" if attempt > 1 else ""),
        ),
        orch.retries,
        what,
    )
    extra = {"flow_run_id": str(run.id), "resubmissions": lost}
    if run.state is None or not run.state.is_completed():
        message = run.state.message if run.state is not None else "no state"
        state_name = run.state.name if run.state is not None else "unknown"
        return [{**failed_row(cfg, c, s, one_line(f"{state_name}: {message}")), **extra} for c, s in group]
    published = rows_from_artifacts(run.id)
    rows = []
    for c, s in group:
        key = result_artifact_key(dataset, canonical_class(cfg, c), int(s))
        if key in published:
            rows.append({**published[key], **extra})
        else:
            rows.append(
                {
                    **failed_row(cfg, c, s, f"flow run {run.id} completed without its result artifact {key}"),
                    **extra,
                }
            )
    return rows


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


def _state_error(state) -> str:
    try:
        state.result(raise_on_failure=True)
    except BaseException as e:  # the class run's own exception, when it is still there
        return f"{type(e).__name__}: {e}"
    return state.message or state.name


def map_in_threads(fn: Callable[[Any], Any], items: list, max_workers: int) -> list:
    """fn over items, max_workers at a time, each thread inside the parent's Prefect context."""
    if max_workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
        return [f.result() for f in futures]
