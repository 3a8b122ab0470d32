"""Calibrated decisions: split-conformal p-values, defect masks and their evaluation.

A share of the nominal training images is held out (never trained on; the split is
fcdd/data/calibration_split.py) and scored after training.
For a new image with score s, ``p = (1 + #{calibration scores >= s}) / (n + 1)``; under
exchangeability of nominal scores, ``P(p <= alpha) <= alpha`` for a good image: flagging
``p <= alpha`` rejects at most an alpha share of good parts. Masks use the same argument on each
calibration image's maximum pixel score: a good image gets any flagged pixel with probability
at most alpha.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fcdd.errors import ConfigError
from fcdd.image_scores import heatmap_maximum

ALPHAS = (0.01, 0.05)  # levels the evaluation reports
DEFAULT_ALPHA = 0.01
QUANTILES = (0.5, 0.9, 0.95, 0.99)
# Keys decision_metrics and MaskScorer add to a run's metrics (the DVC evaluate stage keeps these).
DECISION_KEYS = (
    "calibration_n",
    *(
        f"a{a:g}_{k}"
        for a in ALPHAS
        for k in (
            "far",
            "far_ci_low",
            "far_ci_high",
            "far_expected_low",
            "far_expected_high",
            "detection_rate",
            "f1",
        )
    ),
    "oracle_f1",
    "oracle_f1_threshold",
    *(f"a{a:g}_mask_{k}" for a in ALPHAS for k in ("precision", "recall", "iou")),
    "oracle_mask_iou",
)


class CalibrationError(ConfigError):
    """A calibration setting or an alpha cannot be used; the message says which and why."""


@torch.no_grad()
def score_calibration(detector: Any, cal_set: Dataset, batch_size: int) -> dict[str, Any] | None:
    """Image scores and per-image maximum pixel scores of the calibration images.

    The maximum is taken on the upsampled map at the input size; nearest-neighbour upsampling to
    an image's own (larger) resolution repeats values, so it is also the maximum there."""
    if cal_set is None or len(cal_set) == 0:
        return None
    scores, pixel_max = [], []
    for batch in DataLoader(cal_set, batch_size=batch_size, shuffle=False, num_workers=0):
        s, _, up = detector.score_tensor(batch["image"])
        scores.append(s.float().cpu().numpy())
        pixel_max.append(heatmap_maximum(up).float().cpu().numpy())
    return {
        "n": len(cal_set),
        "image_scores": [float(v) for v in np.concatenate(scores)],
        "pixel_max": [float(v) for v in np.concatenate(pixel_max)],
    }


# ------------------------------------------------------------------ decisions
def check_alpha(alpha: Any, where: str = "alpha") -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: expected a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < a < 1.0):
        raise CalibrationError(f"{where}: must be in (0, 1), got {alpha!r}")
    return a


