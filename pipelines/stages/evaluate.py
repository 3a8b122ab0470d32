"""DVC stage `evaluate`: re-evaluate every trained run with the current ``evaluation.*`` settings.

Each run's Detector (``model.pt``) scores its test set again when ``evaluation.*`` differs from the
settings the train stage evaluated it with (so a new heatmap quantile, heatmap count or AUPRO setting
needs no retraining); with the same settings it takes the run folder's own results. Then it writes
- metrics.json: compact for ``dvc metrics show``: the image AUC per class and the means over classes,
- outputs/evaluate/metrics_detail.json: per class mean/std over seeds of every metric (not a
  declared metrics file, so that ``dvc metrics show`` fits a terminal; ``dvc metrics show
  outputs/evaluate/metrics_detail.json`` prints it),
- for ``dvc plots show``: auc_per_class.csv (bars), roc_image.csv (one ROC chart per class, every
  seed) and heatmaps/<class>.png (one heatmap grid per class, of its first seed; every run's own
  figures stay in runs/<class>/seed<k>/figures),
- outputs/evaluate/summary.json for the report.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from fcdd.calibration import DECISION_KEYS
from fcdd.cli.messages import one_line_warnings
from fcdd.config import Role, settings_of_role
from fcdd.stored_config import config_to_store
from pipelines.stages.common import (
    AUC_BARS,
    EVAL_DIR,
    EVAL_RUNS,
    EVAL_SUMMARY,
    HEATMAP_GRIDS,
    METRICS,
    METRICS_DETAIL,
    ROC_POINTS,
    stage_config,
    write_json,
)

METRIC_KEYS = ("image_auc", "image_aupr", "pixel_auc", "aupro")
# Calibrated decisions kept in metrics_detail.json (the report's table takes every DECISION_KEYS value).
DECISION_METRICS = (
    "a0.05_far",
    "a0.05_detection_rate",
    "a0.05_f1",
    "oracle_f1",
    "a0.05_mask_iou",
    "oracle_mask_iou",
)


def trained_runs(cfg) -> list[dict]:
    """The train stage's results table: one row per (class, seed) with its run folder."""
    path = Path(cfg.train.output_dir) / cfg.data.dataset / "results.csv"
    if not path.is_file():
        raise SystemExit(f"evaluate: {path} is missing; run the train stage first (dvc repro train)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    failed = [f"{r['class']}/seed{r['seed']}" for r in rows if r.get("status") != "completed"]
    if failed or not rows:
        raise SystemExit(f"evaluate: {path}: runs not completed: {failed or 'none listed'}")
    return rows


def evaluate_run(cfg, cls: str, seed: int, run_dir: Path, device: str, grid: bool = True) -> dict:
    """One run: load its Detector, score the test set (into outputs/evaluate/runs/<class>/seed<k>);
    with ``grid`` its global heatmap grid is the class's picture in ``dvc plots show``."""
    from fcdd.data import build_datasets
    from fcdd.detector import Detector
    from fcdd.experiment import class_slug, evaluate
    from fcdd.fingerprint import fingerprint, mismatch

    model_path = run_dir / "model.pt"
    if not model_path.is_file():
        raise SystemExit(f"evaluate: {model_path} is missing; run the train stage again (dvc repro -f train)")
    detector = Detector.load(model_path, device=device)
    differs = mismatch(detector.meta.get("settings"), fingerprint(cfg, cls, seed))
    if differs is not None:  # a model of other settings must not be reported as this configuration's
        raise SystemExit(
            f"evaluate: {model_path} was trained with other settings ({differs}); run dvc repro -f train"
        )
    out_dir = EVAL_RUNS / class_slug(cls) / f"seed{seed}"
    reuse = _evaluation_settings(detector.meta.get("config", {})) == _evaluation_settings(
        config_to_store(cfg.flat())
    )
    if reuse:
        # The train stage evaluated this run with the same settings: take its results, don't score twice.
        metrics, artifacts = _copy_run_evaluation(run_dir, out_dir)
    else:
        test_set = build_datasets(cfg, cls, seed).test
        metrics, artifacts = evaluate(
            detector, test_set, cfg, out_dir, title=f"{cfg.data.dataset} · {cls} · seed {seed}"
        )
    if grid and Path(artifacts.get("heatmaps_global", "")).is_file():
        shutil.copyfile(artifacts["heatmaps_global"], HEATMAP_GRIDS / f"{class_slug(cls)}.png")
    how = "as the train stage evaluated it" if reuse else "scored again"
    auc = metrics.get("image_auc")
    print(
        f"evaluate: {cfg.data.dataset} class {cls!r} seed {seed}: image AUC "
        + (f"{auc:.4f}" if auc is not None else f"null: {metrics.get('warning', 'not available')}")
        + f" ({how})"
    )
    return {
        "class": cls,
        "seed": seed,
        **{k: metrics.get(k) for k in METRIC_KEYS},
        "n_test": metrics.get("n_test"),
        **{k: metrics.get(k) for k in DECISION_KEYS},
        "pixel_note": metrics.get("pixel_note"),  # why pixel metrics are off or leave images out
    }


def _evaluation_settings(flat_config: dict) -> dict:
    return settings_of_role(flat_config, Role.EVALUATION)


def _copy_run_evaluation(run_dir: Path, out_dir: Path) -> tuple[dict, dict]:
    """The run folder's own metrics, scores, ROC points and figures, as `evaluate` would write them."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise SystemExit(
            f"evaluate: {metrics_path} is missing; run the train stage again (dvc repro -f train)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ["metrics.json", "scores.csv", "roc_image.csv", "roc_pixel.csv"]
    for name in names:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out_dir / name)
    shutil.copytree(run_dir / "figures", out_dir / "figures", dirs_exist_ok=True)
    artifacts = {"roc_image": out_dir / "roc_image.csv"}
    artifacts.update({f.stem: f for f in sorted((out_dir / "figures").glob("*.png"))})
    return json.loads(metrics_path.read_text()), artifacts


def top_metrics(dataset: str, summary: dict) -> dict:
    """The aggregate as DVC shows it: numbers only, no nulls (metrics a dataset lacks are left out)."""
    per_class = {}
    for cls, by_key in summary["per_class"].items():
        entry: dict = {}
        for key, stats in by_key.items():
            if stats["mean"] is not None:
                entry[key] = stats["mean"]
                entry[f"{key}_std"] = stats["std"]
                entry["runs"] = stats["n"]
        per_class[cls] = entry
    mean = {k: v for k, v in summary["mean"].items() if v is not None}
    return {"dataset": dataset, "mean": mean, "per_class": per_class}


def with_pixel_notes(detail: dict, rows: list[dict]) -> dict:
    """metrics_detail with each class's ``pixel_note`` beside its numbers: why its pixel metrics
    are null (no masks) or cover only the test images that have a mask."""
    for row in rows:
        if row.get("pixel_note"):
            detail["per_class"][str(row["class"])]["pixel_note"] = row["pixel_note"]
    return detail


COMPACT_MEANS = ("image_auc", "pixel_auc", "aupro")


def compact_metrics(detail: dict) -> dict:
    """metrics.json: one row of ``dvc metrics show`` that fits a terminal, whatever the number of
    classes: the means over classes of the image (and, where the data has masks, pixel) AUCs, and
    the weakest class with its image AUC. Every class's numbers: metrics_detail.json and the plots."""
    compact: dict = {"dataset": detail["dataset"], "classes": len(detail["per_class"])}
    compact.update({k: detail["mean"][k] for k in COMPACT_MEANS if k in detail["mean"]})
    image_auc = {cls: e["image_auc"] for cls, e in detail["per_class"].items() if "image_auc" in e}
    if image_auc:
        weakest = min(image_auc, key=image_auc.__getitem__)
        compact.update(min_image_auc=image_auc[weakest], weakest_class=weakest)
    return compact


def write_roc_points(path: Path, rows: list[dict]) -> None:
    """Every run's image-level ROC in one table (class, seed, auc, fpr, tpr): the plot template
    draws one chart per class, titled by it (pipelines/plots/roc_per_class.json)."""
    from fcdd.experiment import class_slug

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "seed", "auc", "fpr", "tpr"])
        for row in rows:
            points = EVAL_RUNS / class_slug(row["class"]) / f"seed{row['seed']}" / "roc_image.csv"
            if not points.is_file():  # a test set of one label has no ROC
                continue
            with points.open(newline="") as p:
                for point in csv.DictReader(p):
                    writer.writerow([row["class"], row["seed"], row["image_auc"], point["fpr"], point["tpr"]])


