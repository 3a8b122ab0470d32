"""Heatmaps for display (docs/method.md §3) and the evaluation figures (docs/method.md §6).

Figures are drawn on ``matplotlib.figure.Figure`` objects rendered by Agg, never through pyplot,
so nothing global changes and no window opens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

_QUANTILE_SAMPLE = 4_000_000  # pixels used for the global quantile (the minimum uses all)
_CELL_PX = 160  # displayed size of one image in a grid
_COLUMNS = 8  # images per band of a grid; more images wrap into further bands
_DPI = 100


def _check_q(q: float) -> None:
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile q: must be in (0, 1], got {q}")


def _as_stack(heatmaps: np.ndarray) -> np.ndarray:
    h = np.asarray(heatmaps, dtype=np.float32)
    if h.ndim == 2:
        h = h[None]
    if h.ndim != 3:
        raise ValueError(f"heatmaps: expected (n, h, w) or (h, w), got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heatmaps: contain NaN or infinite values")
    return h


def _scale(h: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """(h − low) / high clipped to [0, 1]; a zero ``high`` (a constant map) gives zeros."""
    shifted = h - low
    high = np.asarray(high, dtype=np.float32)
    safe = np.where(high > 0, high, 1.0).astype(np.float32)
    out = np.clip(shifted / safe, 0.0, 1.0)
    return np.where(high > 0, out, 0.0).astype(np.float32)


def normalise_local(heatmaps: np.ndarray, q: float) -> np.ndarray:
    """Each map on its own: subtract its minimum, divide by its q-quantile (after the shift), clip to [0, 1]."""
    _check_q(q)
    h = _as_stack(heatmaps)
    low = h.min(axis=(1, 2), keepdims=True)
    high = np.quantile(h - low, q, axis=(1, 2), keepdims=True)
    out = _scale(h, low, high)
    return out if np.ndim(heatmaps) == 3 else out[0]


def normalise_global(
    heatmaps: np.ndarray, labels: Sequence[int] | np.ndarray, q: float, seed: int = 0
) -> np.ndarray:
    """All maps with one minimum and one q-quantile, computed on a label-balanced subset.

    The majority label is subsampled (with ``seed``) to the size of the minority so that a test set
    of mostly nominal images does not set the scale; with a single label all maps are used. The
    quantile reads at most 4e6 evenly strided pixels of that subset.
    """
    _check_q(q)
    h = _as_stack(heatmaps)
    y = np.asarray(labels).ravel()
    if y.shape[0] != h.shape[0]:
        raise ValueError(f"labels: {y.shape[0]} labels for {h.shape[0]} heatmaps")
    chosen = _balanced_indices(y, seed)
    subset = h[chosen]
    low = subset.min()
    stride = max(1, subset.size // _QUANTILE_SAMPLE)
    high = np.quantile(subset.ravel()[::stride] - low, q)
    return _scale(h, low, high)


def _balanced_indices(labels: np.ndarray, seed: int) -> np.ndarray:
    values, counts = np.unique(labels, return_counts=True)
    if values.size < 2:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    smallest = counts.min()
    parts = [
        rng.choice(np.flatnonzero(labels == v), size=smallest, replace=False)
        if c > smallest
        else np.flatnonzero(labels == v)
        for v, c in zip(values, counts, strict=True)
    ]
    return np.sort(np.concatenate(parts))


def colorize(h01: np.ndarray) -> np.ndarray:
    """A map in [0, 1] (h, w) to a jet-coloured uint8 image (h, w, 3)."""
    h = np.asarray(h01, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"colorize: expected an (h, w) map, got shape {h.shape}")
    rgba = matplotlib.colormaps["jet"](np.clip(h, 0.0, 1.0))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected (h, w), (h, w, 1) or (h, w, 3), got shape {np.shape(image)}")
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        if img.max(initial=0.0) <= 1.0:  # floats in [0, 1]
            img = img * 255
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return img


def _resize_map(h: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if h.shape == size_hw:
        return h
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    resized = Image.fromarray(np.asarray(h, dtype=np.float32)).resize(size_hw[::-1], resample)
    return np.asarray(resized, dtype=np.float32)


def overlay(image: np.ndarray, heat01: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the jet-coloured map over the image; the map is resized (bilinear) to the image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    img = _as_rgb_uint8(image)
    heat = _resize_map(np.asarray(heat01, dtype=np.float32), img.shape[:2])
    blended = (1 - alpha) * img.astype(np.float32) + alpha * colorize(heat).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def spread_indices(scores: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Indices of k samples evenly spread over the score ranking, most nominal first.

    Always includes the lowest and the highest score (for k >= 2).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    k = min(k, s.size)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    positions = np.round(np.linspace(0, s.size - 1, k)).astype(np.int64)
    return order[positions]


def balanced_spread_indices(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, k: int
) -> np.ndarray:
    """k picks, half nominal and half anomalous where both exist, each half spread over its own
    score ranking, returned from most nominal to most anomalous score.

    A one-vs-rest test set is 90 % anomalous: spreading over the whole ranking alone would show
    almost no nominal image, and a figure should show what the model finds normal too.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    groups = [np.flatnonzero(y == v) for v in np.unique(y)]
    if len(groups) < 2:
        return spread_indices(s, k)
    nominal, anomalous = groups[0], groups[-1]
    k_anomalous = min(anomalous.size, k - min(nominal.size, k // 2))
    k_nominal = min(nominal.size, k - k_anomalous)
    picks = np.concatenate(
        [nominal[spread_indices(s[nominal], k_nominal)], anomalous[spread_indices(s[anomalous], k_anomalous)]]
    )
    return picks[np.argsort(s[picks], kind="stable")]


def _thumbnail(image: np.ndarray, size: int = _CELL_PX, nearest: bool = False) -> np.ndarray:
    """Resize so the longer side is ``size`` px (keeps the aspect ratio)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new_hw == (h, w):
        return image
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(image).resize(new_hw[::-1], resample))


def heatmap_grid(
    images: Sequence[np.ndarray],
    heatmaps: np.ndarray,
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    path: str | Path,
    masks: Sequence[np.ndarray] | None = None,
    title: str = "",
    normalisation: str = "local",
    q: float = 0.97,
    max_images: int = 16,
) -> Path:
    """A PNG grid of test images from most nominal to most anomalous (by score).

    Rows per band of up to 8 columns: the input, the heatmap over it, and the ground-truth mask when
    ``masks`` is given. ``images`` are uint8 (h, w[, 3]) at any size (each may differ); ``heatmaps``
    (n, H, W) are normalised over all n (``"local"``: each map alone; ``"global"``: one scale from a
    label-balanced subset) before ``max_images`` columns are picked: half nominal, half anomalous, each
    spread over its own score ranking (:func:`balanced_spread_indices`).
    """
    n = len(images)
    heat = _as_stack(heatmaps)
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if not n or heat.shape[0] != n or s.size != n or y.size != n:
        raise ValueError(
            f"heatmap_grid: need equal non-zero counts; got {n} images, {heat.shape[0]} heatmaps, "
            f"{s.size} scores, {y.size} labels"
        )
    if masks is not None and len(masks) != n:
        raise ValueError(f"heatmap_grid: {len(masks)} masks for {n} images")
    if normalisation == "local":
        heat01 = normalise_local(heat, q)
    elif normalisation == "global":
        heat01 = normalise_global(heat, y, q)
    else:
        raise ValueError(f"normalisation: {normalisation!r} is not one of local, global")

    chosen = balanced_spread_indices(s, y, max_images)
    row_names = ["input", "heatmap"] + (["ground truth"] if masks is not None else [])
    n_rows = len(row_names)
    columns = min(_COLUMNS, chosen.size)
    bands = -(-chosen.size // columns)
    cell_in = (_CELL_PX + 20) / _DPI
    fig = Figure(figsize=(0.4 + columns * cell_in, 0.5 + bands * n_rows * cell_in + bands * 0.35), dpi=_DPI)
    axes = fig.subplots(bands * n_rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for rank, idx in enumerate(chosen):
        band, col = divmod(rank, columns)
        img = _thumbnail(_as_rgb_uint8(images[idx]))
        cells = [img, overlay(img, heat01[idx])]
        if masks is not None:
            mask = (np.asarray(masks[idx]) > 0).astype(np.uint8) * 255
            cells.append(_thumbnail(mask, nearest=True))
        for r, cell in enumerate(cells):
            axes[band * n_rows + r, col].imshow(
                cell, cmap="gray" if cell.ndim == 2 else None, vmin=0, vmax=255
            )
        anomalous = bool(y[idx])
        axes[band * n_rows, col].set_title(
            f"{'anomalous' if anomalous else 'good'}\nscore {s[idx]:.4g}",
            fontsize=9,
            color="tab:red" if anomalous else "tab:green",
        )
    for band in range(bands):
        for r, name in enumerate(row_names):
            axes[band * n_rows + r, 0].set_ylabel(name, fontsize=9)
    heading = f"{title}\n" if title else ""
    fig.suptitle(
        f"{heading}{normalisation} normalisation (q={q}), most nominal → most anomalous, {chosen.size} of {n}",
        fontsize=11,
    )
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI, format="png")
    return out


def roc_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str
) -> Path:
    """ROC curves ``{name: (fpr, tpr, auc)}`` with the chance diagonal and AUCs in the legend."""
    if not curves:
        raise ValueError("roc_plot: no curves given")
    fig = Figure(figsize=(6, 6), dpi=_DPI)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC 0.5)")
    for name, (fpr, tpr, auc) in curves.items():
        if len(fpr) != len(tpr):
            raise ValueError(f"roc_plot: curve {name!r} has {len(fpr)} fpr and {len(tpr)} tpr values")
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUC {auc:.3f})")
    ax.set(
        xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def auc_bar_plot(
    per_class: Mapping[str, float],
    path: str | Path,
    title: str,
    reference: Mapping[str, float] | None = None,
) -> Path:
    """Per-class AUC bars with their values, the mean as a line, and optional paper markers."""
    if not per_class:
        raise ValueError("auc_bar_plot: no classes given")
    names = list(per_class)
    values = np.array([np.nan if per_class[c] is None else per_class[c] for c in names], dtype=np.float64)
    fig = Figure(figsize=(min(20.0, max(6.0, 0.7 * len(names) + 2)), 4.5), dpi=_DPI)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    bars = ax.bar(x, np.nan_to_num(values), color="tab:blue", label="this run")
    for bar, v in zip(bars, values, strict=True):
        # inside the bar top, so paper markers just above it stay readable
        inside = not np.isnan(v) and v > 0.1
        text = "n/a" if np.isnan(v) else f"{v:.2f}"
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            v - 0.05 if inside else (0 if np.isnan(v) else v) + 0.01,
            text,
            ha="center",
            fontsize=8,
            color="white" if inside else "black",
        )
    if np.isfinite(values).any():
        mean = float(np.nanmean(values))
        ax.axhline(mean, color="tab:blue", linestyle=":", linewidth=1, label=f"mean {mean:.3f}")
    if reference:
        ref_x = [i for i, c in enumerate(names) if c in reference]
        ref_y = [reference[names[i]] for i in ref_x]
        ax.scatter(ref_x, ref_y, marker="D", color="black", zorder=3, label="paper")
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set(ylim=(0, 1.08), ylabel="AUC", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
