"""One experiment, tracked or not, and the one result row every caller reports.

``fcdd train``, the Prefect flows and the tracking plugin all come here: ``run_one`` runs
``fcdd.experiment.run_experiment`` inside a tracker's run when one is given, and ``result_row``
turns its result into the plain row of results.csv and the command's summary. A tracker is what a
plugin provides (``fcdd.plugins``; the MLflow one lives in ``pipelines/tracking.py``); fcdd itself
knows only this protocol.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fcdd.errors import ConfigError, DataError
from fcdd.experiment import RunResult, run_experiment
from fcdd.metrics import aggregate
from fcdd.paths import file_in_the_way, writable_folder

if TYPE_CHECKING:
    from fcdd.config import Config


class TrackedRun(Protocol):
    """One experiment's run in a tracker: epoch logs go to it, the result is recorded by it."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def finish(self, result: RunResult) -> dict[str, Any]:
        """Record the result (metrics, artifacts, a registered model); return the row's tracking
        columns (e.g. the run id, the registered version)."""
        ...


class Tracker(Protocol):
    def run(
        self, cfg: Config, cls: str, seed: int, parent_run_id: str | None = None
    ) -> contextlib.AbstractContextManager[TrackedRun]:
        """A run for (cfg, cls, seed) that is open while the experiment trains and evaluates; it
        ends failed when the block raises."""
        ...

    def describe(self, row: dict[str, Any]) -> str:
        """What the command prints after a tracked run's metrics (its run, a registered version)."""
        ...


def result_row(result: RunResult, tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's row: dataset, class, seed, run folder, its scalar metrics, epochs trained, and the
    tracker's columns. Non-scalar metrics (per-defect tables) stay in metrics.json."""
    row: dict[str, Any] = {"dataset": result.dataset, "class": result.cls, "seed": result.seed}
    row["run_dir"] = str(result.run_dir)
    for key, value in result.metrics.items():
        if key not in row and (value is None or isinstance(value, (int, float, str))):
            row[key] = value
    row["epochs"] = len(result.history)
    row.update(tracking or {})
    return row


class _Both:
    """Epoch logs to the tracker first, then to the caller's callbacks."""

    def __init__(self, first: Any, then: Any):
        self.first, self.then = first, then

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.first.on_epoch_end(epoch, logs)
        if self.then is not None and hasattr(self.then, "on_epoch_end"):
            self.then.on_epoch_end(epoch, logs)


def run_one(
    cfg: Config,
    cls: str,
    seed: int,
    *,
    tracker: Tracker | None = None,
    callbacks: Any = None,
    restart: bool = False,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and write one run folder, inside ``tracker``'s run when given; its row.

    ``callbacks`` (``on_epoch_end(epoch, logs)``) get every epoch; ``restart`` is
    run_experiment's (start the run folder afresh).
    """
    fresh = {"restart": True} if restart else {}  # passed only when asked: stand-ins need not know it
    if tracker is None:
        return result_row(run_experiment(cfg, cls, seed, callbacks=callbacks, **fresh))
    with tracker.run(cfg, cls, seed, parent_run_id=parent_run_id) as tracked:
        result = run_experiment(cfg, cls, seed, callbacks=_Both(tracked, callbacks), **fresh)
        return result_row(result, tracked.finish(result))


def check_data_root(cfg: Config) -> None:
    """data.root must exist unless data.download may fetch it: said before a tracker opens its
    store or anything loads (the loaders' own checks follow)."""
    root = Path(cfg.data.root).expanduser()
    if cfg.data.download or root.exists():
        return
    where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
    raise DataError(f"data.root {cfg.data.root}: no such file or folder{where}")


def check_output_folders(cfg: Config, classes: list[str], seeds: list[int]) -> None:
    """train.output_dir and data.cache_dir writable folders (created), and no file where a run
    folder must go: said before tracking opens its store or anything loads."""
    from fcdd.experiment import known_class, run_dir_for

    out = writable_folder(cfg.train.output_dir, "train.output_dir")
    writable_folder(cfg.data.cache_dir, "data.cache_dir")
    for cls in classes:
        for seed in seeds:
            run_dir = run_dir_for(cfg, known_class(cfg, cls), seed)
            blocker = file_in_the_way(run_dir)
            if blocker is not None:
                raise ConfigError(
                    f"train.output_dir {out}: {blocker} is a file where run folder {run_dir} goes"
                )


def write_summary(cfg: Config, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], Path]:
    """Mean and per-class metrics over the rows (each class: mean over its seeds), written to
    ``<train.output_dir>/<dataset>/summary.json``."""
    summary = aggregate(rows)
    out = Path(cfg.train.output_dir) / cfg.data.dataset
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, out / "summary.json"
