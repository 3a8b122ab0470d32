"""Evaluation metrics (docs/method.md §6): image AUC/ROC, streaming pixel AUC, AUPRO, aggregation over runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz

_CHUNK = 1 << 20  # values per stored chunk and per searchsorted query (int64 outputs: 8 MB each)


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

    Method (exact, no binning): ``update`` keeps the scores, cast to ``dtype``, in chunks of about
    1e6 values, one list for anomalous and one for nominal pixels. ``compute`` merges and sorts the
    smaller class (anomalous pixels, for defect masks), sorts each chunk of the larger class in
    place, and for every score of the larger class counts the smaller-class scores below it and
    equal to it (``searchsorted`` left and right). Then

        AUC = (#{(p, n): p > n} + 0.5 · #{(p, n): p = n}) / (n_pos · n_neg),

    the Mann-Whitney statistic that ``sklearn.metrics.roc_auc_score`` computes, ties included.
    Memory: 4 bytes per pixel with float32 (1e8 pixels: 400 MB), plus one copy of the smaller class
    and 32 MB of query temporaries; time O(N log N).

    Error bound. The pair counts are exact integers (int64), so the only rounding is the final
    division (relative 1e-16): for float32 input (what the models produce) the result is the exact
    AUC. Wider input is rounded to float32 first. Rounding is monotone, so it never reverses the
    order of a pair; it can only merge a pair p > n whose values lie within one float32 step
    (relative 2**-24 ≈ 6e-8) into a tie, which moves the count by exactly 1/2. Hence
    |AUC_float32 − AUC_exact| ≤ 0.5 · m / (n_pos · n_neg), where m is the number of such merged
    pairs (zero unless scores differ only in the 8th significant digit). Pass ``dtype=np.float64``
    to remove even that, at 8 bytes per pixel.
    """

    def __init__(self, dtype: type = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        # per label (True = anomalous): full chunks, and small parts waiting to become one chunk
        self._chunks: dict[bool, list[np.ndarray]] = {True: [], False: []}
        self._pending: dict[bool, list[np.ndarray]] = {True: [], False: []}
        self._sorted: dict[bool, bool] = {True: True, False: True}  # every chunk sorted?

    @property
    def counts(self) -> tuple[int, int]:
        """(anomalous pixels, nominal pixels) seen so far."""
        return self._count(True), self._count(False)

    def _count(self, positive: bool) -> int:
        return sum(c.size for c in self._chunks[positive] + self._pending[positive])

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
            part = s[m] if positive else s[~m]  # boolean indexing copies: ours to sort later
            if not part.size:
                continue
            if part.size >= _CHUNK:
                self._chunks[positive].append(part)
            else:  # many small images (32x32): gather them so chunks stay few
                self._pending[positive].append(part)
                if sum(p.size for p in self._pending[positive]) >= _CHUNK:
                    self._flush(positive)
            self._sorted[positive] = False

    def _flush(self, positive: bool) -> None:
        if self._pending[positive]:
            self._chunks[positive].append(np.concatenate(self._pending[positive]))
            self._pending[positive] = []

    def _sorted_chunks(self, positive: bool, merge: bool) -> list[np.ndarray]:
        """The label's scores as sorted chunks (one chunk when ``merge``); sorts in place once."""
        self._flush(positive)
        chunks = self._chunks[positive]
        if merge and len(chunks) > 1:
            merged = np.empty(sum(c.size for c in chunks), dtype=self.dtype)
            pos = 0
            while chunks:  # pop as we copy so the peak is the data plus one chunk
                c = chunks.pop(0)
                merged[pos : pos + c.size] = c
                pos += c.size
            chunks.append(merged)
            self._sorted[positive] = False
        if not self._sorted[positive]:
            for c in chunks:
                c.sort()
            self._sorted[positive] = True
        return chunks

    def _prepared(self) -> tuple[np.ndarray, list[np.ndarray], bool]:
        """(the smaller class as one sorted array, the larger class as sorted chunks, smaller is anomalous)."""
        n_pos, n_neg = self.counts
        if n_pos == 0 or n_neg == 0:
            raise ValueError(
                f"pixel AUC needs anomalous and nominal pixels; got {n_pos} anomalous and "
                f"{n_neg} nominal (are all masks empty?)"
            )
        small_is_pos = n_pos <= n_neg
        (small,) = self._sorted_chunks(small_is_pos, merge=True)
        return small, self._sorted_chunks(not small_is_pos, merge=False), small_is_pos

    def compute(self) -> float:
        """The pixel-wise ROC AUC; ValueError when no anomalous (or no nominal) pixel was seen."""
        small, large_chunks, small_is_pos = self._prepared()
        below = ties = 0  # over (large, small) pairs: small < large, small == large
        for chunk in large_chunks:
            for start in range(0, chunk.size, _CHUNK):
                q = chunk[start : start + _CHUNK]
                left = np.searchsorted(small, q, side="left")
                right = np.searchsorted(small, q, side="right")
                below += int(left.sum(dtype=np.int64))
                ties += int((right - left).sum(dtype=np.int64))
        pairs = self._count(True) * self._count(False)
        # small anomalous: below counts p < n, the complement of what we need
        greater = pairs - below - ties if small_is_pos else below
        return (greater + 0.5 * ties) / pairs

    def roc_curve(self, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) at up to ``max_points`` thresholds spread over both classes' score quantiles.

        Each point is exact (counts of pixels >= threshold); the curve runs from (0, 0) to (1, 1).
        """
        if max_points < 3:
            raise ValueError(f"max_points: need at least 3, got {max_points}")
        small, large_chunks, small_is_pos = self._prepared()
        n_large = sum(c.size for c in large_chunks)
        per_class = max(1, (max_points - 2) // 2)
        stride = max(1, n_large // (100 * per_class))  # a strided sample of the sorted chunks
        large_sample = np.sort(np.concatenate([c[::stride] for c in large_chunks]))
        picks = [
            a[np.linspace(0, a.size - 1, min(per_class, a.size)).astype(np.int64)]
            for a in (small, large_sample)
        ]
        thresholds = np.unique(np.concatenate(picks))[::-1]  # descending: rates ascend
        small_rate = (small.size - np.searchsorted(small, thresholds, side="left")) / small.size
        large_above = sum(c.size - np.searchsorted(c, thresholds, side="left") for c in large_chunks)
        large_rate = large_above / n_large
        tpr, fpr = (small_rate, large_rate) if small_is_pos else (large_rate, small_rate)
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
    return float(_trapezoid(ys, xs))


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
    """Mean and std over seeds per class, and the mean over classes (docs/method.md §6).

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
