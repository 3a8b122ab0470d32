"""FCDD beside its baselines (docs/baselines.md §5): the comparison table and the paper's figure.

The figure shows the same test images in rows; its columns are the input, each objective's
heatmap (FCDD's upsampled map, HSC's input gradient, AE's reconstruction error) over the image, and
the ground-truth mask where the data has masks. Every heatmap is normalised on its own (docs/method.md
§3, local normalisation), so the columns compare where each method points, not its scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fcdd import heatmaps as figs

TITLES = {"fcdd": "FCDD", "hsc": "HSC gradient", "ae": "AE error"}
_CELL_IN = 1.6


def figure_indices(labels: Sequence[int] | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` test images for the figure: anomalous ones drawn with ``seed`` (the figure is about
    explaining anomalies), in index order; nominal ones fill in where there are fewer than ``k``."""
    y = np.asarray(labels).ravel()
    rng = np.random.default_rng(seed)
    anomalous, nominal = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    picks = rng.choice(anomalous, size=min(k, anomalous.size), replace=False)
    if picks.size < k:
        picks = np.concatenate(
            [picks, rng.choice(nominal, size=min(k - picks.size, nominal.size), replace=False)]
        )
    return np.sort(picks).astype(np.int64)


def comparison_figure(
    images: Sequence[np.ndarray],
    heatmaps: Mapping[str, np.ndarray],
    path: str | Path,
    masks: Sequence[np.ndarray] | None = None,
    captions: Sequence[str] | None = None,
    q: float = 0.97,
    title: str = "",
) -> Path:
    """A PNG with one row per image: input, one overlay per objective (``heatmaps``: name ->
    (n, h, w) maps at any size, normalised per image with quantile ``q``), ground truth."""
    n = len(images)
    if not n:
        raise ValueError("comparison_figure: no images")
    for name, maps in heatmaps.items():
        if len(maps) != n:
            raise ValueError(f"comparison_figure: {len(maps)} {name} heatmaps for {n} images")
    if masks is not None and len(masks) != n:
        raise ValueError(f"comparison_figure: {len(masks)} masks for {n} images")
    columns = ["input", *(TITLES.get(name, name) for name in heatmaps)]
    columns += ["ground truth"] if masks is not None else []
    fig = Figure(figsize=(0.6 + len(columns) * _CELL_IN, 0.7 + n * _CELL_IN), dpi=100)
    axes = fig.subplots(n, len(columns), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    normalised = {
        name: [figs.normalise_local(np.asarray(m, np.float32), q) for m in maps]
        for name, maps in heatmaps.items()
    }
    for row in range(n):
        image = figs._thumbnail(figs._as_rgb_uint8(images[row]))
        cells = [image, *(figs.overlay(image, maps[row]) for maps in normalised.values())]
        if masks is not None:
            cells.append(figs._thumbnail((np.asarray(masks[row]) > 0).astype(np.uint8) * 255, nearest=True))
        for col, cell in enumerate(cells):
            axes[row, col].imshow(cell, cmap="gray" if cell.ndim == 2 else None, vmin=0, vmax=255)
        if captions is not None:
            axes[row, 0].set_ylabel(captions[row], fontsize=8)
    for col, name in enumerate(columns):
        axes[0, col].set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return figs._save(fig, path)


def figure_heatmaps(detector: Any, test_set: Any, indices: Sequence[int], blur: bool) -> np.ndarray:
    """(k, H, W) heatmaps of test images ``indices`` at the input size, by ``detector``'s objective;
    ``blur``: the baselines' display blur (docs/baselines.md §4; FCDD's maps are left as they are)."""
    import torch

    from fcdd.objectives.blur import display_blur

    x = torch.stack([test_set[int(i)]["image"] for i in indices])
    _, _, heat = detector.score_tensor(x)
    heat = heat[:, None].float()
    smooth = display_blur(detector) if blur else None
    if smooth is not None:
        heat = smooth(heat)
    return heat[:, 0].cpu().numpy()


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std, n) of the values that are not None; (None, None, 0) for none."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return None, None, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def comparison_table(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> dict[str, Any]:
    """Per class and objective the mean/std over seeds of image and pixel AUC, and the mean over
    classes. ``rows``: one per run with "objective", "class", "image_auc", "pixel_auc"."""
    classes = list(dict.fromkeys(str(r["class"]) for r in rows))
    table: dict[str, Any] = {"classes": classes, "objectives": list(objectives), "per_class": {}, "mean": {}}
    for cls in classes:
        entry = {}
        for obj in objectives:
            mine = [r for r in rows if str(r["class"]) == cls and r["objective"] == obj]
            for key in ("image_auc", "pixel_auc"):
                mean, std, runs = mean_std([r.get(key) for r in mine])
                entry[f"{obj}.{key}"] = {"mean": mean, "std": std, "runs": runs}
        table["per_class"][cls] = entry
    for obj in objectives:
        for key in ("image_auc", "pixel_auc"):
            means = [table["per_class"][c][f"{obj}.{key}"]["mean"] for c in classes]
            table["mean"][f"{obj}.{key}"] = mean_std(means)[0]
    return table
