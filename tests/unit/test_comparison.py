"""The comparison of FCDD with its baselines: figure rows and columns, the table's aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcdd.comparison import comparison_figure, comparison_table, figure_indices


def test_figure_indices_prefer_anomalies_and_repeat_with_the_seed():
    labels = np.array([0] * 6 + [1] * 4)
    picks = figure_indices(labels, 3, seed=1)
    assert picks.size == 3 and set(picks) <= {6, 7, 8, 9} and list(picks) == sorted(picks)
    assert np.array_equal(picks, figure_indices(labels, 3, seed=1))
    filled = figure_indices(labels, 6)
    assert set(range(6, 10)) <= set(filled) and filled.size == 6  # all anomalies, then nominal ones
    assert figure_indices(labels, 20).size == 10


def test_comparison_figure_has_a_row_per_image_and_a_column_per_objective(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(3)]
    maps = {name: rng.random((3, 28, 28)).astype(np.float32) for name in ("fcdd", "hsc", "ae")}
    masks = [np.zeros((28, 28), bool) for _ in range(3)]
    with_gt = comparison_figure(images, maps, tmp_path / "gt.png", masks=masks, captions=["a", "b", "c"])
    without = comparison_figure(images, maps, tmp_path / "plain.png")
    w_gt, h_gt = Image.open(with_gt).size
    w, h = Image.open(without).size
    assert h_gt == h and w_gt > w  # the ground-truth column adds width, not rows
    assert w == pytest.approx(100 * (0.6 + 4 * 1.6), abs=2) and h == pytest.approx(
        100 * (0.7 + 3 * 1.6), abs=2
    )
    with pytest.raises(ValueError, match="2 hsc heatmaps for 3 images"):
        comparison_figure(images, {"fcdd": maps["fcdd"], "hsc": maps["hsc"][:2]}, tmp_path / "x.png")


def test_comparison_table_means_over_seeds_then_classes():
    rows = [
        {"objective": "fcdd", "class": "a", "image_auc": 0.9, "pixel_auc": None},
        {"objective": "fcdd", "class": "a", "image_auc": 0.8, "pixel_auc": None},
        {"objective": "fcdd", "class": "b", "image_auc": 0.6, "pixel_auc": None},
        {"objective": "ae", "class": "a", "image_auc": 0.5, "pixel_auc": 0.7},
        {"objective": "ae", "class": "b", "image_auc": 0.7, "pixel_auc": 0.9},
    ]
    table = comparison_table(rows, ["fcdd", "ae"])
    a = table["per_class"]["a"]["fcdd.image_auc"]
    assert (
        a["mean"] == pytest.approx(0.85) and a["runs"] == 2 and a["std"] == pytest.approx(0.0707107, rel=1e-5)
    )
    assert table["mean"]["fcdd.image_auc"] == pytest.approx((0.85 + 0.6) / 2)
    assert table["mean"]["fcdd.pixel_auc"] is None and table["mean"]["ae.pixel_auc"] == pytest.approx(0.8)
    assert table["classes"] == ["a", "b"]
