"""run_experiment end to end on a tiny folder dataset with masks, and the Detector file it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd.data import build_datasets
from fcdd.detector import Detector, DetectorError
from fcdd.experiment import run_dir_for, run_experiment


@pytest.fixture(scope="module")
def trained(defect_folder, make_folder_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    cfg = make_folder_config(defect_folder, out)
    return cfg, run_experiment(cfg, "tiles", seed=0)


def test_run_folder_holds_model_metrics_scores_and_figures(trained):
    cfg, result = trained
    run = result.run_dir
    assert run == run_dir_for(cfg, "tiles", 0)
    for name in ("checkpoint.pt", "model.pt", "metrics.json", "scores.csv", "roc_image.csv", "roc_pixel.csv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 10 + 12  # 25 % of 40 good images, all 12 defects
    for key in ("image_auc", "pixel_auc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # Bright red squares on a smooth texture: even 4 epochs find them, image- and pixel-wise.
    assert metrics["image_auc"] > 0.8 and metrics["pixel_auc"] > 0.8, metrics
    with open(run / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["n_test"]
    assert {r["defect_type"] for r in rows if r["label"] == "1"} == {"defect"}
    for fig in ("heatmaps_local", "heatmaps_global", "roc"):
        with Image.open(run / "figures" / f"{fig}.png") as im:
            assert im.format == "PNG" and 300 < im.width < 2500
    assert len(result.history) == cfg.train.epochs


def test_detector_file_loads_safely_and_reproduces_the_test_scores(trained):
    cfg, result = trained
    state = torch.load(result.model_path, weights_only=True)  # no pickled code in the file
    assert state["format"] == "fcdd-detector/1"
    det = Detector.load(result.model_path)
    assert det.meta["class"] == "tiles" and det.meta["metrics"]["image_auc"] == result.metrics["image_auc"]
    test = build_datasets(cfg, "tiles", 0).test
    with open(result.run_dir / "scores.csv") as f:
        expected = {r["path"]: float(r["score"]) for r in csv.DictReader(f)}
    out = det.score(test.paths)  # raw files through the Detector's own preprocessing
    got = dict(zip(test.paths, out.scores, strict=True))
    for path, score in expected.items():
        assert got[path] == pytest.approx(score, rel=1e-4, abs=1e-6), path
    for path, heat in zip(test.paths, out.heatmaps, strict=True):
        with Image.open(path) as im:
            assert heat.shape == (im.height, im.width)
    # bytes round trip
    again = Detector.from_bytes(det.to_bytes())
    assert np.allclose(again.score(test.paths[:2]).scores, out.scores[:2])


def test_detector_refuses_foreign_and_broken_files(tmp_path):
    bad = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(DetectorError, match="not an FCDD model file"):
        Detector.load(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(DetectorError, match="junk.pt"):
        Detector.load(junk)
    with pytest.raises(DetectorError, match="no such model file"):
        Detector.load(tmp_path / "missing.pt")


def test_detector_input_checks(trained):
    det = Detector.load(trained[1].model_path)
    with pytest.raises(DetectorError, match="expected"):
        det.score([np.zeros((4, 4, 2), np.uint8)])
    with pytest.raises(DetectorError, match="no such image"):
        det.score(["/nonexistent.png"])
    out = det.score([np.full((40, 60, 3), 128, np.uint8), np.full((20, 20), 0.5)])
    assert [h.shape for h in out.heatmaps] == [(40, 60), (20, 20)]
    assert np.isfinite(out.scores).all()


def test_resumed_experiment_does_not_retrain(trained):
    cfg, result = trained
    before = result.model_path.stat().st_mtime_ns
    again = run_experiment(cfg, "tiles", seed=0)  # finished checkpoint: evaluate only
    # the checkpoint keeps the history without its wall-clock keys (same bytes on every run)
    timing = ("images_per_s", "epoch_time_s")
    assert again.history == [{k: v for k, v in e.items() if k not in timing} for e in result.history]
    assert again.metrics["image_auc"] == pytest.approx(result.metrics["image_auc"])
    assert again.model_path.stat().st_mtime_ns >= before


def test_training_start_says_what_was_loaded_and_limits_record_the_kept_images(
    defect_folder, make_folder_config, tmp_path, capsys
):
    cfg = make_folder_config(
        defect_folder, tmp_path, "train.epochs=1", "data.train_limit=22", "data.test_limit=9"
    )
    result = run_experiment(cfg, "tiles", seed=0)
    err = capsys.readouterr().err
    summary = json.loads((result.run_dir / "data_summary.json").read_text())
    line = next(ln for ln in err.splitlines() if ln.startswith("loaded folder/tiles"))
    assert f"train {summary['train']['nominal']} nominal (of {summary['train']['nominal_available']}" in line
    test = summary["test"]
    assert f"test {test['nominal']} good, {test['anomalous']} defective" in err
    assert f"masks found for {test['masks_found']} of {test['anomalous']}" in err and test["masks_found"] > 0
    with open(result.run_dir / "kept_images.csv") as f:
        rows = list(csv.DictReader(f))
    train_paths = [r["path"] for r in rows if r["split"] == "train"]
    test_paths = [r["path"] for r in rows if r["split"] == "test"]
    assert len(train_paths) == summary["train"]["nominal"] == 22 - summary["train"]["calibration"]
    assert all(Path(p).is_file() and "good" in p for p in train_paths)
    with open(result.run_dir / "scores.csv") as f:
        assert test_paths == [r["path"] for r in csv.DictReader(f)]  # the same 9 images, in order
    assert len(test_paths) == 9


def test_inverted_or_constant_scores_are_said_in_one_line():
    """Issue 22.5: fcdd train printed image AUC 0.000 without a word. evaluate() warns (and
    metrics.json keeps the line) when the scores are inverted or near-constant."""
    import numpy as np

    from fcdd.evaluation import score_warning

    scores = np.array([0.1, 0.2, 0.3, 0.4])
    assert score_warning(scores, {"image_auc": 0.8, "pixel_auc": None}) is None
    inverted = score_warning(scores, {"image_auc": 0.0, "pixel_auc": 0.3})
    assert inverted.startswith("scores are inverted (image auc 0.000, pixel auc 0.300 < 0.5")
    assert "\n" not in inverted
    # the heatmaps find the defects, the image scores do not rank: said so, with the counts
    located = score_warning(scores, {"image_auc": 0.06, "pixel_auc": 0.955}, labels=[0, 0, 0, 1])
    assert located.startswith(
        "image scores are inverted (image auc 0.060 < 0.5 over 3 good and 1 anomalous test images) "
        "while the heatmaps find the defects (pixel auc 0.955)"
    )
    assert "has not learnt" not in located and "\n" not in located
    flat = score_warning(np.full(5, 3.25), {"image_auc": 0.5})
    assert flat.startswith("the scores are near-constant (3.25 to 3.25 over 5 test images)")


def test_a_run_scored_by_the_heatmap_maximum_stores_and_reports_that_score(
    trained, defect_folder, make_folder_config, tmp_path
):
    mean_cfg, mean_result = trained
    cfg = make_folder_config(defect_folder, tmp_path, "model.image_score=max")
    result = run_experiment(cfg, "tiles", seed=0)
    det = Detector.load(result.model_path)
    assert det.image_score == "max" and det.meta["config"]["model.image_score"] == "max"
    assert "image_score" not in det.meta["net"]  # the net is rebuilt from "net" alone
    assert "image_score" not in Detector.load(mean_result.model_path).meta  # the mean's files as before
    # a result key: the mean's run is another fingerprint, never resumed as this one
    assert det.meta["settings"]["hash"] != Detector.load(mean_result.model_path).meta["settings"]["hash"]
    test = build_datasets(cfg, "tiles", 0).test
    with open(result.run_dir / "scores.csv") as f:
        written = [float(r["score"]) for r in csv.DictReader(f)]
    out = det.score(test.paths, full_size=False)
    assert written == pytest.approx([float(h.max()) for h in out.heatmaps], rel=1e-4)
    assert written == pytest.approx(list(out.scores), rel=1e-4)
