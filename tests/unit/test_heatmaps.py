from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcdd.heatmaps import (
    auc_bar_plot,
    balanced_spread_indices,
    colorize,
    heatmap_grid,
    normalise_global,
    normalise_local,
    overlay,
    roc_plot,
    spread_indices,
)

GRID = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec_ad_subset" / "grid"


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def test_normalise_local_per_image_quantile():
    rng = np.random.default_rng(0)
    heat = rng.random((3, 50, 50)).astype(np.float32) + np.array([0, 5, 100])[:, None, None]
    out = normalise_local(heat, q=0.9)
    assert out.shape == heat.shape and out.min() >= 0 and out.max() <= 1
    for i in range(3):
        assert out[i].min() == 0.0
        assert np.mean(out[i] >= 1.0) == pytest.approx(0.1, abs=0.01)  # the top 1 − q saturate
    # each image on its own: scaling one map changes nothing in the others
    scaled = heat.copy()
    scaled[1] *= 7
    np.testing.assert_allclose(normalise_local(scaled, 0.9)[[0, 2]], out[[0, 2]], atol=1e-6)
    # a constant map is all zeros, not NaN; a 2-D map stays 2-D
    assert np.array_equal(normalise_local(np.full((4, 4), 3.0), 0.9), np.zeros((4, 4)))


def test_normalise_global_balances_labels():
    rng = np.random.default_rng(1)
    nominal = rng.random((8, 20, 20))
    anomalous = np.full((2, 20, 20), 10.0)
    heat = np.concatenate([nominal, anomalous])
    labels = np.array([0] * 8 + [1] * 2)
    out = normalise_global(heat, labels, q=0.75)
    # balanced (2 nominal + 2 anomalous): the 0.75-quantile is the anomalous level, 10 − min
    assert out[:8].max() <= 0.1 + 1e-6
    assert np.all(out[8:] == 1.0)
    # unbalanced (one label): the quantile falls inside the nominal values, which then spread over [0, 1]
    only_nominal = normalise_global(nominal, np.zeros(8), q=0.75)
    assert only_nominal.max() == 1.0 and np.mean(only_nominal >= 1.0) == pytest.approx(0.25, abs=0.02)
    # global: scaling one map changes the others
    scaled = heat.copy()
    scaled[9] *= 3
    assert not np.allclose(normalise_global(scaled, labels, 0.75)[:8], out[:8])


def test_normalisation_rejects_bad_input():
    with pytest.raises(ValueError, match="quantile q"):
        normalise_local(np.zeros((1, 4, 4)), q=1.5)
    with pytest.raises(ValueError, match="shape"):
        normalise_local(np.zeros(4), q=0.9)
    with pytest.raises(ValueError, match="3 labels for 2 heatmaps"):
        normalise_global(np.zeros((2, 4, 4)), [0, 1, 1], q=0.9)


def test_colorize_and_overlay():
    h = np.array([[0.0, 1.0]])
    rgb = colorize(h)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert rgb[0, 0, 2] > 100 and rgb[0, 0, 0] == 0  # jet: low is blue
    assert rgb[0, 1, 0] > 100 and rgb[0, 1, 2] == 0  # high is red
    grey = np.full((40, 60), 200, dtype=np.uint8)
    heat = np.random.default_rng(0).random((10, 15))
    out = overlay(grey, heat, alpha=0.5)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay(grey, heat, alpha=0.0), np.stack([grey] * 3, axis=-1))
    full = overlay(np.zeros((10, 15, 3), np.uint8), heat, alpha=1.0)
    assert np.array_equal(full, colorize(heat))
    with pytest.raises(ValueError, match="image"):
        overlay(np.zeros((4, 4, 2), np.uint8), heat)


def test_spread_indices_cover_both_ends_in_order():
    scores = np.random.default_rng(2).random(50)
    idx = spread_indices(scores, 7)
    assert len(idx) == 7 and len(set(idx.tolist())) == 7
    assert idx[0] == scores.argmin() and idx[-1] == scores.argmax()
    assert np.all(np.diff(scores[idx]) > 0)
    assert sorted(spread_indices(scores[:3], 16).tolist()) == [0, 1, 2]


def _synthetic_set(n: int, size: int = 64):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    labels = np.arange(n) % 3 == 0
    masks = [np.zeros((size, size), bool) for _ in range(n)]
    for i in np.flatnonzero(labels):
        masks[i][10:30, 20:40] = True
    heat = rng.random((n, 28, 28)).astype(np.float32) + 2 * labels[:, None, None]
    return images, heat, heat.mean(axis=(1, 2)), labels.astype(int), masks