def p_values(cal_scores: Any, scores: Any) -> np.ndarray:
    """Split-conformal p-values (1 + #{cal >= s}) / (n + 1)."""
    cal = np.sort(np.asarray(cal_scores, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    at_least = len(cal) - np.searchsorted(cal, s, side="left")
    return (1.0 + at_least) / (len(cal) + 1.0)


def normalised_score(p: Any) -> np.ndarray:
    """1 - p: in [0, n/(n+1)], monotone in the raw score; 0.99 means "higher than ~99 % of good parts"."""
    return 1.0 - np.asarray(p, dtype=np.float64)


def conformal_threshold(cal_values: Any, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest calibration value: a new good image exceeds it with
    probability at most alpha. Infinite when n is too small for this alpha (nothing is flagged)."""
    v = np.sort(np.asarray(cal_values, dtype=np.float64))
    k = math.ceil((len(v) + 1) * (1.0 - alpha))
    return float(v[k - 1]) if 1 <= k <= len(v) else math.inf


def image_threshold(calibration: dict, alpha: float) -> float:
    """Raw image score above which p <= alpha (the same decision as the p-value rule)."""
    return conformal_threshold(calibration["image_scores"], alpha)


def pixel_threshold(calibration: dict, alpha: float) -> float:
    return conformal_threshold(calibration["pixel_max"], alpha)


def min_alpha(calibration: dict) -> float:
    """The smallest p-value possible: alphas below it never flag an image."""
    return 1.0 / (calibration["n"] + 1)


def summary(calibration: dict | None) -> dict[str, Any]:
    """What ``fcdd info``, MLflow and the registry show: n and score quantiles."""
    if not calibration:
        return {"n": 0, "note": "no calibration: p-values and masks off; use --threshold"}
    s, m = np.asarray(calibration["image_scores"]), np.asarray(calibration["pixel_max"])
    out: dict[str, Any] = {"n": int(calibration["n"]), "min_alpha": round(min_alpha(calibration), 6)}
    out["image_score_quantiles"] = {f"q{q:g}": float(np.quantile(s, q)) for q in QUANTILES}
    out["pixel_max_quantiles"] = {f"q{q:g}": float(np.quantile(m, q)) for q in QUANTILES}
    out["thresholds"] = {
        f"alpha_{a:g}": {"image": image_threshold(calibration, a), "pixel": pixel_threshold(calibration, a)}
        for a in ALPHAS
    }
    return out


# ------------------------------------------------------------------ masks and their encodings
def mask_png(mask: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, "L").save(buf, format="PNG")
    return buf.getvalue()


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """Row-major run lengths, starting with a run of False (COCO-style counts, but row-major)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": list(np.shape(mask)), "counts": [int(c) for c in counts], "order": "row-major"}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    h, w = rle["size"]
    values = np.zeros(0, dtype=bool)
    parts = [np.full(c, i % 2 == 1) for i, c in enumerate(rle["counts"])]
    values = np.concatenate(parts) if parts else values
    return values.reshape(h, w)


# ------------------------------------------------------------------ evaluation
def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a rate k/n."""
    from scipy.stats import beta

    if n == 0:
        return (0.0, 1.0)
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def expected_far_range(alpha: float, n_cal: int, n_test: int, level: float = 0.95) -> tuple[float, float]:
    """Where the realized false-alarm rate of ``n_test`` good images falls (central ``level``) under
    exchangeability, counting both sources of chance: the calibration draw and the test draw.

    With rank = floor(alpha (n_cal + 1)), the false-alarm rate given one calibration set is
    Beta(rank, n_cal + 1 - rank) (split conformal, no ties), so the count among n_test good images is
    beta-binomial. The Clopper-Pearson interval of the realized rate covers the test draw only:
    with a few hundred calibration images it is too narrow to judge a single run's calibration.
    """
    from scipy.stats import betabinom

    rank = int(np.floor(alpha * (n_cal + 1)))
    if rank < 1 or n_test == 0:  # alpha below 1 / (n_cal + 1): nothing is ever flagged
        return 0.0, 0.0
    dist = betabinom(n_test, rank, n_cal + 1 - rank)
    a = (1 - level) / 2
    return float(dist.ppf(a)) / n_test, float(dist.ppf(1 - a)) / n_test


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def oracle_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best F1, its threshold) over all score thresholds, using the test labels: an oracle."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # flag all scores >= s[i]
    f1 = 2 * tp[last] / (2 * tp[last] + fp[last] + (y.sum() - tp[last]))
    i = int(np.argmax(f1))
    return float(f1[i]), float(s[last[i]])


def decision_metrics(labels: Any, scores: Any, calibration: dict | None) -> dict[str, Any]:
    """Per alpha: realized false-alarm rate on the nominal test images (95 % Clopper-Pearson
    interval, and the 95 % range expected under exchangeability), detection rate and F1; the oracle
    F1 beside them."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {"calibration_n": int(calibration["n"]) if calibration else 0}
    if labels.min(initial=0) != labels.max(initial=0):
        out["oracle_f1"], out["oracle_f1_threshold"] = oracle_f1(labels, scores)
    if not calibration:
        return out
    p = p_values(calibration["image_scores"], scores)
    good, bad = labels == 0, labels == 1
    for a in ALPHAS:
        flag = p <= a
        fa, n_good = int((flag & good).sum()), int(good.sum())
        tp, fn = int((flag & bad).sum()), int((~flag & bad).sum())
        lo, hi = clopper_pearson(fa, n_good)
        key = f"a{a:g}"
        out[f"{key}_far"] = fa / n_good if n_good else None
        out[f"{key}_far_ci_low"], out[f"{key}_far_ci_high"] = lo, hi
        exp_lo, exp_hi = expected_far_range(a, int(calibration["n"]), n_good)
        out[f"{key}_far_expected_low"], out[f"{key}_far_expected_high"] = exp_lo, exp_hi
        out[f"{key}_detection_rate"] = tp / int(bad.sum()) if bad.any() else None
        out[f"{key}_f1"] = _f1(tp, fa, fn) if bad.any() else None
    return out


class MaskScorer:
    """Pixel precision / recall / IoU of calibrated masks against ground truth, pooled over the
    test images, and the oracle IoU (best single threshold, chosen with the test masks)."""

    BINS = 1024

    def __init__(self, calibration: dict, lo: float, hi: float, alphas: tuple[float, ...] = ALPHAS):
        self.thresholds = {a: pixel_threshold(calibration, check_alpha(a)) for a in alphas}
        self.counts = {a: np.zeros(3, dtype=np.int64) for a in alphas}  # tp, fp, fn
        self.edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, self.BINS + 1)
        self.pos = np.zeros(self.BINS, dtype=np.int64)
        self.neg = np.zeros(self.BINS, dtype=np.int64)

    def update(self, heat: np.ndarray, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        for a, t in self.thresholds.items():
            flag = heat > t
            self.counts[a] += [(flag & mask).sum(), (flag & ~mask).sum(), (~flag & mask).sum()]
        self.pos += np.histogram(np.clip(heat[mask], self.edges[0], self.edges[-1]), self.edges)[0]
        self.neg += np.histogram(np.clip(heat[~mask], self.edges[0], self.edges[-1]), self.edges)[0]

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a, (tp, fp, fn) in self.counts.items():
            key = f"a{a:g}"
            out[f"{key}_mask_precision"] = float(tp / (tp + fp)) if tp + fp else None
            out[f"{key}_mask_recall"] = float(tp / (tp + fn)) if tp + fn else None
            out[f"{key}_mask_iou"] = float(tp / (tp + fp + fn)) if tp + fp + fn else None
        tp = np.cumsum(self.pos[::-1])[::-1]  # pixels in bins >= i: flagged at threshold edges[i]
        fp = np.cumsum(self.neg[::-1])[::-1]
        iou = tp / np.maximum(tp + fp + (self.pos.sum() - tp), 1)
        i = int(np.argmax(iou))
        out["oracle_mask_iou"], out["oracle_mask_threshold"] = float(iou[i]), float(self.edges[i])
        return out
