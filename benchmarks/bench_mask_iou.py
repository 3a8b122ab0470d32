"""Calibrated defect masks vs the oracle threshold (issue 15), at any alpha, for a trained model.

    python benchmarks/bench_mask_iou.py runs/mvtec/hazelnut/seed0/model.pt --alpha 0.01 0.05 0.1 0.2

The run's metrics.json reports masks at alpha 0.01 and 0.05 only; with n calibration images no
threshold is finite below alpha = 1 / (n + 1), so small MVTec-style sets (n of 12-14) flag nothing
there. This scores the model's own test split (rebuilt from the configuration stored in model.pt,
as `fcdd evaluate` does) and prints, per alpha: the pixel threshold, the share of good test images
with any flagged pixel (the mask guarantee says at most alpha), pooled pixel precision / recall /
IoU against the ground-truth masks, and the oracle IoU (best single threshold chosen with the test
masks). Run from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from fcdd import calibration as conformal
from fcdd.data import build_datasets
from fcdd.detector import Detector
from fcdd.experiment import score_heatmaps
from fcdd.scoring import full_heatmap
from fcdd.stored_config import config_from_model
from fcdd.testing.benchmark import header, table


def mask_table(model: str, alphas: list[float], overrides: list[str]) -> dict:
    """Per-alpha mask metrics of a calibrated model on its test split (see the module docstring)."""
    det = Detector.load(model)
    calibration = det.meta.get("calibration")
    if not calibration:
        raise ValueError(f"{model}: the model has no calibration (train with evaluation.calibration set)")
    alphas = [conformal.check_alpha(a, "--alpha") for a in alphas]
    cfg = config_from_model(det.meta, model, overrides=overrides)
    if cfg.anomalies.kind == "oe":  # the test split does not depend on the OE pool
        cfg = dataclasses.replace(cfg, anomalies=dataclasses.replace(cfg.anomalies, kind="none"))
    test = build_datasets(cfg, det.meta["class"], int(det.meta.get("seed", 0))).test
    if not test.has_masks:
        raise ValueError(f"{model}: its test set has no ground-truth masks")
    _, heat = score_heatmaps(det, test, cfg.evaluation.batch_size)
    labels = np.asarray(test.labels).astype(int)
    scorer = conformal.MaskScorer(calibration, float(heat.min()), float(heat.max()), tuple(alphas))
    good_max = []  # each good test image's highest pixel: flagged anywhere iff above the threshold
    for i in np.flatnonzero(test.mask_known):  # defect images without a mask are left out, as in evaluate
        mask = np.asarray(test.full_mask(i), dtype=bool)
        full = full_heatmap(heat[i], mask.shape)
        scorer.update(full, mask)
        if not labels[i]:
            good_max.append(float(full.max()))
    m = scorer.compute()
    rows = []
    for a in alphas:
        t = scorer.thresholds[a]
        rows.append(
            {
                "alpha": a,
                "pixel_threshold": t,
                "good_images_flagged": float(np.mean([g > t for g in good_max])) if good_max else None,
                **{k: m[f"a{a:g}_mask_{k}"] for k in ("precision", "recall", "iou")},
            }
        )
    return {
        "model": model,
        "class": det.meta["class"],
        "calibration_n": int(calibration["n"]),
        "min_alpha": conformal.min_alpha(calibration),
        "n_test": len(labels),
        "n_good": len(good_max),
        "oracle_mask_iou": m["oracle_mask_iou"],
        "oracle_mask_threshold": m["oracle_mask_threshold"],
        "rows": rows,
    }


def _f(v: float | None) -> str:
    if v is None:
        return "–"
    return "inf" if math.isinf(v) else f"{v:.3f}"


def format_table(result: dict) -> str:
    title = (
        f"{result['class']}: calibration n {result['calibration_n']} (min alpha {result['min_alpha']:.3f}), "
        f"{result['n_test']} test images ({result['n_good']} good); oracle mask IoU "
        f"{_f(result['oracle_mask_iou'])} at pixel threshold {_f(result['oracle_mask_threshold'])}"
    )
    columns = ["alpha", "pixel threshold", "good images flagged", "precision", "recall", "IoU", "oracle IoU"]
    rows = [
        [f"{r['alpha']:g}", *(_f(r[k]) for k in ("pixel_threshold", "good_images_flagged", "precision")),
         _f(r["recall"]), _f(r["iou"]), _f(result["oracle_mask_iou"])]
        for r in result["rows"]
    ]  # fmt: skip
    return title + "\n" + table(columns, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a calibrated model.pt")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2])
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    try:
        result = mask_table(args.model, args.alpha, args.override)
    except ValueError as e:  # DetectorError, ConfigError, DataError, CalibrationError
        print(f"bench_mask_iou: error: {e}", file=sys.stderr)
        return 2
    print(header("cpu", "calibrated defect masks"))
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
