"""The tracking store going away during training never costs the training (issue 28.2): epochs
wait and are logged when it answers again, one warning; still away at the end, the run folder keeps
everything, the MLflow run stays unfinished, and the next `fcdd train` continues it and catches up."""

from __future__ import annotations

import json
import warnings

import pytest

pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from fcdd import runs  # noqa: E402
from fcdd.config import load_config  # noqa: E402
from fcdd.experiment import RunResult, run_dir_for  # noqa: E402
from pipelines import tracked_run, tracking  # noqa: E402


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return load_config(
        None,
        overrides=[
            f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
            f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
            f"train.output_dir={tmp_path / 'runs'}",
            "train.epochs=4",
            "tracking.register=false",
        ],
    )


class Outage:
    """The store stops answering while ``down``: every write raises as MLflow's client does after
    its retries, and a connection probe fails."""

    def __init__(self, monkeypatch):
        self.down = False
        outage = self

        def failing(original):
            def call(self, *args, **kwargs):
                if outage.down:
                    raise MlflowException("API request to http://tracking:5000 failed: Max retries exceeded")
                return original(self, *args, **kwargs)

            return call

        for name in ("log_batch", "set_terminated", "set_tag", "log_artifact"):
            monkeypatch.setattr(MlflowClient, name, failing(getattr(MlflowClient, name)))
        monkeypatch.setattr(tracked_run, "server_answers", lambda uri, timeout_s=0: not outage.down)


class Training:
    """A stand-in for run_experiment that resumes from its checkpoint (the epochs done so far) and
    returns the whole history, as the real one does; ``outage`` goes down/up at given epochs."""

    def __init__(self, outage: Outage, down_at: int | None = None, up_at: int | None = None):
        self.outage, self.down_at, self.up_at = outage, down_at, up_at
        self.epochs_trained: list[int] = []

    def __call__(self, cfg, cls, seed, callbacks=None) -> RunResult:
        run_dir = run_dir_for(cfg, cls, seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = run_dir / "checkpoint.json"
        history = json.loads(checkpoint.read_text()) if checkpoint.exists() else []
        for epoch in range(len(history) + 1, cfg.train.epochs + 1):
            if epoch == self.down_at:
                self.outage.down = True
            if epoch == self.up_at:
                self.outage.down = False
            logs = {"loss": 1.0 / epoch, "lr": 0.01, "images_per_s": 50.0}
            callbacks.on_epoch_end(epoch, logs)
            history.append({"epoch": epoch, "loss": logs["loss"], "lr": logs["lr"]})
            checkpoint.write_text(json.dumps(history))
            self.epochs_trained.append(epoch)
        (run_dir / "model.pt").write_bytes(b"model")
        metrics = {"image_auc": 0.8, "n_test": 10}
        return RunResult(cfg.data.dataset, cls, seed, run_dir, metrics, history, run_dir / "model.pt", {})


def _losses(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))


def test_training_goes_on_while_the_store_is_away_and_catches_up(cfg, monkeypatch):
    outage = Outage(monkeypatch)
    training = Training(outage, down_at=2, up_at=4)
    monkeypatch.setattr(runs, "run_experiment", training)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = tracking.tracked_experiment(cfg, "0", 0)
    assert training.epochs_trained == [1, 2, 3, 4]  # no epoch lost to tracking
    messages = [str(w.message) for w in caught if "tracking store" in str(w.message)]
    assert len([m for m in messages if "stopped answering at epoch 2" in m]) == 1, messages
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(row["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["image_auc"] == 0.8
    assert _losses(client, run.info.run_id) == [1, 2, 3, 4]  # the waiting epochs were logged


def test_a_store_still_away_at_the_end_leaves_the_run_to_be_continued(cfg, monkeypatch):
    outage = Outage(monkeypatch)
    training = Training(outage, down_at=3)
    monkeypatch.setattr(runs, "run_experiment", training)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = tracking.tracked_experiment(cfg, "0", 0)  # returns: no exception reaches the command
    assert training.epochs_trained == [1, 2, 3, 4] and row["tracking"] == "incomplete"
    assert row["image_auc"] == 0.8 and (run_dir_for(cfg, "0", 0) / "model.pt").exists()
    messages = [str(w.message) for w in caught if "tracking store" in str(w.message)]
    assert len(messages) == 2 and "stays incomplete" in messages[1] and "fcdd train" in messages[1]
    client = MlflowClient(cfg.tracking.uri)
    assert client.get_run(row["mlflow_run_id"]).info.status == "RUNNING"  # the store never heard the end
    assert _losses(client, row["mlflow_run_id"]) == [1, 2]

    outage.down = False  # the store is back: the same command again
    again = tracking.tracked_experiment(cfg, "0", 0)
    assert again["mlflow_run_id"] == row["mlflow_run_id"] and training.epochs_trained == [1, 2, 3, 4]
    run = client.get_run(row["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["image_auc"] == 0.8
    assert _losses(client, run.info.run_id) == [1, 2, 3, 4]  # caught up from the checkpoint's history
