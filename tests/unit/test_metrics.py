import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from fcdd.metrics import PixelAUC, aggregate, aupro, image_metrics


def test_image_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # 1 decimal: many ties
    out = image_metrics(labels, scores)
    assert out["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out["aupr"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert out["fpr"][0] == 0 and out["tpr"][-1] == 1
    assert len(out["fpr"]) == len(out["tpr"]) == len(out["thresholds"])
    # trapezoid under the returned curve is the AUC
    assert np.trapezoid(out["tpr"], out["fpr"]) == pytest.approx(out["auc"], abs=1e-12)


def test_image_metrics_errors_name_the_problem():
    with pytest.raises(ValueError, match="only nominal"):
        image_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only anomalous"):
        image_metrics([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"found \[2\]"):
        image_metrics([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="does not match"):
        image_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        image_metrics([0, 1], [0.1, float("nan")])


def test_pixel_auc_hand_computed():
    pixel_auc = PixelAUC()
    # anomalous {0.35, 0.8, 0.4}, nominal {0.1, 0.4}: pairs 0.35>0.1, 0.8>both, 0.4>0.1, 0.4=0.4
    pixel_auc.update(np.array([[0.1, 0.4], [0.35, 0.8]]), np.array([[0, 0], [1, 1]], dtype=bool))
    pixel_auc.update(np.array([[0.4]]), np.array([[True]]))
    assert pixel_auc.counts == (3, 2)
    assert pixel_auc.compute() == pytest.approx((4 + 0.5) / 6, abs=1e-15)


@pytest.mark.parametrize("chunk", [1 << 20, 5000])  # many small parts gathered; parts split into chunks
@pytest.mark.parametrize("anomalous_fraction", [0.05, 0.8])  # both query directions
def test_pixel_auc_matches_sklearn_on_1e6_pixels_with_ties(anomalous_fraction, chunk, monkeypatch):
    monkeypatch.setattr("fcdd.metrics._CHUNK", chunk)
    rng = np.random.default_rng(1)
    n, h, w = 16, 250, 250  # 1e6 pixels over several batches
    masks = rng.random((n, h, w)) < anomalous_fraction
    scores = np.round(rng.gamma(2.0, 1.0, (n, h, w)) + 0.7 * masks, 2)  # 2 decimals: many ties
    pixel_auc = PixelAUC()
    pixel_auc.update(scores[:3], masks[:3])  # a batch
    for i in range(3, n):
        pixel_auc.update(scores[i], masks[i])  # single images
    expected = roc_auc_score(masks.ravel(), scores.ravel())
    assert pixel_auc.compute() == pytest.approx(expected, abs=1e-9)
    # compute() is repeatable and later updates are included
    assert pixel_auc.compute() == pytest.approx(expected, abs=1e-9)
    pixel_auc.update(scores[0], ~masks[0])
    more = roc_auc_score(
        np.concatenate([masks.ravel(), ~masks[0].ravel()]),
        np.concatenate([scores.ravel(), scores[0].ravel()]),
    )
    assert pixel_auc.compute() == pytest.approx(more, abs=1e-9)


def test_pixel_auc_roc_curve_is_downsampled_and_consistent():
    rng = np.random.default_rng(2)
    masks = rng.random((4, 100, 100)) < 0.1
    scores = rng.random((4, 100, 100)) + 0.5 * masks
    pixel_auc = PixelAUC(dtype=np.float64)
    pixel_auc.update(scores, masks)
    fpr, tpr = pixel_auc.roc_curve(max_points=200)
    assert len(fpr) <= 200 and len(fpr) == len(tpr)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(pixel_auc.compute(), abs=2e-3)


def test_pixel_auc_rejects_bad_input():
    pixel_auc = PixelAUC()
    with pytest.raises(ValueError, match="does not match masks shape"):
        pixel_auc.update(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        pixel_auc.update(np.full((2, 2), np.nan), np.zeros((2, 2), dtype=bool))
    pixel_auc.update(np.random.default_rng(0).random((8, 8)), np.zeros((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="0 anomalous"):
        pixel_auc.compute()


def _aupro_reference(masks, maps, max_fpr):
    """Bergmann et al.: every distinct score is a threshold; trapezoid up to max_fpr, interpolated."""
    regions = []
    for m, s in zip(masks, maps, strict=True):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [s[lab == k] for k in range(1, n + 1)]
    neg = np.concatenate([s[~m] for m, s in zip(masks, maps, strict=True)])
    fpr, pro = [0.0], [0.0]
    for t in np.unique(np.concatenate([s.ravel() for s in maps]))[::-1]:
        fpr.append(np.mean(neg >= t))
        pro.append(np.mean([np.mean(r >= t) for r in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    j = np.searchsorted(fpr, max_fpr, side="right")
    xs, ys = fpr[:j], pro[:j]
    if xs[-1] < max_fpr:
        y = np.interp(max_fpr, fpr[j - 1 : j + 1], pro[j - 1 : j + 1])
        xs, ys = np.append(xs, max_fpr), np.append(ys, y)
    return np.trapezoid(ys, xs) / max_fpr


def test_aupro_hand_case():
    # one row of 10 pixels: region A = pixels 0-1 (scores 10, 0), region B = pixel 3 (score 10);
    # nominal: one pixel at 5, six at 0.
    mask = np.zeros((1, 10), dtype=bool)
    mask[0, [0, 1, 3]] = True
    scores = np.array([[10.0, 0, 5, 10, 0, 0, 0, 0, 0, 0]])
    # curve: (0, 0) -> (0, 0.75) [t in (5, 10]] -> (1/7, 0.75) [t in (0, 5]] -> (1, 1) [t = 0]
    f1 = 1 / 7
    pro_at_limit = 0.75 + 0.25 * (0.3 - f1) / (1 - f1)
    expected = (0.75 * f1 + (0.75 + pro_at_limit) / 2 * (0.3 - f1)) / 0.3
    assert aupro([mask], [scores]) == pytest.approx(expected, abs=1e-12)
    assert _aupro_reference([mask], [scores], 0.3) == pytest.approx(expected, abs=1e-12)


def test_aupro_perfect_and_inverted_maps():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:5, 2:5] = mask[10:18, 12:15] = True
    assert aupro([mask], [mask.astype(float)]) == pytest.approx(1.0)
    assert aupro([mask], [(~mask).astype(float)]) == pytest.approx(0.0)


def test_aupro_matches_exact_reference_on_random_maps():
    rng = np.random.default_rng(3)
    masks, maps = [], []
    for _ in range(4):
        m = ndimage.binary_dilation(rng.random((40, 40)) < 0.01, iterations=2)
        s = np.round(ndimage.gaussian_filter(rng.random((40, 40)), 2) + 0.05 * m, 3)  # ties too
        masks.append(m)
        maps.append(s)
    expected = _aupro_reference(masks, maps, 0.3)
    assert 0.3 < expected < 0.99  # a non-trivial case
    assert aupro(masks, maps) == pytest.approx(expected, abs=2.5e-4)
    assert aupro(masks, maps, max_fpr=0.1) == pytest.approx(_aupro_reference(masks, maps, 0.1), abs=2.5e-4)


def test_aupro_errors():
    with pytest.raises(ValueError, match="no anomalous pixel"):
        aupro([np.zeros((4, 4), dtype=bool)], [np.zeros((4, 4))])
    with pytest.raises(ValueError, match="image 0"):
        aupro([np.zeros((4, 4), dtype=bool)], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="max_fpr"):
        aupro([np.ones((4, 4), dtype=bool)], [np.zeros((4, 4))], max_fpr=0)


def test_aggregate_over_seeds_and_classes():
    rows = [
        {"class": "grid", "seed": 0, "image_auc": 0.8, "pixel_auc": 0.9, "aupro": None},
        {"class": "grid", "seed": 1, "image_auc": 0.6, "pixel_auc": float("nan"), "aupro": None},
        {"class": "bottle", "seed": 0, "image_auc": 1.0, "pixel_auc": 0.7},
    ]
    out = aggregate(rows)
    grid = out["per_class"]["grid"]
    assert grid["image_auc"] == {"mean": pytest.approx(0.7), "std": pytest.approx(math.sqrt(0.02)), "n": 2}
    assert grid["pixel_auc"] == {"mean": 0.9, "std": 0.0, "n": 1}
    assert grid["aupro"] == {"mean": None, "std": None, "n": 0}
    assert out["mean"]["image_auc"] == pytest.approx((0.7 + 1.0) / 2)
    assert out["mean"]["pixel_auc"] == pytest.approx((0.9 + 0.7) / 2)
    assert out["mean"]["aupro"] is None
    with pytest.raises(ValueError, match="no 'class'"):
        aggregate([{"seed": 0, "image_auc": 0.5}])
