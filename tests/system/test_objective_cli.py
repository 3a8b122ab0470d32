"""The baselines as a user runs them on Fashion-MNIST: `fcdd train -o train.objective=hsc|ae`,
`fcdd info` and `fcdd predict` on the model it wrote, a bad combination refused in one line before
any work, and `dvc exp run -S train.objective=ae` through the DVC pipeline (docs/baselines.md §5)."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fcdd.cli import main
from fcdd.detector import Detector
from tests.system.test_dvc_pipeline import (
    OE_SAMPLES,
    VENV_BIN,
    fmnist_source,
    make_pipeline_repo,
    ran_stages,
    run,
)

REPO_PARAMS = "params.yaml"  # the repository's: presets fmnist + cpu


def _tiny(tmp, objective: str) -> list[str]:
    """-o overrides that cut the repository's Fashion-MNIST settings to seconds."""
    over = [
        f"train.objective={objective}",
        f"data.root={fmnist_source()}",
        f"data.cache_dir={tmp / 'cache'}",
        "data.train_limit=160",
        "data.test_limit=100",
        "data.num_workers=0",
        "train.epochs=1",
        "train.batch_size=64",
        "train.threads=1",
        "train.device=cpu",
        "train.progress=false",
        f"train.output_dir={tmp / 'runs'}",
        "tracking.enabled=false",
        "evaluation.heatmap_count=4",
    ]
    if OE_SAMPLES.is_dir():
        return [*over, f"anomalies.oe_source={OE_SAMPLES}", "anomalies.oe_limit=32"]
    return [*over, "anomalies.kind=none"]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["hsc", "ae"])
def test_fcdd_train_with_a_baseline_objective_on_fashion_mnist(objective, tmp_path):
    torch.set_num_threads(1)
    overrides = [a for o in _tiny(tmp_path, objective) for a in ("-o", o)]
    code, _, err = _cli("train", "--params", REPO_PARAMS, "--classes", "trouser", *overrides)
    assert code == 0, err[-2000:]
    run_dir = tmp_path / "runs" / "fmnist" / "trouser" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["image_auc"] <= 1 and metrics.get("pixel_auc") is None  # no masks
    assert Detector.load(run_dir / "model.pt").meta["objective"] == objective

    code, out, _ = _cli("info", str(run_dir / "model.pt"))
    assert code == 0 and yaml.safe_load(out)["objective"] == objective

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(images / f"{i}.png")
    code, _, err = _cli(
        "predict", "--model", str(run_dir / "model.pt"), str(images), "--out", str(tmp_path / "pred")
    )
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader((tmp_path / "pred" / "scores.csv").open()))
    assert len(rows) == 2 and all(np.isfinite(float(r["score"])) for r in rows)
    assert all((tmp_path / "pred" / r["heatmap"]).is_file() for r in rows)


def test_a_bad_combination_stops_fcdd_train_before_any_work(tmp_path):
    overrides = [a for o in _tiny(tmp_path, "ae") for a in ("-o", o)]
    code, out, err = _cli("train", "--params", REPO_PARAMS, *overrides, "-o", "anomalies.kind=semi")
    assert code != 0 and "train.objective ae trains on nominal images only" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder made


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_dvc_exp_run_trains_the_autoencoder_through_the_pipeline(tmp_path):
    """`dvc exp run -S train.objective=ae` on the tiny pipeline: every stage runs, the models are
    autoencoders, dvc.lock records the objective, and the report is the baseline's."""
    repo = tmp_path / "repo"
    env = make_pipeline_repo(repo, tmp_path / "prefect")
    dvc = str(VENV_BIN / "dvc")
    done = run([dvc, "exp", "run", "-S", "train.objective=ae"], repo, env)
    assert ran_stages(done.stdout) == {"prepare", "train", "evaluate", "report"}
    for cls in ("t-shirt-top", "trouser"):
        model = repo / "runs" / "fmnist" / cls / "seed0" / "model.pt"
        assert Detector.load(model).meta["objective"] == "ae"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["objective"] == "ae"
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["classes"] == 2 and 0 <= metrics["image_auc"] <= 1  # the summary: mean, weakest class
    per_class = (repo / "outputs" / "evaluate" / "auc_per_class.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in per_class[1:]} == {"t-shirt-top", "trouser"}


def test_info_names_fcdd_for_a_model_file_that_names_no_objective():
    from fcdd.model_info import model_info
    from fcdd.testing import tiny_detector

    det = tiny_detector()
    assert "objective" not in det.meta  # FCDD's files name none
    assert model_info(det)["objective"] == "fcdd"


@pytest.mark.slow
def test_fcdd_train_the_autoencoder_on_a_folder_dataset_with_masks(
    defect_folder, make_folder_config, tmp_path
):
    """From the CLI on the user's own folder layout: a pixel AUC from the error maps, and
    `fcdd evaluate` re-scores the model file with its own objective."""
    torch.set_num_threads(1)
    data = make_folder_config(defect_folder, tmp_path).to_dict()
    data.pop("preset")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    code, _, err = _cli("train", "--params", str(params), "-o", "train.objective=ae", "-o", "train.epochs=2")
    assert code == 0, err[-2000:]
    model = tmp_path / "runs" / "folder" / "tiles" / "seed0" / "model.pt"
    trained = json.loads((model.parent / "metrics.json").read_text())
    assert 0 <= trained["pixel_auc"] <= 1 and Detector.load(model).meta["objective"] == "ae"
    code, _, err = _cli("evaluate", str(model), "--out", str(tmp_path / "eval"))
    assert code == 0, err[-2000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["pixel_auc"] == pytest.approx(trained["pixel_auc"], abs=1e-6)
