"""DVC stage `compare` (comparison/dvc.yaml): FCDD, HSC and AE on the same classes and seeds.

Trains every (class, seed) of params.yaml once per objective in ``compare.objectives``
(comparison/params.yaml) through the Prefect flow ``train_dataset``, each objective into its own
folder ``<compare.output_dir>/<objective>/``, then writes
- outputs/compare/summary.json: per run and per class (mean, std over seeds) image and pixel AUC,
  wall time per run;
- outputs/compare/report.md: the table and the figure, with the paper's numbers where known;
- outputs/compare/comparison.png: the same test images in rows; input, one heatmap per objective,
  ground truth (docs/baselines.md §5).
A run folder that already holds the finished run of the same settings is evaluated, not retrained
(its wall time is then not reported). A failed run fails the stage.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pipelines.stages.common import OUTPUTS, PARAMS, PREFECT_ENV, stage_config, write_json

COMPARE_PARAMS = Path(os.environ.get("FCDD_COMPARE_PARAMS", "comparison/params.yaml"))
COMPARE_DIR = OUTPUTS / "compare"
OBJECTIVES = ("fcdd", "hsc", "ae")
DEFAULTS = {"objectives": list(OBJECTIVES), "output_dir": "runs/compare", "figure_images": 8, "blur": True}


def compare_settings(path: Path = COMPARE_PARAMS) -> dict[str, Any]:
    """The ``compare`` section of ``path`` over :data:`DEFAULTS`; a bad value is one line naming it."""
    raw: dict = {}
    if path.is_file():
        raw = (yaml.safe_load(path.read_text()) or {}).get("compare") or {}
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise SystemExit(f"{path}: unknown key compare.{unknown[0]}; known: {', '.join(DEFAULTS)}")
    settings = {**DEFAULTS, **raw}
    objectives = settings["objectives"]
    if not isinstance(objectives, list) or not objectives or any(o not in OBJECTIVES for o in objectives):
        raise SystemExit(
            f"{path}: compare.objectives must list some of {', '.join(OBJECTIVES)}, got {objectives!r}"
        )
    if len(set(objectives)) != len(objectives):
        raise SystemExit(f"{path}: compare.objectives lists an objective twice: {objectives!r}")
    n = settings["figure_images"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SystemExit(f"{path}: compare.figure_images must be a positive integer, got {n!r}")
    if not isinstance(settings["blur"], bool):
        raise SystemExit(f"{path}: compare.blur must be true or false, got {settings['blur']!r}")
    return settings


def objective_overrides(settings: dict, objective: str) -> list[str]:
    return [f"train.objective={objective}", f"train.output_dir={Path(settings['output_dir']) / objective}"]


def train_objective(settings: dict, objective: str) -> tuple[list[dict], float | None]:
    """Every run of one objective through the flow; (rows, wall seconds per run or None when some
    run was not trained now)."""
    from pipelines.flows import train_dataset

    started = time.perf_counter()
    rows = train_dataset(params=PARAMS, overrides=objective_overrides(settings, objective))
    elapsed = time.perf_counter() - started
    failed = [r for r in rows if r.get("status") != "completed"]
    if failed:
        for r in failed:
            print(
                f"compare: {objective} class {r.get('class')!r} seed {r.get('seed')}: {r.get('error')}",
                file=sys.stderr,
            )
        raise SystemExit(f"compare: {len(failed)} of {len(rows)} {objective} runs failed")
    trained_now = all(r.get("first_epoch") not in (None, "") for r in rows)
    return rows, (elapsed / len(rows) if rows and trained_now else None)


def run_rows(objective: str, rows: list[dict]) -> list[dict]:
    keep = ("class", "seed", "image_auc", "pixel_auc", "aupro", "run_dir")
    return [
        {
            "objective": objective,
            **{k: _number(r.get(k)) if "auc" in k or k == "aupro" else r.get(k) for k in keep},
        }
        for r in rows
    ]


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _prefect_ready() -> None:
    from prefect import flow

    @flow(name="fcdd-compare-start")
    def start() -> None:
        """Nothing: starting a flow starts Prefect's local server when none is configured."""

    start()


def main() -> int:
    for key, value in PREFECT_ENV.items():
        os.environ.setdefault(key, value)
    from fcdd.comparison import comparison_table
    from fcdd.config import load_config
    from pipelines.stages.compare_report import draw_figure, render

    settings = compare_settings()
    cfg = stage_config()
    for objective in settings["objectives"]:  # every combination is checked before any training
        load_config(PARAMS, objective_overrides(settings, objective))
    _prefect_ready()  # the local server starts here, not inside the first objective's wall time
    rows: list[dict] = []
    seconds: dict[str, float | None] = {}
    for objective in settings["objectives"]:
        flow_rows, seconds[objective] = train_objective(settings, objective)
        rows += run_rows(objective, flow_rows)
    table = comparison_table(rows, settings["objectives"])
    figure = draw_figure(cfg, settings, rows, COMPARE_DIR / "comparison.png")
    summary = {
        "dataset": cfg.data.dataset,
        "settings": settings,
        "seconds_per_run": seconds,
        "table": table,
        "runs": rows,
    }
    write_json(COMPARE_DIR / "summary.json", summary)
    (COMPARE_DIR / "report.md").write_text(render(summary, figure))
    print(f"compare: wrote {COMPARE_DIR / 'report.md'} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
