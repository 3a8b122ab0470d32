"""Evaluation metrics (spec §6): image AUC/ROC, streaming pixel AUC, AUPRO, aggregation over runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

_QUERY_CHUNK = 1 << 22  # searchsorted outputs int64: bound those temporaries to 32 MB


def _binary_labels(labels: Any, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        bad = np.setdiff1d(np.unique(arr), (0, 1))[:5]
        raise ValueError(f"{name}: expected 0 (nominal) / 1 (anomalous), found {bad.tolist()}")
    return arr.astype(np.int64)


def image_metrics(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> dict:
    """Image-level ROC AUC, average precision (anomalies positive) and the ROC curve.

    Returns ``{"auc", "aupr", "fpr", "tpr", "thresholds"}``; ``auc`` is scikit-learn's
    ``roc_auc_score`` (ties count one half), the curve arrays come from ``roc_curve``.
    """
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"scores: shape {s.shape} does not match labels {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores: {int((~np.isfinite(s)).sum())} values are NaN or infinite")
    present = np.unique(y)
    if present.size < 2:
        name = "anomalous (1)" if present.size and present[0] == 1 else "nominal (0)"
        raise ValueError(f"labels: only {name} samples present; AUC needs both nominal and anomalous")
    fpr, tpr, thresholds = roc_curve(y, s)
    return {
        "auc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "fpr": fpr,
        "tpr": tpr,
        "thresholds": thresholds,
    }


class PixelAUC:
    """Streaming pixel-wise ROC AUC over every pixel of every test image of a class.

    Method (exact, no binning): each ``update`` appends the scores, cast to ``dtype``, to one list
    for anomalous and one for nominal pixels. ``compute`` moves each list into one preallocated
    array chunk by chunk (peak: the data plus one chunk), sorts both in place, and counts for every
    anomalous score p the nominal scores below it (``searchsorted`` left) and equal to it (right
    minus left). Then

        AUC = (#{(p, n): p > n} + 0.5 · #{(p, n): p = n}) / (n_pos · n_neg),

    which is the Mann-Whitney statistic that ``sklearn.metrics.roc_auc_score`` computes, ties
    included. Memory: 4 bytes per pixel with float32 (1e8 pixels: 400 MB) plus 32 MB of query
    temporaries; time: two sorts, O(N log N).

    Error bound. The pair counts are exact integers (int64), so the only rounding is the final
    division (relative 1e-16): for float32 input (what the models produce) the result is the exact
    AUC. Wider input is rounded to float32 first. Rounding is monotone, so it never reverses the
    order of a pair; it can only merge a pair p > n whose values lie within one float32 step
    (relative 2**-24 ≈ 6e-8) into a tie, which moves the count by exactly 1/2. Hence
    |AUC_float32 − AUC_exact| ≤ 0.5 · m / (n_pos · n_neg), where m is the number of such merged
    pairs (zero unless scores differ in the 8th significant digit). Pass ``dtype=np.float64`` to
    remove even that, at 8 bytes per pixel.
    """

    def __init__(self, dtype: type = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self._chunks: dict[bool, list[np.ndarray]] = {True: [], False: []}
        self._sorted: dict[bool, np.ndarray | None] = {True: None, False: None}

    @property
    def counts(self) -> tuple[int, int]:
        """(anomalous pixels, nominal pixels) seen so far."""
        return self._count(True), self._count(False)

    def _count(self, positive: bool) -> int:
        done = self._sorted[positive]
        return sum(c.size for c in self._chunks[positive]) + (0 if done is None else done.size)

    def update(self, scores: np.ndarray, masks: np.ndarray) -> None:
        """Add pixel scores (h, w) or (n, h, w) and boolean ground-truth masks of the same shape."""
        s = np.asarray(scores)
        m = np.asarray(masks)
        if s.shape != m.shape:
            raise ValueError(f"scores shape {s.shape} does not match masks shape {m.shape}")
        if s.ndim not in (2, 3):
            raise ValueError(f"scores: expected (h, w) or (n, h, w), got shape {s.shape}")
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise ValueError("masks: expected booleans or 0/1 values")
            m = m.astype(bool)
        s = s.astype(self.dtype, copy=False)
        if not np.isfinite(s).all():
            raise ValueError(f"scores: {int((~np.isfinite(s)).sum())} values are NaN or infinite")
        for positive in (True, False):
            part = s[m] if positive else s[~m]
            if part.size:
                self._chunks[positive].append(part)

    def _merged(self, positive: bool) -> np.ndarray:
        """All scores of one label as one sorted array; consumes the chunk list."""
        chunks = self._chunks[positive]
        done = self._sorted[positive]
        if done is not None and not chunks:
            return done
        if done is not None:
            chunks.insert(0, done)
        out = np.empty(sum(c.size for c in chunks), dtype=self.dtype)
        pos = 0
        while chunks:  # pop as we copy so the peak is the data plus one chunk
            c = chunks.pop(0)
            out[pos : pos + c.size] = c
            pos += c.size
        out.sort()
        self._sorted[positive] = out
        return out

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        pos, neg = self._merged(True), self._merged(False)
        if pos.size == 0 or neg.size == 0:
            raise ValueError(
                f"pixel AUC needs anomalous and nominal pixels; got {pos.size} anomalous and "
                f"{neg.size} nominal (are all masks empty?)"
            )
        return pos, neg

    def compute(self) -> float:
        """The pixel-wise ROC AUC; ValueError when no anomalous (or no nominal) pixel was seen."""
        pos, neg = self._arrays()
        # query with the smaller array: cost n_small · log(n_large)
        query, base, query_is_pos = (pos, neg, True) if pos.size <= neg.size else (neg, pos, False)
        below = ties = 0
        for start in range(0, query.size, _QUERY_CHUNK):
            q = query[start : start + _QUERY_CHUNK]
            left = np.searchsorted(base, q, side="left")
            right = np.searchsorted(base, q, side="right")
            below += int(left.sum(dtype=np.int64))
            ties += int((right - left).sum(dtype=np.int64))
        pairs = pos.size * neg.size
        # below counts base < query; for negative queries that is #(p < n), the complement we need
        greater = below if query_is_pos else pairs - below - ties
        return (greater + 0.5 * ties) / pairs

    def roc_curve(self, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) at up to ``max_points`` thresholds spread over both classes' score quantiles.

        Each point is exact (counts of pixels >= threshold); the curve runs from (0, 0) to (1, 1).
        """
        if max_points < 2:
            raise ValueError(f"max_points: need at least 2, got {max_points}")
        pos, neg = self._arrays()
        per_class = max(1, (max_points - 2) // 2)
        picks = [a[np.linspace(0, a.size - 1, min(per_class, a.size)).astype(np.int64)] for a in (pos, neg)]
        thresholds = np.unique(np.concatenate(picks))[::-1]  # descending: fpr ascends
        tpr = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
        fpr = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
        return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def aupro(
    masks: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    max_fpr: float = 0.3,
    num_thresholds: int = 3000,
) -> float:
    """Normalised area under the per-region-overlap curve up to ``max_fpr`` (Bergmann et al. 2021).

    Regions are the 8-connected components of each ground-truth mask. At a threshold t, PRO is the
    mean over all regions (of all images) of the fraction of the region's pixels with score >= t;
    FPR is the fraction of all nominal pixels with score >= t. The curve is integrated with the
    trapezoidal rule up to FPR = ``max_fpr`` (linearly interpolated there) and divided by
    ``max_fpr``, so a perfect map scores 1.

    Memory: thresholds form a grid of at most ``num_thresholds`` actual nominal score values
    (quantiles of a strided sample, denser over FPR in [0, 1.5·max_fpr]); each image is then reduced
    to per-threshold counts, so only one image's temporaries exist at a time. Every curve point is
    exact; the grid only decides where the curve is sampled. Since PRO is monotone in FPR, the
    trapezoid between two consecutive points is off by at most Δfpr·Δpro/2, so the total error is
    at most max Δfpr / (2·max_fpr) (≈ 2.5e-4 with the default grid, plus sampling noise).
    """
    if len(masks) != len(maps):
        raise ValueError(f"aupro: {len(masks)} masks but {len(maps)} maps")
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr: must be in (0, 1], got {max_fpr}")
    for i, (m, s) in enumerate(zip(masks, maps, strict=True)):
        if np.ndim(m) != 2 or np.shape(m) != np.shape(s):
            raise ValueError(
                f"aupro: image {i}: mask {np.shape(m)} and map {np.shape(s)} must be equal 2-D shapes"
            )
    thresholds = _pro_thresholds(masks, maps, max_fpr, num_thresholds)
    nbins = thresholds.size + 1
    neg_hist = np.zeros(nbins, dtype=np.int64)
    region_hists: list[np.ndarray] = []
    for i in range(len(masks)):
        mask, scores = _mask_and_map(masks[i], maps[i], i)
        # bin b = number of thresholds <= score, so "score >= thresholds[k]" is "bin > k"
        bins = np.searchsorted(thresholds, scores, side="right")
        neg_hist += np.bincount(bins[~mask], minlength=nbins)
        regions, n_regions = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if n_regions:
            inside = regions > 0
            flat = (regions[inside] - 1) * nbins + bins[inside]
            region_hists.append(np.bincount(flat, minlength=n_regions * nbins).reshape(n_regions, nbins))
    if not region_hists:
        raise ValueError("aupro: no anomalous pixel in any mask; AUPRO needs at least one defect region")
    if neg_hist.sum() == 0:
        raise ValueError("aupro: every pixel is anomalous; FPR needs nominal pixels")
    hists = np.concatenate(region_hists)
    fpr = _counts_above(neg_hist) / neg_hist.sum()
    pro = (_counts_above(hists) / hists.sum(axis=1, keepdims=True)).mean(axis=0)
    # thresholds ascend, so fpr descends; reverse and add the (0, 0) end at t = +inf
    fpr = np.concatenate([[0.0], fpr[::-1]])
    pro = np.concatenate([[0.0], pro[::-1]])
    return _truncated_area(fpr, pro, max_fpr) / max_fpr


def _counts_above(hist: np.ndarray) -> np.ndarray:
    """From per-bin counts (last axis), the counts with bin > k for every threshold k."""
    return np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1][..., 1:]


def _mask_and_map(mask: np.ndarray, scores: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mask)
    s = np.asarray(scores)
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"aupro: image {i}: mask must be boolean or 0/1")
        m = m.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError(f"aupro: image {i}: map has NaN or infinite values")
    return m, s


