"""The logged pyfunc reproduces the in-memory Detector; bad input gets a clear 400-class error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
torch = pytest.importorskip("torch")

from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from shared_fixtures import PREPROCESS, images, tiny_detector  # noqa: E402

from fcdd import runs  # noqa: E402
from fcdd.config import load_config  # noqa: E402
from fcdd.experiment import RunResult, run_dir_for  # noqa: E402
from pipelines import pyfunc, registry, tracking  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient(uri).create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    return uri, experiment


@pytest.mark.slow
def test_logged_model_reproduces_detector(store, tmp_path):
    detector = tiny_detector()
    path = detector.save(tmp_path / "model.pt")
    with mlflow.start_run(experiment_id=store[1]) as run:
        info = pyfunc.log_detector_model(path)
    model = mlflow.pyfunc.load_model(info.model_uri)
    imgs = images()
    expected = detector.score(imgs)
    out = model.predict(pyfunc.images_frame(imgs))
    np.testing.assert_allclose(out["score"].to_numpy(), expected.scores, rtol=1e-5, atol=1e-7)
    for i, heatmap in enumerate(expected.heatmaps):
        assert (out["height"][i], out["width"][i]) == heatmap.shape
        np.testing.assert_allclose(pyfunc.decode_heatmap(out["heatmap"][i]), heatmap, rtol=1e-5, atol=1e-7)
    as_lists = model.predict(pyfunc.images_frame(imgs[:1]), params={"heatmap_format": "list"})
    np.testing.assert_allclose(np.array(as_lists["heatmap"][0]), expected.heatmaps[0], rtol=1e-5, atol=1e-7)
    # arrays straight into the unwrapped model
    direct = model.unwrap_python_model().predict(None, np.stack([imgs[0], imgs[0]]))
    np.testing.assert_allclose(direct["score"].to_numpy(), [expected.scores[0]] * 2, rtol=1e-5)
    # the Detector file inside the model, without running the model's code
    loaded = registry.load_detector(f"runs:/{run.info.run_id}/model")
    np.testing.assert_allclose(loaded.score(imgs).scores, expected.scores, rtol=1e-6)
    assert loaded.preprocess == PREPROCESS


@pytest.mark.slow
def test_bad_inputs_are_invalid_parameter_errors(store, tmp_path):
    path = tiny_detector().save(tmp_path / "model.pt")
    with mlflow.start_run(experiment_id=store[1]):
        info = pyfunc.log_detector_model(path, max_pixels=32 * 32)
    model = mlflow.pyfunc.load_model(info.model_uri)
    cases = {
        "neither base64": pyfunc.pd.DataFrame({"image": ["not an image!"]}),
        "not a readable image": pyfunc.pd.DataFrame({"image": [pyfunc.base64.b64encode(b"hello").decode()]}),
        "exceeds the limit of 1024": pyfunc.images_frame([np.zeros((40, 40), np.uint8)]),
        "no such image file": pyfunc.pd.DataFrame({"image": [str(tmp_path / "missing.png")]}),
    }
    for message, frame in cases.items():
        with pytest.raises(MlflowException, match=message) as err:
            model.predict(frame)
        assert err.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="heatmap_format"):
        model.predict(pyfunc.images_frame(images(1)), params={"heatmap_format": "gif"})


@pytest.mark.slow
def test_tracked_experiment_registers_and_promotes(tmp_path, monkeypatch):
    """tracked_experiment with registration, a real Detector file, no training."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    cfg = load_config(
        None,
        overrides=[
            f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
            f"train.output_dir={tmp_path / 'runs'}",
        ],
    )
    aucs = {0: 0.7, 1: 0.9, 2: 0.8}

    def fake_experiment(cfg, cls, seed, callbacks=None):
        run_dir = run_dir_for(cfg, cls, seed)
        model_path = tiny_detector(seed).save(run_dir / "model.pt")
        (run_dir / "metrics.json").write_text(json.dumps({"image_auc": aucs[seed]}))
        metrics = {"image_auc": aucs[seed], "pixel_auc": None, "n_test": 30, "calibration_n": 19}
        metrics |= {
            "a0.05_far": 0.04,
            "a0.05_detection_rate": 0.8,
            "a0.01_far": 0.0,
            "a0.05_far_ci_low": 0.01,
        }
        return RunResult(cfg.data.dataset, cls, seed, run_dir, metrics, [], model_path, {})

    monkeypatch.setattr(runs, "run_experiment", fake_experiment)
    results = [tracking.tracked_experiment(cfg, "T-shirt/top", seed) for seed in (0, 1, 2)]
    assert [r["champion"] for r in results] == [True, True, False]
    assert [r["model_version"] for r in results] == ["1", "2", "3"]
    assert results[0]["model_name"] == "fcdd-fmnist-t-shirt-top"
    champion = registry.load_detector("models:/fcdd-fmnist-t-shirt-top@champion")
    assert champion.meta["seed"] == 1
    challenger = registry.load_detector("models:/fcdd-fmnist-t-shirt-top@challenger")
    assert challenger.meta["seed"] == 2
    with pytest.raises(ValueError, match="cannot fetch"):
        registry.load_detector("models:/fcdd-fmnist-nothing@champion")