@pytest.mark.parametrize("normalisation", ["local", "global"])
def test_heatmap_grid_writes_readable_png(tmp_path, normalisation):
    images, heat, scores, labels, masks = _synthetic_set(20)
    with_masks = heatmap_grid(
        images,
        heat,
        scores,
        labels,
        tmp_path / "a" / "grid.png",
        masks=masks,
        title="t",
        normalisation=normalisation,
    )
    width, height = _png_size(with_masks)
    assert 1000 <= width <= 2000 and 800 <= height <= 2500  # 2 bands of 8 columns, 3 rows each
    no_masks = heatmap_grid(images[:5], heat[:5], scores[:5], labels[:5], tmp_path / "b.png", q=0.9)
    small_w, small_h = _png_size(no_masks)
    assert small_w < width and small_h < height


def test_heatmap_grid_rejects_mismatched_inputs(tmp_path):
    images, heat, scores, labels, masks = _synthetic_set(4)
    with pytest.raises(ValueError, match="3 heatmaps"):
        heatmap_grid(images, heat[:3], scores, labels, tmp_path / "x.png")
    with pytest.raises(ValueError, match="normalisation"):
        heatmap_grid(images, heat, scores, labels, tmp_path / "x.png", normalisation="semi")


def test_heatmap_grid_on_real_mvtec_image(tmp_path):
    image_path = GRID / "test" / "broken" / "000.png"
    mask_path = GRID / "ground_truth" / "broken" / "000_mask.png"
    good_path = GRID / "test" / "good" / "000.png"
    if not (image_path.is_file() and mask_path.is_file() and good_path.is_file()):
        pytest.skip("../shared/data/mvtec_ad_subset/grid is not available")
    images = [np.asarray(Image.open(good_path)), np.asarray(Image.open(image_path))]
    mask = np.asarray(Image.open(mask_path)) > 0
    masks = [np.zeros_like(mask), mask]
    # heatmaps at the 224 input size, masks and images at 1024: the grid resizes both
    defect = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((224, 224)), np.float32) / 255
    heat = np.stack([np.full((224, 224), 0.1, np.float32), defect + 0.1])
    out = heatmap_grid(
        images, heat, heat.mean(axis=(1, 2)), [0, 1], tmp_path / "real.png", masks=masks, q=0.99
    )
    width, height = _png_size(out)
    assert 300 <= width <= 1000 and 500 <= height <= 1000


def test_roc_and_bar_plots(tmp_path):
    fpr = np.linspace(0, 1, 50)
    roc = roc_plot(
        {"image": (fpr, np.sqrt(fpr), 0.667), "pixel": (fpr, fpr**0.2, 0.833)}, tmp_path / "roc.png", "ROC"
    )
    assert _png_size(roc) == (600, 600)
    per_class = {
        c: 0.8 + 0.01 * i
        for i, c in enumerate(["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "x"])
    }
    bars = auc_bar_plot(
        per_class, tmp_path / "bars.png", "pixel AUC", reference={"bottle": 0.97, "grid": 0.91}
    )
    width, height = _png_size(bars)
    assert 600 <= width <= 2000 and height == 450
    with pytest.raises(ValueError, match="2 fpr and 3 tpr"):
        roc_plot({"bad": ([0, 1], [0, 0.5, 1], 0.5)}, tmp_path / "bad.png", "x")


def test_balanced_picks_show_both_labels_sorted_by_score():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(100), np.ones(900)].astype(int)  # one-vs-rest: 10 % nominal
    scores = rng.normal(labels * 2.0, 1.0)
    idx = balanced_spread_indices(scores, labels, 16)
    assert len(set(idx.tolist())) == 16
    assert (labels[idx] == 0).sum() == 8 and (labels[idx] == 1).sum() == 8
    assert np.all(np.diff(scores[idx]) >= 0)
    # each half spans its own label's extremes
    assert scores[idx].min() == scores.min() or scores[labels == 0].min() in scores[idx]
    assert scores[labels == 1].max() in scores[idx]
    # few nominal images: the anomalous ones fill the rest; one label: plain spread
    few = np.r_[np.zeros(3), np.ones(50)].astype(int)
    assert (few[balanced_spread_indices(rng.random(53), few, 16)] == 0).sum() == 3
    assert len(balanced_spread_indices(rng.random(20), np.ones(20, int), 16)) == 16
