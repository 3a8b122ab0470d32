"""MVTec-layout categories with, without and with partial ground_truth/: loading and evaluation."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.calibration import MaskScorer, score_calibration
from fcdd.config import Config
from fcdd.data import DataError, build_datasets, describe
from fcdd.detector import Detector
from fcdd.experiment import evaluate
from fcdd.metrics import PixelAUC
from fcdd.models import build_model
from fcdd.scoring import full_heatmap

torch.set_num_threads(1)
SIZE = 40


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def category(tmp_path: Path) -> Path:
    """widget/: 14 train/good, 3 test/good, 3 test/scratch with ground_truth/scratch/<stem>_mask.png."""
    rng = np.random.default_rng(0)
    base = tmp_path / "mvtec" / "widget"
    for split, n in (("train", 14), ("test", 3)):
        for i in range(n):
            _save(
                base / split / "good" / f"{i:03d}.png", rng.integers(20, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            )
    for i in range(3):
        image = rng.integers(20, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        image[6 + 8 * i : 18 + 8 * i, 10:22], mask[6 + 8 * i : 18 + 8 * i, 10:22] = 250, 255
        _save(base / "test" / "scratch" / f"{i:03d}.png", image)
        _save(base / "ground_truth" / "scratch" / f"{i:03d}_mask.png", mask)
    return base


def _cfg(tmp_path: Path, base: Path) -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.cache_dir = "mvtec", str(base.parent), str(tmp_path / "cache")
    cfg.data.stored_size, cfg.data.num_workers = 34, 0
    cfg.model.net, cfg.model.input_size, cfg.model.pretrained, cfg.model.sigma = "cnn32", 32, False, 4.0
    cfg.anomalies.kind = "none"
    cfg.evaluation.heatmap_count, cfg.evaluation.calibration = 2, 4
    return cfg


def _detector(cfg: Config, bundle) -> Detector:
    """An untrained net: its maps are arbitrary, which is all the bookkeeping below needs."""
    torch.manual_seed(0)
    model = build_model(cfg, in_channels=3).eval()
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, cfg.sigma, cfg.model.input_size)
    detector = Detector(model, upsampler, bundle.preprocess, {"dataset": "mvtec", "class": "widget"})
    detector.meta["calibration"] = score_calibration(detector, bundle.calibration, 8)
    return detector


def _maps(detector: Detector, test_set) -> list[np.ndarray]:
    """Each test image's map at its mask's resolution, as evaluate compares them."""
    up = torch.cat([detector.score_tensor(test_set[i]["image"][None])[2] for i in range(len(test_set))])
    return [full_heatmap(up[i].float().numpy(), test_set.full_mask(i).shape) for i in range(len(test_set))]


def test_with_masks_every_test_image_counts_for_pixel_metrics(tmp_path, category):
    cfg = _cfg(tmp_path, category)
    bundle = build_datasets(cfg, "widget", 0)
    assert bundle.test.has_masks and bundle.test.mask_known.all()
    metrics, _ = evaluate(_detector(cfg, bundle), bundle.test, cfg, tmp_path / "eval")
    assert metrics["pixel_images"] == 6 and "pixel_note" not in metrics
    assert metrics["pixel_auc"] is not None and metrics["aupro"] is not None


def test_without_ground_truth_one_warning_image_auc_only(tmp_path, category):
    shutil.rmtree(category / "ground_truth")
    cfg = _cfg(tmp_path, category)
    with pytest.warns(UserWarning, match="widget: no ground_truth/ folder: pixel metrics are off") as caught:
        bundle = build_datasets(cfg, "widget", 0)
    assert len([w for w in caught if "ground_truth" in str(w.message)]) == 1
    test = bundle.test
    assert not test.has_masks and len(test) == 6 and int(test.labels.sum()) == 3  # MVTec's own test split
    assert "no masks (" in describe(bundle.summary) and bundle.summary["test"]["mask_note"]
    metrics, artifacts = evaluate(_detector(cfg, bundle), test, cfg, tmp_path / "eval")
    assert metrics["image_auc"] is not None and metrics["pixel_auc"] is None and metrics["aupro"] is None
    assert "no ground_truth/ folder" in metrics["pixel_note"] and "roc_pixel" not in artifacts
    assert not any(k.endswith("_mask_iou") for k in metrics)  # calibrated masks have nothing to compare to
    json.dumps(metrics)  # metrics.json holds the note
    cfg.anomalies.kind = "semi"
    with (
        pytest.warns(UserWarning),
        pytest.raises(DataError, match="semi needs anomalous test images with masks"),
    ):
        build_datasets(cfg, "widget", 0)


def test_partial_masks_pixel_metrics_on_the_images_that_have_one(tmp_path, category):
    (category / "ground_truth" / "scratch" / "001_mask.png").unlink()
    cfg = _cfg(tmp_path, category)
    with pytest.warns(UserWarning, match="1 of 3 anomalous test images have no mask .*scratch/001.png"):
        bundle = build_datasets(cfg, "widget", 0)
    test = bundle.test
    unmasked = test.paths.index(str(category / "test" / "scratch" / "001.png"))
    assert test.has_masks and test.mask_known.tolist() == [i != unmasked for i in range(6)]
    assert bundle.summary["test"]["masks_found"] == 2 and "masks found for 2 of 3" in describe(bundle.summary)
    detector = _detector(cfg, bundle)
    metrics, _ = evaluate(detector, test, cfg, tmp_path / "eval")
    assert metrics["pixel_images"] == 5 and metrics["image_auc"] is not None
    assert metrics["pixel_note"] == (
        "pixel metrics over the 5 of 6 test images with ground truth: 1 of 3 anomalous images have no mask"
    )
    # The same numbers as pixel metrics computed over the five images with ground truth only.
    maps, known = _maps(detector, test), [i for i in range(6) if i != unmasked]
    pix, scorer = PixelAUC(), MaskScorer(detector.meta["calibration"], *_range(maps))
    for i in known:
        pix.update(maps[i], test.full_mask(i))
        scorer.update(maps[i], test.full_mask(i))
    assert metrics["pixel_auc"] == pytest.approx(pix.compute())
    assert metrics["oracle_mask_iou"] == pytest.approx(scorer.compute()["oracle_mask_iou"])
    cfg.anomalies.kind = "semi"
    with (
        pytest.warns(UserWarning),
        pytest.raises(DataError, match="semi needs a mask for every anomalous test image; 1 have none"),
    ):
        build_datasets(cfg, "widget", 0)


def _range(maps: list[np.ndarray]) -> tuple[float, float]:
    """evaluate's MaskScorer bins span the maps of all test images at the input size."""
    return float(min(m.min() for m in maps)), float(max(m.max() for m in maps))