def write_auc_bars(path: Path, per_class: dict) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "image_auc", "image_auc_std"])
        for cls, entry in per_class.items():
            writer.writerow([cls, entry.get("image_auc"), entry.get("image_auc_std")])


def main() -> None:
    from fcdd.engine import resolve_device
    from fcdd.metrics import aggregate

    cfg = stage_config()
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    device = str(resolve_device(cfg.train.device))
    shutil.rmtree(EVAL_DIR, ignore_errors=True)  # outputs of an earlier configuration must not linger
    for folder in (EVAL_RUNS, HEATMAP_GRIDS):
        folder.mkdir(parents=True, exist_ok=True)

    runs = trained_runs(cfg)
    first_seed = {}
    for run in runs:
        first_seed[run["class"]] = min(int(run["seed"]), first_seed.get(run["class"], int(run["seed"])))
    rows = [
        evaluate_run(
            cfg,
            run["class"],
            int(run["seed"]),
            Path(run["run_dir"]),
            device,
            grid=int(run["seed"]) == first_seed[run["class"]],
        )
        for run in runs
    ]
    write_roc_points(ROC_POINTS, rows)
    metrics = top_metrics(cfg.data.dataset, aggregate(rows, keys=METRIC_KEYS + DECISION_METRICS))
    metrics = with_pixel_notes(metrics, rows)
    write_json(METRICS, compact_metrics(metrics))
    write_json(METRICS_DETAIL, metrics)
    write_auc_bars(AUC_BARS, metrics["per_class"])
    write_json(
        EVAL_SUMMARY,
        {
            "dataset": cfg.data.dataset,
            "quantile": cfg.quantile,
            "rows": rows,
            "metrics": metrics,
            "figures": sorted(p.name for p in HEATMAP_GRIDS.glob("*.png")),
            "config": config_to_store(cfg.flat()),  # not tracking.*: the summary is a DVC output
        },
    )
    print(
        f"evaluate: mean image AUC {metrics['mean'].get('image_auc')} over {len(metrics['per_class'])} classes"
    )


if __name__ == "__main__":
    with one_line_warnings("evaluate"):
        main()