@pytest.mark.slow
def test_versions_are_registered_through_the_logged_model_with_a_model_card(tmp_path, monkeypatch):
    """MLflow 3: the logged model lists its registered version (not "Not registered"); the
    version's description is a model card, and the versions table gets a few tags, not every number."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = load_config(None, overrides=[f"tracking.uri={uri}", f"train.output_dir={tmp_path / 'runs'}"])

    def fake_experiment(cfg, cls, seed, callbacks=None):
        run_dir = run_dir_for(cfg, cls, seed)
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        (run_dir / "figures" / "heatmaps_local.png").write_bytes(b"\x89PNG fake")
        model_path = tiny_detector(seed).save(run_dir / "model.pt")
        metrics = {"image_auc": 0.8, "pixel_auc": 0.9, "aupro": 0.5, "n_test": 30, "calibration_n": 19}
        metrics |= {"a0.05_far": 0.04, "a0.05_detection_rate": 0.75, "a0.01_far": 0.0, "seed": seed}
        history = [{"epoch": e, "loss": 1.0 / e, "lr": 0.01} for e in (1, 2, 3)]
        return RunResult(cfg.data.dataset, cls, seed, run_dir, metrics, history, model_path, {})

    monkeypatch.setattr(runs, "run_experiment", fake_experiment)
    row = tracking.tracked_experiment(cfg, "T-shirt/top", 0)
    client = MlflowClient(uri)
    version = client.get_model_version(row["model_name"], row["model_version"])
    model_id = version.source.removeprefix("models:/")  # the logged model it was registered from
    assert model_id.startswith("m-")
    logged = client.get_logged_model(model_id)
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "fcdd-fmnist-t-shirt-top", "version": "1"}
    ]
    assert {a.path for a in client.list_logged_model_artifacts(model_id, "figures")} == {
        "figures/heatmaps_local.png"
    }  # the logged model's artifacts carry the heatmap figure
    card = version.description
    for text in (
        "class **T-shirt/top** of the **fmnist** data",
        "`cnn28`",
        "3 epochs",
        "**Image AUC**: 0.8000; **pixel AUC**: 0.9000",
        "19 held-out good images; smallest usable alpha 0.0500",
        "**Recommended alpha**: 0.05",
        "false-alarm rate 0.0400, detection rate 0.7500",
        "fcdd predict path/to/images --model models:/fcdd-fmnist-t-shirt-top/1 --alpha 0.05",
        "mlflow models serve -m models:/fcdd-fmnist-t-shirt-top/1 --env-manager local",
        '"dataframe_split"',
        f"get-artifact?path=figures%2Fheatmaps_local.png&run_uuid={row['mlflow_run_id']}",
    ):
        assert text in card, text
    assert not re.search(r"\w+=\d+\.\d{4}", card)  # no wall of key=value numbers
    assert set(version.tags) == {
        "metric.image_auc", "metric.pixel_auc", registry.TAG_PROTOCOL, registry.TAG_METRIC,
        registry.TAG_SCORE, registry.TAG_CALIBRATION, registry.TAG_COMPARISON,
        registry.TAG_OBJECTIVE,  # fcdd | hsc | ae: the registry browsed by objective
    }  # fmt: skip


@pytest.mark.slow
def test_served_model_returns_p_values_decisions_and_masks(store, tmp_path):
    from fcdd import calibration as conformal

    detector = tiny_detector()
    imgs = images()
    raw = detector.score(imgs)
    # A calibration whose scores put the first image at the top and the rest inside.
    cal = np.sort(raw.scores)[:-1]
    pixel_max = np.array([float(np.median([h.max() for h in raw.heatmaps]))] * len(cal))
    detector.meta["calibration"] = {"n": len(cal), "image_scores": list(map(float, cal)),
                                    "pixel_max": list(map(float, pixel_max))}  # fmt: skip
    path = detector.save(tmp_path / "model.pt")
    with mlflow.start_run(experiment_id=store[1]):
        info = pyfunc.log_detector_model(path)
    model = mlflow.pyfunc.load_model(info.model_uri)
    alpha = 0.5
    for fmt in ("png", "rle"):
        out = model.predict(pyfunc.images_frame(imgs), params={"alpha": alpha, "mask_format": fmt})
        p = conformal.p_values(cal, raw.scores)
        np.testing.assert_allclose(out["p_value"].to_numpy(), p, rtol=1e-5)
        np.testing.assert_allclose(out["normalised_score"].to_numpy(), 1 - p, rtol=1e-5)
        assert list(out["anomalous"]) == list(p <= alpha) and any(p <= alpha) and not all(p <= alpha)
        for i, heatmap in enumerate(raw.heatmaps):
            if not out["anomalous"][i]:
                assert out["mask"][i] == ""
                continue
            if fmt == "png":
                png = pyfunc.Image.open(pyfunc.io.BytesIO(pyfunc.base64.b64decode(out["mask"][i])))
                mask = np.asarray(png) > 0
            else:
                mask = conformal.rle_decode(out["mask"][i])
            assert np.array_equal(mask, heatmap > pixel_max[0])
    plain = model.predict(pyfunc.images_frame(imgs))  # default alpha 0.01, no masks
    assert "mask" not in plain.columns and not plain["anomalous"].any()  # 1/(n+1) > 0.01
    for params, message in [
        ({"alpha": 1.5}, "params.alpha: must be in"),
        ({"mask_format": "gif"}, "mask_format"),
    ]:
        with pytest.raises(MlflowException, match=message) as err:
            model.predict(pyfunc.images_frame(imgs[:1]), params=params)
        assert err.value.get_http_status_code() == 400