GRID = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec_ad_subset" / "grid"


@pytest.mark.skipif(not GRID.is_dir(), reason="../shared/data absent")
def test_real_grid_without_and_with_partial_ground_truth(tmp_path):
    """The real MVTec grid category seen through symlinks: all masks, none, and all but 'bent'."""
    types = sorted(p.name for p in (GRID / "ground_truth").iterdir())
    views = {}
    for name, with_masks in (("full", types), ("none", None), ("partial", [t for t in types if t != "bent"])):
        base = tmp_path / name / "grid"
        for split in ("train", "test"):
            base.mkdir(parents=True, exist_ok=True)
            (base / split).symlink_to((GRID / split).resolve())
        for d in with_masks or []:
            (base / "ground_truth").mkdir(exist_ok=True)
            (base / "ground_truth" / d).symlink_to((GRID / "ground_truth" / d).resolve())
        cfg = _cfg(tmp_path, base)
        cfg.data.stored_size = 64
        with pytest.warns(UserWarning) if name != "full" else contextlib.nullcontext():
            views[name] = build_datasets(cfg, "grid", 0).test
    full, none, partial = views["full"], views["none"], views["partial"]
    assert len(full) == len(none) == len(partial) == 14 and none.labels.tolist() == full.labels.tolist()
    assert full.mask_known.all() and not none.has_masks and not none.mask_known.any()
    bent = [d == "bent" for d in partial.defect_types]
    assert any(bent) and partial.mask_known.tolist() == [not b for b in bent]
