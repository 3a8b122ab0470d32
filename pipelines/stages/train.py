"""DVC stage `train`: every (class, seed) through the Prefect parent flow ``train_dataset``.

Writes ``<train.output_dir>/<dataset>/`` (one run folder per class and seed, and results.csv).
A failed class run fails the stage (exit 1), so DVC never caches a partial set of runs; the partial
table goes beside the output (``<dataset>-results-partial.csv``), never into it. Only this stage
writes that folder (fcdd/stage_outputs.py: other entry points are refused).
"""

from __future__ import annotations

import os
import sys

from fcdd.cli.messages import one_line_warnings
from pipelines.stages.common import LOG_ENV, PARAMS, PREFECT_ENV


def main() -> int:
    for key, value in {**PREFECT_ENV, **LOG_ENV}.items():
        os.environ.setdefault(key, value)
    from fcdd.stage_outputs import STAGE_ENV

    os.environ[STAGE_ENV] = "train"  # this stage may write its own output
    from pipelines.flows import ClassRunsFailed, train_dataset  # after the environment: Prefect reads it

    state = train_dataset(params=PARAMS, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, ClassRunsFailed):
        rows = rows.rows
    elif isinstance(rows, BaseException):  # the parent itself failed (configuration, data, tracking)
        print(f"train: {type(rows).__name__}: {rows}", file=sys.stderr)
        return 1
    failed = [r for r in rows if r.get("status") != "completed"]
    for r in failed:
        print(
            f"train: class {r.get('class')!r} seed {r.get('seed')} failed: {r.get('error')}", file=sys.stderr
        )
    if failed:
        print(f"train: {len(failed)} of {len(rows)} class runs failed", file=sys.stderr)
        return 1
    print(f"train: {len(rows)} class runs completed")
    return 0


if __name__ == "__main__":
    with one_line_warnings("train"):
        status = main()
    sys.exit(status)
