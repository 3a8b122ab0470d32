"""DVC stage `train`: every (class, seed) through the Prefect parent flow ``train_dataset``.

Writes ``<train.output_dir>/<dataset>/`` (one run folder per class and seed, and results.csv).
A failed class run fails the stage, so DVC never caches a partial set of runs.
"""

from __future__ import annotations

import os
import sys

from fcdd.cli.messages import one_line_warnings
from pipelines.stages.common import LOG_ENV, PARAMS, PREFECT_ENV


def main() -> int:
    for key, value in {**PREFECT_ENV, **LOG_ENV}.items():
        os.environ.setdefault(key, value)
    from pipelines.flows import train_dataset  # after the environment: Prefect reads it on import

    rows = train_dataset(params=PARAMS)
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