def _pro_thresholds(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float, n: int
) -> np.ndarray:
    """Ascending thresholds: nominal scores at FPR levels in [0, 1.5·max_fpr], plus the curve's ends."""
    total_neg = sum(int(np.size(m) - np.count_nonzero(m)) for m in masks)
    stride = max(1, total_neg // 2_000_000)  # a sample of about 2e6 nominal scores
    parts, lowest, highest_neg = [], np.inf, -np.inf
    for i in range(len(masks)):
        m, s = _mask_and_map(masks[i], maps[i], i)
        neg = s[~m]
        lowest = min(lowest, float(s.min()))
        if neg.size:
            highest_neg = max(highest_neg, float(neg.max()))
            parts.append(neg[::stride])
    ends = [lowest]  # at the minimum every pixel is above: the (1, 1) end
    if not parts:
        return np.array(ends)
    # just above the highest nominal score: FPR 0 with the PRO reached there (a vertical segment)
    ends.append(float(np.nextafter(highest_neg, np.inf)))
    sample = np.sort(np.concatenate(parts))
    levels = np.linspace(0.0, min(1.0, 1.5 * max_fpr), max(2, n - 2))
    idx = np.clip(np.ceil((1.0 - levels) * sample.size).astype(np.int64) - 1, 0, sample.size - 1)
    return np.unique(np.concatenate([sample[idx], ends]))


def _truncated_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) for x in [0, limit]; x ascending; linear interpolation at limit."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit and keep.size > keep.sum():
        j = int(np.argmax(~keep))  # first point past the limit
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.trapezoid(ys, xs))


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def aggregate(
    rows: Iterable[dict], keys: Sequence[str] = ("image_auc", "pixel_auc", "aupro")
) -> dict[str, dict]:
    """Mean and std over seeds per class, and the mean over classes (spec §6).

    ``rows``: dicts with ``class``, ``seed`` and metric values (None/NaN = not available, skipped).
    Returns ``{"per_class": {cls: {key: {"mean", "std", "n"}}}, "mean": {key: mean over classes}}``;
    ``std`` is the sample standard deviation (ddof=1), 0.0 for a single run; both None when n = 0.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for i, row in enumerate(rows):
        if "class" not in row:
            raise ValueError(f"aggregate: row {i} has no 'class' key: {row!r}")
        per_key = values.setdefault(str(row["class"]), {k: [] for k in keys})
        for k in keys:
            v = _finite(row.get(k))
            if v is not None:
                per_key[k].append(v)
    per_class: dict[str, dict[str, dict[str, Any]]] = {}
    for cls, per_key in values.items():
        per_class[cls] = {}
        for k, vs in per_key.items():
            n = len(vs)
            per_class[cls][k] = {
                "mean": float(np.mean(vs)) if n else None,
                "std": (float(np.std(vs, ddof=1)) if n > 1 else 0.0) if n else None,
                "n": n,
            }
    mean: dict[str, float | None] = {}
    for k in keys:
        means = [c[k]["mean"] for c in per_class.values() if c[k]["mean"] is not None]
        mean[k] = float(np.mean(means)) if means else None
    return {"per_class": per_class, "mean": mean}
