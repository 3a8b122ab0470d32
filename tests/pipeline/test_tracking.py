"""MLflow tracking with a stand-in experiment (no training): params, metrics, artifacts, retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402

from fcdd import runs  # noqa: E402
from fcdd.config import load_config  # noqa: E402
from fcdd.experiment import RunResult, run_dir_for  # noqa: E402
from pipelines import tracking  # noqa: E402


def store_overrides(tmp_path) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
        f"train.output_dir={tmp_path / 'runs'}",
        "train.epochs=2",
    ]


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # data.dvc / git look-ups happen in the working directory
    return load_config(None, overrides=store_overrides(tmp_path) + ["tracking.register=false"])


class FakeExperiment:
    """Writes a run folder like run_experiment does; can crash after the first epoch once."""

    def __init__(self, crash_once: bool = False):
        self.crash_once, self.calls = crash_once, 0

    def __call__(self, cfg, cls, seed, callbacks=None) -> RunResult:
        self.calls += 1
        run_dir = run_dir_for(cfg, cls, seed)
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        start = 1 if (run_dir / "checkpoint.pt").exists() else 0
        history = []
        for epoch in range(start, cfg.train.epochs):
            logs = {"loss": 1.0 / (epoch + 1), "lr": 0.01 * 0.98**epoch, "images_per_s": 100.0}
            history.append({"epoch": epoch, **logs})
            if callbacks is not None:
                callbacks.on_epoch_end(epoch, logs)
            (run_dir / "checkpoint.pt").write_text(str(epoch))
            if self.crash_once and self.calls == 1:
                raise RuntimeError("simulated crash")
        (run_dir / "figures" / "roc.png").write_bytes(b"\x89PNG fake")
        (run_dir / "figures" / "heatmaps_local.png").write_bytes(b"\x89PNG fake")
        (run_dir / "scores.csv").write_text("path,label,score,defect_type\na.png,0,0.1,good\n")
        metrics = {"image_auc": 0.75 + 0.1 * seed, "image_aupr": 0.7, "pixel_auc": None, "n_test": 10}
        metrics |= {"calibration_n": 20, "a0.05_far": 0.04, "a0.05_far_ci_low": 0.01, "seed": seed}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        artifacts = {"roc_figure": run_dir / "figures" / "roc.png", "scores": run_dir / "scores.csv"}
        return RunResult(
            cfg.data.dataset, cls, seed, run_dir, metrics, history, run_dir / "model.pt", artifacts
        )


@pytest.mark.slow
def test_tracked_run_logs_params_metrics_artifacts(cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "run_experiment", FakeExperiment())
    Path("data.dvc").write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    seen = []

    class Forward:
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, logs["loss"]))

    out = tracking.tracked_experiment(cfg, "T-shirt/top", 0, callbacks=Forward())
    assert [e for e, _ in seen] == [0, 1]  # the caller's callbacks get every epoch too
    assert out["class"] == "T-shirt/top" and out["image_auc"] == 0.75 and out["model_version"] is None
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.dataset"] == "fmnist"
    assert run.data.metrics["image_auc"] == 0.75 and "pixel_auc" not in run.data.metrics
    # only what measures the model is a metric; counts, the seed and interval bounds are tags
    assert set(run.data.metrics) == {
        "image_auc", "image_aupr", "a0.05_far", "train/loss", "train/lr", "system/images_per_s"
    }  # fmt: skip
    assert run.data.tags["fcdd.result.n_test"] == "10" and run.data.tags["fcdd.result.calibration_n"] == "20"
    assert run.data.tags["fcdd.result.a0.05_far_ci_low"] == "0.01"
    # the training curves open the metrics tab (prefixed sections come before "Model metrics")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    # "Datasets": the training data, its digest the DVC data version; "Source": the entry point
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name == "fmnist/T-shirt/top" and data.dataset.digest == "abc123"
    assert {t.key: t.value for t in data.tags}["mlflow.data.context"] == "training"
    assert run.data.tags["mlflow.source.name"] and run.data.tags["mlflow.source.type"] == "LOCAL"
    # the run's description shows the heatmap figure, an artifact of the run
    note = run.data.tags["mlflow.note.content"]
    assert f"get-artifact?path=figures%2Fheatmaps_local.png&run_uuid={run.info.run_id}" in note
    assert run.data.tags["fcdd.data_version"] == "abc123.dir"
    assert run.data.tags["fcdd.run_key"] == "fmnist/t-shirt-top/seed0"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "fcdd-fmnist"
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"scores.csv", "metrics.json", "figures"} <= logged
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/roc.png", "figures/heatmaps_local.png"}


@pytest.mark.slow
def test_retry_continues_the_same_run(cfg, monkeypatch):
    fake = FakeExperiment(crash_once=True)
    monkeypatch.setattr(runs, "run_experiment", fake)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tracking.tracked_experiment(cfg, "3", 1)
    client = MlflowClient(cfg.tracking.uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("fcdd-fmnist").experiment_id])
    assert failed.info.status == "FAILED" and failed.data.tags["fcdd.first_epoch"] == "0"
    out = tracking.tracked_experiment(cfg, "3", 1)
    assert out["mlflow_run_id"] == failed.info.run_id
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["fcdd.attempts"] == "2"
    assert run.data.tags["fcdd.first_epoch"] == "1"  # this attempt's first epoch: it resumed
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    assert len(run.inputs.dataset_inputs) == 1  # the retry logs the training data once
    # a finished run is never reused: the next call starts a new one
    assert tracking.tracked_experiment(cfg, "3", 1)["mlflow_run_id"] != out["mlflow_run_id"]


@pytest.mark.slow
def test_parent_run_and_summary(cfg, monkeypatch):
    monkeypatch.setattr(runs, "run_experiment", FakeExperiment())
    with tracking.dataset_parent_run(cfg) as parent:
        rows = [
            tracking.tracked_experiment(cfg, c, s, parent_run_id=parent) for c in ("0", "1") for s in (0, 1)
        ]
        means = tracking.log_dataset_summary(cfg, parent, rows)
    assert means["mean_image_auc"] == pytest.approx(0.8)
    assert "mean_pixel_auc" not in means  # no masks: no pixel metric
    client = MlflowClient(cfg.tracking.uri)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.metrics["mean_image_auc"] == pytest.approx(0.8)
    children = client.search_runs(
        [parent_run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert len(children) == 4
    assert {a.path for a in client.list_artifacts(parent, "results")} == {
        "results/results_per_class.csv",
        "results/results_runs.csv",
    }
    url = tracking.mlflow_run_url(cfg, parent)
    assert url.endswith(f"/#/experiments/{parent_run.info.experiment_id}/runs/{parent}")


def test_disabled_tracking_and_env_uri(cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(runs, "run_experiment", FakeExperiment())
    cfg.tracking.enabled = False
    out = tracking.tracked_experiment(cfg, "0", 0)
    assert out["mlflow_run_id"] is None and out["image_auc"] == 0.75
    assert not (tmp_path / "mlruns.db").exists()
    # MLflow's own set_tracking_uri writes MLFLOW_TRACKING_URI: that must not redirect later runs
    monkeypatch.setattr(tracking, "_ENV_TRACKING_URI", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///somewhere-else.db")
    assert tracking.tracking_uri(cfg) == cfg.tracking.uri
    # the user's variable (as the process started with it) wins
    monkeypatch.setattr(tracking, "_ENV_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri(cfg) == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="no result rows"):
        tracking.log_dataset_summary(cfg, None, [])


def test_protocol_depends_on_test_split(cfg):
    base = tracking.protocol_for(cfg, "0", 0, "v1")
    assert base == tracking.protocol_for(cfg, "0", 1, "v1")  # full test split: seed does not matter
    assert base != tracking.protocol_for(cfg, "0", 0, "v2")
    cfg.data.test_limit = 100
    assert tracking.protocol_for(cfg, "0", 0, "v1") != tracking.protocol_for(cfg, "0", 1, "v1")


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_real_tiny_fmnist_run(cfg, tmp_path):
    """The real run_experiment (2 epochs on 128 images) through tracking and registration."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{FMNIST}: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    import torch

    torch.set_num_threads(1)
    cfg = load_config(
        None,
        overrides=store_overrides(tmp_path)
        + [
            f"data.root={FMNIST}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.train_limit=128",
            "data.test_limit=128",
            "data.num_workers=0",
            "anomalies.kind=none",
            "train.threads=1",
            "train.progress=false",
            "evaluation.heatmap_count=4",
        ],
    )
    out = tracking.tracked_experiment(cfg, "0", 0)
    assert 0.0 <= out["image_auc"] <= 1.0 and out["model_version"] == "1"
    # a first version is champion only above the quality gate (registry.min_image_auc, issue 22)
    assert out["champion"] is (out["image_auc"] >= cfg.registry.min_image_auc)
    assert bool(out.get("registry_note")) is not out["champion"]
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.metrics["image_auc"] == pytest.approx(out["image_auc"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2
    # the logged model's metrics name the run's data: its page lists them under "Datasets used"
    (data,) = run.inputs.dataset_inputs
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id
    model_metrics = {m.key: m for m in model.metrics}
    assert model_metrics["image_auc"].value == pytest.approx(out["image_auc"])
    assert {(m.dataset_name, m.dataset_digest) for m in model_metrics.values()} == {
        (data.dataset.name, data.dataset.digest)
    }
    assert len(client.get_metric_history(run.info.run_id, "image_auc")) == 1  # the run keeps one point
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/roc.png" in figures
