"""The `fcdd` command as a user runs it: train, info, predict, evaluate, config, and its errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcdd.cli import main
from fcdd.overlay import LEGEND_MIN_WIDTH

REPO = Path(__file__).resolve().parents[2]


def _params_file(tmp: Path, cfg) -> Path:
    """A params.yaml holding exactly the resolved configuration (so the CLI reads what the test built)."""
    path = tmp / "params.yaml"
    data = cfg.to_dict()
    data.pop("preset")
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def trained(defect_folder, make_folder_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    params = _params_file(out, make_folder_config(defect_folder, out))
    log = io.StringIO()
    with contextlib.redirect_stderr(log):  # not a terminal: no progress bar, one line per epoch
        assert main(["train", "--params", str(params), "-o", "train.epochs=2"]) == 0
    model = out / "runs" / "folder" / "tiles" / "seed0" / "model.pt"
    assert model.is_file()
    epoch_lines = [line for line in log.getvalue().splitlines() if line.startswith("tiles seed 0: epoch")]
    assert [line.split()[4] for line in epoch_lines] == ["1/2", "2/2"], log.getvalue()[-500:]
    return out, params, model


def test_train_writes_a_summary(trained, capsys):
    out, _, _ = trained
    summary = json.loads((out / "runs" / "folder" / "summary.json").read_text())
    assert set(summary["per_class"]) == {"tiles"}
    assert 0 <= summary["mean"]["image_auc"] <= 1


def test_info_describes_the_model(trained, capsys):
    assert main(["info", str(trained[2])]) == 0
    info = yaml.safe_load(capsys.readouterr().out)
    assert info["net"] == "cnn32" and info["class"] == "tiles" and info["dataset"] == "folder"
    assert info["receptive_field"]["r"] == 22 and "image_auc" in info["metrics"]
    assert info["image_score"] == "mean"  # the paper's: the mean of the map


def test_predict_writes_one_row_and_one_heatmap_per_image(trained, defect_folder, tmp_path, capsys):
    _, _, model = trained
    images = tmp_path / "mine"
    images.mkdir()
    shutil.copy(defect_folder / "good" / "g00.png", images / "a.png")
    shutil.copy(defect_folder / "defect" / "d00.png", images / "b.png")
    Image.fromarray(np.full((30, 70, 3), 120, np.uint8)).save(images / "c.jpg")  # another size, JPEG
    (images / "notes.txt").write_text("not an image: ignored by folder search")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--out", str(out), "--threshold", "0.5", str(images)]) == 0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png", "c.jpg"]
    assert all(r["label"] in ("good", "defect") for r in rows)
    for r in rows:
        heat = out / r["heatmap"]
        with Image.open(heat) as h, Image.open(r["path"]) as src:
            # the image at its own resolution (top left), the legend below it (at least 400 px wide)
            assert h.format == "PNG" and h.width == max(src.width, LEGEND_MIN_WIDTH) and h.height > src.height
    assert float(rows[1]["score"]) > float(rows[0]["score"])  # the red square scores higher
    assert "wrote" in capsys.readouterr().out


def test_evaluate_rescores_the_test_set(trained, tmp_path, capsys):
    out, params, model = trained
    assert main(["evaluate", str(model), "--params", str(params), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    trained_metrics = json.loads((model.parent / "metrics.json").read_text())
    assert metrics["image_auc"] == pytest.approx(trained_metrics["image_auc"], abs=1e-6)
    assert metrics["pixel_auc"] == pytest.approx(trained_metrics["pixel_auc"], abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--model", "missing.pt", "x.png"], "no such file or folder"),
        (["info", "missing.pt"], "missing.pt: no such model file"),
        (["config", "-o", "train.nope=1"], "unknown key train.nope"),
        (["config", "-o", "train.epochs=many"], "train.epochs: expected an integer"),
        (
            ["train", "--classes", "0", "-o", "data.root=/nonexistent", "-o", "tracking.enabled=false"],
            "/nonexistent",
        ),
    ],
)
def test_errors_are_one_clear_line(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_unknown_class_lists_the_known_ones(capsys, monkeypatch, tmp_path):
    fmnist = REPO / "data" / "fashion-mnist"
    if not (fmnist / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not set up (scripts/setup_data.sh)")
    monkeypatch.chdir(REPO)
    assert main(["train", "--classes", "socks", "-o", f"train.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "socks" in err and "t-shirt-top" in err and "ankle-boot" in err


def test_predict_refuses_a_non_image(trained, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    # exit 1: files failed (listed), as opposed to 2, a usage error before any work
    assert main(["predict", "--model", str(trained[2]), "--out", str(tmp_path / "o"), str(bad)]) == 1
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert (tmp_path / "o" / "failures.csv").read_text().count("broken.png") == 1


def test_console_command_is_installed_and_helps():
    exe = Path(sys.executable).with_name("fcdd")
    for sub in ([], ["train"], ["evaluate"], ["predict"], ["info"], ["config"]):
        res = subprocess.run([str(exe), *sub, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "usage: fcdd" in res.stdout, (sub, res.stderr)


def test_predict_and_info_from_the_registry(trained, defect_folder, tmp_path, capsys):
    """`fcdd predict --model models:/NAME@champion`: the user's path to a registered model."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from pipelines import pyfunc, registry

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("cli", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = pyfunc.log_detector_model(trained[2])
    registry.register_version(
        client, uri, "fcdd-folder-tiles", info.model_uri, {"image_auc": 0.9}, "folder/tiles"
    )
    image = defect_folder / "defect" / "d01.png"
    args = ["--tracking-uri", uri]
    assert (
        main(
            [
                "predict",
                "--model",
                "models:/fcdd-folder-tiles@champion",
                *args,
                "--out",
                str(tmp_path / "p"),
                str(image),
            ]
        )
        == 0
    )
    with open(tmp_path / "p" / "scores.csv") as f:
        (row,) = list(csv.DictReader(f))
    from fcdd.detector import Detector

    assert float(row["score"]) == pytest.approx(
        float(Detector.load(trained[2]).score([image]).scores[0]), rel=1e-5
    )
    capsys.readouterr()
    assert main(["info", "models:/fcdd-folder-tiles@champion", *args]) == 0
    assert "tiles" in capsys.readouterr().out
    assert main(["info", "models:/no-such-model@champion", *args]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_train_with_tracking_logs_and_registers_through_the_flows_code(
    defect_folder, make_folder_config, tmp_path, monkeypatch
):
    """`fcdd train` honours tracking.enabled: an MLflow run with metrics and a registered version."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # git / data.dvc look-ups of the tracking tags happen here
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = make_folder_config(
        defect_folder,
        tmp_path,
        "train.epochs=1",
        "tracking.enabled=true",
        f"tracking.uri={store}",
        f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
        "tracking.onnx=false",
    )
    params = _params_file(tmp_path, cfg)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--params", str(params)]) == 0
    assert "registered fcdd-folder-tiles version 1" in log.getvalue()
    client = mlflow.MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name.startswith("fcdd")]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["image_auc"] <= 1.0
    assert "train/loss" in run.data.metrics
    (version,) = client.search_model_versions("name='fcdd-folder-tiles'")
    assert version.run_id == run.info.run_id
    assert client.get_model_version_by_alias("fcdd-folder-tiles", "champion").version == version.version


@pytest.mark.slow
def test_evaluate_a_registry_model_finds_its_relative_data_root_from_the_run(
    defect_folder, make_folder_config, tmp_path, monkeypatch, capsys
):
    """model.pt names data/tiles relative to its run folder; a models:/ copy is downloaded elsewhere,
    so evaluate takes the source run's folder (MLflow tag) to find the data, from any folder."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    shutil.copytree(defect_folder, work / "data" / "tiles")
    monkeypatch.chdir(work)
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracking = [f"tracking.uri={store}", f"tracking.artifact_location={tmp_path / 'mlartifacts'}"]
    cfg = make_folder_config(Path("data/tiles"), work, "train.epochs=1", "tracking.enabled=true", *tracking)
    assert main(["train", "--params", str(_params_file(work, cfg)), "-o", "tracking.onnx=false"]) == 0
    trained = json.loads((work / "runs/folder/tiles/seed0/metrics.json").read_text())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["evaluate", "models:/fcdd-folder-tiles/1", "--tracking-uri", store, "--out", "ev"]) == 0, (
        capsys.readouterr().err
    )
    metrics = json.loads((elsewhere / "ev" / "metrics.json").read_text())
    assert metrics["n_test"] == trained["n_test"]
    assert metrics["image_auc"] == pytest.approx(trained["image_auc"], abs=1e-6)


def test_train_with_a_missing_data_root_fails_before_tracking_opens_its_store(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlruns.db"
    argv = ["train", "--params", str(REPO / "params.yaml"), "--classes", "0", "-o", "data.root=no/such/data"]
    argv += ["-o", "tracking.enabled=true", "-o", f"tracking.uri=sqlite:///{store}"]
    argv += [
        "-o",
        f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
        "-o",
        f"train.output_dir={tmp_path}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.root no/such/data: no such file or folder" in err, err
    assert str(tmp_path) in err  # a relative root: where it was looked for
    assert not store.exists() and not (tmp_path / "mlartifacts").exists()


def test_train_with_tracking_but_no_mlflow_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_pipelines(name, *args, **kwargs):
        if name.startswith(("pipelines", "mlflow")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pipelines)
    for module in ("pipelines.plugin", "pipelines.tracking"):  # as if never imported in this process
        monkeypatch.delitem(sys.modules, module, raising=False)
    code = main(
        ["train", "--classes", "0", "-o", "tracking.enabled=true", "-o", f"train.output_dir={tmp_path}"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "tracking.enabled is true" in err and "tracking.enabled=false" in err


@pytest.mark.slow
def test_evaluate_rebuilds_a_semi_models_split_from_its_own_config(
    defect_folder, make_folder_config, tmp_path, monkeypatch, capsys
):
    # Trained with a relative data.root and the semi split; evaluated from another folder with no
    # params file: the same test set (training anomalies not put back) and the same scores.
    work = tmp_path / "work"
    shutil.copytree(defect_folder, work / "data" / "tiles")
    monkeypatch.chdir(work)
    cfg = make_folder_config(Path("data/tiles"), work, "anomalies.kind=semi", "train.epochs=1")
    params = _params_file(work, cfg)
    assert main(["train", "--params", str(params)]) == 0
    model = work / "runs" / "folder" / "tiles" / "seed0" / "model.pt"
    trained = json.loads((model.parent / "metrics.json").read_text())
    assert trained["n_anomalous"] == 11  # the 12 defect images are all test images but the one moved

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(model), "--out", "ev"]) == 0
    metrics = json.loads((elsewhere / "ev" / "metrics.json").read_text())
    assert metrics["n_test"] == trained["n_test"] and metrics["n_anomalous"] == trained["n_anomalous"]
    assert metrics["image_auc"] == pytest.approx(trained["image_auc"], abs=1e-6)
    assert metrics["pixel_auc"] == pytest.approx(trained["pixel_auc"], abs=1e-6)

    def rows(path):
        with open(path) as f:
            return [(Path(r["path"]).name, r["label"], r["score"]) for r in csv.DictReader(f)]

    assert rows(elsewhere / "ev" / "scores.csv") == rows(model.parent / "scores.csv")

    # The root as given (relative) does not exist here; once the resolved one is gone too, the error
    # names both, and --root overrides explicitly.
    shutil.rmtree(work / "data" / "tiles")
    capsys.readouterr()
    assert main(["evaluate", str(model), "--out", "ev2"]) != 0
    err = capsys.readouterr().err
    assert "data.root not found" in err and "resolved at training" in err and "data/tiles (as given" in err
    assert main(["evaluate", str(model), "--out", "ev3", "--root", str(defect_folder)]) == 0
    again = json.loads((elsewhere / "ev3" / "metrics.json").read_text())
    assert again["n_test"] == trained["n_test"]
