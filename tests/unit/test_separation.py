"""The guard rail after training (fcdd/separation.py): good images against the run's own synthetic
anomalies, one warning line with the likely cause when the model cannot separate them."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd import separation as S
from fcdd.config import load_config
from fcdd.data.synthetic import CutPaste
from fcdd.data.transforms import TestTransform

torch.set_num_threads(1)
PLAIN = TestTransform(
    {"input_size": 32, "channels": 1, "resize": None, "crop": None, "normalisation": {"kind": "none"}}
)


def flat_images(n: int = 24) -> list[torch.Tensor]:
    """Good parts: smooth grey with a little noise, so a pasted patch changes the local texture."""
    rng = np.random.default_rng(0)
    base = np.linspace(60, 190, 32)[None, :].repeat(32, 0)
    return [
        torch.from_numpy(np.clip(base + rng.normal(0, 2, (32, 32)), 0, 255).astype(np.uint8))[None]
        for _ in range(n)
    ]


def roughness(x: torch.Tensor) -> torch.Tensor:
    """How much neighbouring pixels differ beyond the smooth ramp."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().amax((1, 2, 3))


def both(score):
    """A stand-in detector whose image score and heatmap maximum are ``score``."""
    return lambda x: (score(x), score(x))


def blind_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A detector whose image score misses the anomalies and whose heatmap maximum finds them."""
    return torch.arange(x.shape[0], dtype=torch.float32) % 2, roughness(x)


def test_ranking_auc_counts_ties_half():
    assert S.ranking_auc(np.array([0, 1]), np.array([2, 3])) == 1.0
    assert S.ranking_auc(np.array([2, 3]), np.array([0, 1])) == 0.0
    assert S.ranking_auc(np.array([1, 1]), np.array([1, 1])) == 0.5
    assert np.isnan(S.ranking_auc(np.array([]), np.array([1.0])))


def test_a_model_that_separates_passes():
    result = S.check_separation(flat_images(), CutPaste(), PLAIN, both(roughness), seed=0)
    assert result.ok and result.cause is None and result.auc >= S.MIN_AUC
    assert result.n == 24 and result.images == "calibration"
    assert result.anomalous["median"] > result.good["median"]


def test_the_heatmap_maximum_alone_separating_passes():
    """Small anomalies move the map's mean little: a model whose heatmap maximum separates them passes."""
    result = S.check_separation(flat_images(), CutPaste(scar=True), PLAIN, blind_mean, seed=0)
    assert result.auc < S.MIN_AUC <= result.auc_max and result.ok


@pytest.mark.parametrize(
    ("score", "losses", "cause"),
    [
        (lambda x: torch.full((x.shape[0],), 0.37), (), "nearly constant"),
        (lambda x: -roughness(x), (), "LOWER than good images"),
        (
            lambda x: torch.zeros(x.shape[0]) + torch.arange(x.shape[0]) % 3,
            (0.80, 0.79),
            "loss hardly fell (0.8 -> 0.79)",
        ),
        (lambda x: torch.zeros(x.shape[0]) + torch.arange(x.shape[0]) % 3, (0.80, 0.20), "too weakly"),
    ],
)
def test_a_model_that_does_not_separate_gets_one_line_with_the_likely_cause(score, losses, cause):
    result = S.check_separation(
        flat_images(), CutPaste(), PLAIN, both(score), seed=0, images="training", losses=losses
    )
    assert not result.ok and cause in result.cause
    line = result.line("folder/part seed 0")
    assert "\n" not in line and line.startswith("warning: folder/part seed 0: the model does not separate")
    assert "(training, n=24)" in line and f"AUC {result.auc:.2f} by image score" in line


