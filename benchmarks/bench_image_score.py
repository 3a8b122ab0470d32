"""Which image score ranks the test images of bench_synthetic's models best: FCDD's mean of the
anomaly map (what ``image_auc`` in metrics.json uses) or the heatmap's maximum (the guard rail's
second ranking, fcdd/separation.py)? Re-scores every finished run of a bench_synthetic output
folder; nothing is trained.

    python benchmarks/bench_image_score.py --output-dir cache/bench_synthetic
    python benchmarks/bench_image_score.py --output-dir DIR1 DIR2   # runs of several folders together

Each run's model.pt is scored as last saved (the last BatchNorm mode of ``--bn``: ``nominal`` with
bench_synthetic's ``--bn off nominal``). The table: image AUC by the mean and by the maximum, mean ±
std over seeds per set and the three sets' mean, per recipe. Run from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_synthetic import SETS, mean_std  # noqa: E402

DATASET_SET = {"folder": "magnetic_tile"}  # mvtec runs are named by their class (grid, hazelnut)


def rescore(model_path: Path) -> dict:
    """Image AUC of one finished run by the mean of the map and by the heatmap maximum."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from fcdd.data import build_datasets
    from fcdd.detector import Detector
    from fcdd.evaluation import score_heatmaps
    from fcdd.stored_config import config_from_model

    recipe, dataset, cls, seed = (
        model_path.parts[-5],
        model_path.parts[-4],
        model_path.parts[-3],
        model_path.parts[-2][4:],
    )
    detector = Detector.load(model_path)
    cfg = config_from_model(detector.meta, str(model_path))
    test = build_datasets(cfg, detector.meta["class"], int(seed)).test
    scores, heatmaps = score_heatmaps(detector, test, cfg.evaluation.batch_size)
    labels = np.asarray(test.labels).astype(int)
    return {
        "set": DATASET_SET.get(dataset, cls), "recipe": recipe, "seed": seed,
        "bn": (detector.meta.get("bn_recalibration") or {}).get("mode", ""),
        "image_auc_mean": float(roc_auc_score(labels, scores)),
        "image_auc_max": float(roc_auc_score(labels, heatmaps.reshape(len(heatmaps), -1).max(1))),
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    sets = [s for s in SETS if any(r["set"] == s for r in rows)]
    head = "| recipe | image score | " + " | ".join(sets) + " | **mean of the sets** |"
    lines = [head, "|" + "---|" * (len(sets) + 3)]
    fmt = lambda m, s, n: "–" if m is None else (f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}")  # noqa: E731
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for score in ("mean", "max"):
            cells, set_means = [], []
            for s in sets:
                m, sd, n = mean_std(
                    [r[f"image_auc_{score}"] for r in rows if r["recipe"] == recipe and r["set"] == s]
                )
                cells.append(fmt(m, sd, n))
                set_means.append(m)
            known = [m for m in set_means if m is not None]
            overall = f"**{sum(known) / len(known):.3f}**" if len(known) == len(sets) else "–"
            lines.append(f"| {recipe} | {score} | " + " | ".join(cells) + f" | {overall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--output-dir", nargs="+", default=["cache/bench_synthetic"],
        help="bench_synthetic's --output-dir (several: a (set, recipe, seed) counts once, from the first)",
    )  # fmt: skip
    args = p.parse_args(argv)
    from fcdd.hardware import machine_line

    outs = [Path(d) for d in args.output_dir]
    for out in outs:
        if not any((out / "runs").glob("*/*/*/seed*/model.pt")):
            print(
                f"error: {out / 'runs'}: no finished bench_synthetic runs (model.pt) there", file=sys.stderr
            )
            return 2
    rows, seen = [], set()
    for out in outs:
        for model_path in sorted((out / "runs").glob("*/*/*/seed*/model.pt")):
            row = rescore(model_path)
            if (row["set"], row["recipe"], row["seed"]) not in seen:
                seen.add((row["set"], row["recipe"], row["seed"]))
                rows.append(row)
    with (outs[0] / "image_scores.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"bench_image_score: {len(rows)} runs of {', '.join(map(str, outs))}\n{machine_line('cpu')}\n\n{table(rows)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
