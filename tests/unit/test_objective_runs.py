"""HSC and AE as objectives of the one training loop (docs/baselines.md): configuration rules,
fingerprint and resume, whole runs on a folder dataset with masks, model file, predict, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fcdd.config import ConfigError, load_config
from fcdd.detector import Detector
from fcdd.errors import ExportError, TrainingError
from fcdd.experiment import run_experiment
from fcdd.fingerprint import fingerprint
from fcdd.objectives import AEObjective, HSCObjective
from fcdd.training import CHECKPOINT, load_checkpoint

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.objective=ae", "anomalies.kind=semi"], "train.objective ae trains on nominal images only"),
        (
            ["train.objective=hsc", "train.loss=pixel"],
            "train.loss 'pixel' is FCDD's choice of loss; train.objective hsc takes auto or image",
        ),
        (["train.objective=ae", "train.loss=image"], "train.objective ae takes auto"),
        (
            ["train.objective=ae", "model.input_size=32"],
            "ae with model.net cnn28 reconstructs 28x28 images; model.input_size is 32",
        ),
        (["train.objective=hsc", "orchestration.pack=2"], "packed training is for FCDD nets"),
        (["train.objective=svdd"], "train.objective: 'svdd' is not one of fcdd, hsc, ae"),
    ],
)
def test_bad_combinations_are_one_line_errors_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("params.yaml", overrides)
    assert "\n" not in str(info.value)


def test_good_combinations_load():
    for overrides in (
        ["train.objective=ae"],  # oe is not drawn for an autoencoder: not an error
        ["train.objective=hsc", "train.loss=image"],
        ["train.objective=ae", "model.net=vgg11_bn", "model.input_size=[224, 320]"],
    ):
        assert load_config("params.yaml", overrides).train.objective == overrides[0].split("=")[1]


def test_the_fingerprint_counts_the_objective_only_away_from_fcdd():
    base = load_config("params.yaml")
    fcdd = fingerprint(base, "0", 0)
    assert "train.objective" not in fcdd["values"]  # FCDD's earlier checkpoints keep resuming
    hsc = fingerprint(load_config("params.yaml", ["train.objective=hsc"]), "0", 0)
    ae = fingerprint(load_config("params.yaml", ["train.objective=ae"]), "0", 0)
    assert hsc["values"]["train.objective"] == "hsc" and len({fcdd["hash"], hsc["hash"], ae["hash"]}) == 3


@pytest.fixture(scope="module")
def trained(defect_folder, make_folder_config, tmp_path_factory):
    """One HSC and one AE run on the folder dataset with masks (2 epochs each)."""
    out = tmp_path_factory.mktemp("objectives")
    runs = {}
    for objective in ("hsc", "ae"):
        cfg = make_folder_config(
            defect_folder,
            out,
            "train.epochs=2",
            f"train.objective={objective}",
            "evaluation.blur_heatmaps=true",
        )
        cfg.train.output_dir = str(out / objective)
        runs[objective] = (cfg, run_experiment(cfg, "tiles", 0))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["hsc", "ae"])
def test_a_whole_run_with_masks_scores_images_and_pixels(trained, objective):
    cfg, result = trained[objective]
    metrics = result.metrics
    assert 0 <= metrics["image_auc"] <= 1 and 0 <= metrics["pixel_auc"] <= 1 and metrics["n_test"] > 0
    det = Detector.load(result.model_path)
    assert det.meta["objective"] == objective
    assert isinstance(det.objective, HSCObjective if objective == "hsc" else AEObjective)
    state = load_checkpoint(result.run_dir / CHECKPOINT)
    assert state["loss_kind"] == ("image" if objective == "hsc" else "reconstruction")
    out = det.score([np.full((40, 60, 3), 120, np.uint8), np.zeros((48, 48, 3), np.uint8)])
    assert [h.shape for h in out.heatmaps] == [(40, 60), (48, 48)]  # each image's own size
    assert out.maps.shape == (2, 32, 32) and np.isfinite(out.scores).all()
    drawn = (result.run_dir / "data_summary.json").read_text()
    # The autoencoder trains on nominal images only: no confetti noise is drawn for it.
    assert ('"confetti"' in drawn) == (objective == "hsc")
    assert (result.run_dir / "figures" / "heatmaps_local.png").is_file()


@pytest.mark.slow
def test_hsc_heatmaps_are_the_raw_input_gradients(trained):
    from fcdd.objectives.hsc import hsc_score

    _, result = trained["hsc"]
    det = Detector.load(result.model_path)
    x = torch.rand(2, 3, 32, 32)
    scores, _, heat = det.score_tensor(x)
    xi = x[1:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(hsc_score(det.model(xi)).sum(), xi)
    torch.testing.assert_close(heat[1], grad.abs().sum(1)[0], rtol=1e-4, atol=1e-8)


@pytest.mark.slow
def test_a_checkpoint_is_never_resumed_by_another_objective(trained):
    cfg, _ = trained["hsc"]
    other = copy.deepcopy(cfg)
    other.train.objective = "fcdd"  # an FCDD run into the HSC run's folder
    with pytest.raises(
        TrainingError, match=r"made with other settings \(train.objective 'hsc' -> \(unset\)\)"
    ):
        run_experiment(other, "tiles", 0)
    other.train.objective = "ae"
    with pytest.raises(TrainingError, match=r"train.objective 'hsc' -> 'ae'"):
        run_experiment(other, "tiles", 0)


@pytest.mark.slow
def test_export_writes_the_autoencoder_and_refuses_hsc_in_one_line(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from fcdd.backends import ExportedDetector
    from fcdd.export import export_detector

    _, ae = trained["ae"]
    det = Detector.load(ae.model_path)
    export_detector(det, "onnx", tmp_path / "ae")
    exported = ExportedDetector.load(tmp_path / "ae")
    images = [np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)]
    np.testing.assert_allclose(exported.score(images).scores, det.score(images).scores, rtol=1e-4)
    np.testing.assert_allclose(
        exported.score(images).heatmaps[0], det.score(images).heatmaps[0], rtol=1e-3, atol=1e-5
    )
    _, hsc = trained["hsc"]
    with pytest.raises(
        ExportError, match="HSC model cannot be exported: its heatmaps are input gradients"
    ) as info:
        export_detector(Detector.load(hsc.model_path), "onnx", tmp_path / "hsc")
    assert "\n" not in str(info.value) and not (tmp_path / "hsc").exists()


@pytest.mark.slow
def test_predict_overlays_show_the_blurred_map_and_decisions_the_raw_one(trained, tmp_path):
    from PIL import Image

    from fcdd.objectives.blur import overlay_blur
    from fcdd.predict import predict_files

    _, result = trained["hsc"]
    det = Detector.load(result.model_path)
    blur = overlay_blur(det)
    raw = det.score([np.zeros((32, 32, 3), np.uint8)], full_size=False).heatmaps[0]
    assert blur is not None and blur(raw).std() < raw.std()  # smoother, same size
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    done = predict_files(det, [path], tmp_path / "out", normalisation="local")
    assert done.scored == 1 and done.heatmaps == 1
    det.meta["config"]["evaluation.blur_heatmaps"] = False
    assert overlay_blur(det) is None


def test_registered_models_carry_the_objective(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from pipelines import registry

    cfg = load_config(None, ["data.dataset=mvtec"])
    assert registry.registered_model_name(cfg, "grid") == "fcdd-mvtec-grid"  # FCDD's names as before
    cfg.train.objective = "hsc"
    assert registry.registered_model_name(cfg, "grid") == "fcdd-mvtec-grid-hsc"  # never FCDD's champion
    cfg.tracking.model_name = "{objective}-{dataset}-{cls}"
    assert registry.registered_model_name(cfg, "grid") == "hsc-mvtec-grid"
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    source = (tmp_path / "model").as_uri()
    for objective, name in (("ae", "fcdd-mvtec-grid-ae"), ("fcdd", "fcdd-mvtec-grid")):
        version, _ = registry.register_version(
            client, uri, name, source, {"pixel_auc": 0.8}, "mvtec/grid", objective=objective
        )
        assert client.get_model_version(name, version).tags[registry.TAG_OBJECTIVE] == objective
    found = client.search_registered_models(filter_string=f"tags.`{registry.TAG_OBJECTIVE}` = 'ae'")
    assert [m.name for m in found] == ["fcdd-mvtec-grid-ae"]  # the registry browsed by objective


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["hsc", "ae"])
def test_the_served_model_returns_each_objectives_score_and_heatmap(
    trained, objective, tmp_path, monkeypatch
):
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from pipelines import pyfunc

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient(uri).create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    _, result = trained[objective]
    with mlflow.start_run(experiment_id=experiment):
        info = pyfunc.log_detector_model(result.model_path)
    served = mlflow.pyfunc.load_model(info.model_uri)
    image = np.random.default_rng(2).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    out = served.predict(pyfunc.images_frame([image]))
    expected = Detector.load(result.model_path).score([image])
    np.testing.assert_allclose(out["score"].to_numpy(), expected.scores, rtol=1e-5)
    heat = pyfunc.decode_heatmap(out["heatmap"][0])
    assert heat.shape == (40, 56)
    np.testing.assert_allclose(heat, expected.heatmaps[0], rtol=1e-4, atol=1e-7)