def test_the_line_names_the_heatmap_maximum_only_where_it_is_a_second_score():
    """With model.image_score: max both AUCs are one measurement: the line says it once."""
    weak = lambda x: torch.zeros(x.shape[0]) + torch.arange(x.shape[0]) % 3  # noqa: E731
    same = S.check_separation(flat_images(), CutPaste(), PLAIN, both(weak), seed=0)
    assert not same.ok and same.score_is_max and "heatmap maximum" not in same.line()
    two = S.check_separation(flat_images(), CutPaste(), PLAIN, lambda x: (weak(x), -roughness(x)), seed=0)
    assert not two.ok and not two.score_is_max
    assert f"AUC {two.auc:.2f} by image score, {two.auc_max:.2f} by heatmap maximum" in two.line()


def test_the_check_repeats_and_leaves_the_global_generators_alone():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = S.check_separation(flat_images(), CutPaste(), PLAIN, both(roughness), seed=3)
    b = S.check_separation(flat_images(), CutPaste(), PLAIN, both(roughness), seed=3)
    assert a == b
    assert torch.equal(states[0], torch.get_rng_state())
    assert np.array_equal(states[1], np.random.get_state()[1]) and states[2] == random.getstate()


def _folder(root, n_good: int = 30, n_bad: int = 6) -> None:
    rng = np.random.default_rng(0)
    for sub in ("good", "bad", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n_good):
        Image.fromarray(rng.integers(90, 140, (40, 40), dtype=np.uint8)).save(root / "good" / f"{i}.png")
    for i in range(n_bad):
        img = rng.integers(90, 140, (40, 40), dtype=np.uint8)
        img[10:20, 10:20] = 250
        mask = np.zeros((40, 40), np.uint8)
        mask[10:20, 10:20] = 255
        Image.fromarray(img).save(root / "bad" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


@pytest.mark.parametrize("calibration", [0.25, 0])
def test_a_run_writes_separation_json_and_warns_in_one_line(tmp_path, capfd, calibration):
    """End to end on a tiny folder dataset with a mix: the guard uses the held-out images where
    there are any, else the training images, and a failing check is one stderr line."""
    from fcdd.experiment import run_experiment

    _folder(tmp_path / "data")
    cfg = load_config(
        None,
        [
            "data.dataset=folder",
            f"data.root={tmp_path / 'data'}",
            "data.classes=[part]",
            "data.folder={nominal: [good], anomalous: [bad], masks: [masks]}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "model={net: cnn32, input_size: 32, sigma: 4.0}",
            "anomalies.kind={perlin: 0.5, scar: 0.25, confetti: 0.25}",
            "anomalies.probability=0.5",
            "train.epochs=1",
            "train.batch_size=8",
            "train.progress=false",
            "train.device=cpu",
            f"train.output_dir={tmp_path / 'runs'}",
            f"evaluation.calibration={calibration}",
            "evaluation.heatmap_count=2",
            "tracking.enabled=false",
        ],
    )
    result = run_experiment(cfg, "part", 0)
    record = json.loads((result.run_dir / "separation.json").read_text())
    assert record["images"] == ("calibration" if calibration else "training")
    summary = json.loads((result.run_dir / "data_summary.json").read_text())["train"]
    assert record["n"] == (summary["calibration"] if calibration else summary["nominal"]) > 0
    assert set(record) >= {"auc", "auc_max", "good", "anomalous", "ok", "cause", "min_auc"}
    assert result.artifacts["separation"] == result.run_dir / "separation.json"
    warnings = [line for line in capfd.readouterr().err.splitlines() if "does not separate" in line]
    assert len(warnings) == (0 if record["ok"] else 1)
    if warnings:
        assert record["cause"] in warnings[0]


def test_no_anomalies_no_guard(tmp_path):
    from fcdd.separation import guard

    class Data:
        class train:
            source = None

    assert guard(Data, lambda x: x, 0, [], 8) is None


def test_a_check_without_images_is_strict_json_with_null_aucs():
    import json

    result = S.check_separation([], CutPaste(), PLAIN, both(roughness), seed=0)
    assert not result.ok and result.cause == "no images"
    text = json.dumps(result.to_dict(), allow_nan=False)  # NaN would raise here
    assert json.loads(text)["auc"] is None and json.loads(text)["auc_max"] is None
