"""One experiment's MLflow run while it trains and after: epoch curves as they come, then the
results, artifacts, the logged model and its registered version.

Tracking never costs the user the training. When the store stops answering (a tracking server
restarted, the network gone), the epoch logs wait in memory and training goes on, with one warning;
each epoch first probes it (a TCP connect of a few seconds, not MLflow's minutes of retries) and
logs without retries. When it answers again the waiting epochs are logged (also at the end of
training). If it is still away at the end, the run folder holds everything (checkpoint, model.pt,
metrics) and the MLflow run stays unfinished: running the same ``fcdd train`` again when the store
answers resumes the finished checkpoint, continues the same MLflow run, logs the missing epochs from
the checkpoint's history, and registers the model.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from fcdd.config import Config
from fcdd.experiment import RunResult
from pipelines import registry, run_page

PROBE_TIMEOUT_S = 3.0


def now_ms() -> int:
    return int(time.time() * 1000)


def server_answers(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an http(s) tracking server accepts a connection; a local store always 'answers'."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return True
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def quick_requests() -> Any:
    """MLflow HTTP calls without the client's minutes of retries (for a store known to be away)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MlflowRun:
    """An experiment's MLflow run (fcdd.runs.TrackedRun)."""

    def __init__(
        self, client: MlflowClient, uri: str, run_id: str, cfg: Config, cls: str, protocol: str, onnx: bool
    ):
        self.client, self.uri, self.run_id = client, uri, run_id
        self.cfg, self.cls, self.protocol, self.with_onnx = cfg, cls, protocol, onnx
        self.trained = False
        self.pending: list[Metric] = []  # epoch metrics the store has not taken yet
        self.pending_tags: dict[str, str] = {}
        self.away: str | None = None  # why the store stopped answering, while it is away
        self.incomplete = False

    # ------------------------------------------------------------ during training
    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if not self.trained:  # this attempt's first epoch: > 1 when it resumed from a checkpoint
            self.pending_tags["fcdd.first_epoch"] = str(int(epoch))
            self.trained = True
        stamp = now_ms()
        for key, value in logs.items():
            if key not in ("epoch", "packed") and run_page._is_number(value):
                self.pending.append(Metric(run_page.epoch_metric_name(key), float(value), stamp, int(epoch)))
        # A server that does not accept a connection is away now: a few seconds' probe, not the
        # client's minutes of retries; what it does not take now waits for the next epoch.
        if not server_answers(self.uri):
            self._went_away(epoch, ConnectionError("it does not accept connections"))
            return
        try:
            with quick_requests():
                self._flush()
        except Exception as e:  # noqa: BLE001 (whatever the store raises, training goes on)
            self._went_away(epoch, e)

    def _flush(self) -> None:
        if self.pending_tags:
            tags = [RunTag(k, v) for k, v in self.pending_tags.items()]
            self.client.log_batch(self.run_id, tags=tags)
            self.pending_tags = {}
        while self.pending:
            batch = self.pending[:1000]  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=batch)
            del self.pending[: len(batch)]
        if self.away is not None:
            self.away = None
            warnings.warn(
                f"tracking store {self.uri} answers again: the waiting epochs are logged", stacklevel=2
            )

    def _went_away(self, epoch: int, error: Exception) -> None:
        first = self.away is None
        self.away = " ".join(str(error).split())[:200]
        if first:
            warnings.warn(
                f"tracking store {self.uri} stopped answering at epoch {epoch} ({self.away}); training goes "
                "on, and its epochs are logged when the store answers again",
                stacklevel=2,
            )

    # ------------------------------------------------------------ after training
    def finish(self, result: RunResult) -> dict[str, Any]:
        out: dict[str, Any] = {"mlflow_run_id": self.run_id, "model_name": None, "model_version": None}
        out["champion"] = False
        if self.away is not None and not server_answers(self.uri):
            return self._incomplete(result, out)
        try:
            self._flush()
            self._catch_up(result.history)
            return self._record(result, out)
        except Exception:
            if server_answers(self.uri):
                raise  # the store answers: a real error, not an outage
            return self._incomplete(result, out)

    def _catch_up(self, history: list[dict]) -> None:
        """Epochs of the checkpoint's history the run lacks (logged while the store was away in
        an earlier attempt): their loss and learning rate."""
        have = {m.step for m in self.client.get_metric_history(self.run_id, "train/loss")}
        stamp = now_ms()
        missing = [
            Metric(run_page.epoch_metric_name(k), float(h[k]), stamp, int(h["epoch"]))
            for h in history
            if "epoch" in h and int(h["epoch"]) not in have
            for k in ("loss", "lr")
            if run_page._is_number(h.get(k))
        ]
        for start in range(0, len(missing), 1000):
            self.client.log_batch(self.run_id, metrics=missing[start : start + 1000])

    def _incomplete(self, result: RunResult, out: dict[str, Any]) -> dict[str, Any]:
        self.incomplete = True
        warnings.warn(
            f"tracking store {self.uri} is not answering: MLflow run {self.run_id} stays incomplete "
            f"(no results, model or registered version); {result.run_dir} holds the trained model and its "
            "metrics. Run the same `fcdd train` again when the store answers to log and register them.",
            stacklevel=2,
        )
        return out | {"tracking": "incomplete"}

    def _record(self, result: RunResult, out: dict[str, Any]) -> dict[str, Any]:
        client, run_id, cfg = self.client, self.run_id, self.cfg
        unscored = all(result.metrics.get(k) is None for k in ("pixel_auc", "image_auc"))
        registering = cfg.tracking.register and not unscored
        if not registering:  # else logged with the model below, so that they are its metrics too
            run_page.log_results(client, run_id, result.metrics, now_ms())
        client.log_batch(run_id, tags=[RunTag("fcdd.epochs_trained", str(len(result.history)))])
        _log_artifacts(client, run_id, result)
        heatmaps = run_page.show_heatmaps(
            client, run_id, Path(result.run_dir), f"{cfg.data.dataset} · {self.cls}"
        )
        if cfg.tracking.register and unscored:  # nothing to rank a champion by (a one-label test set)
            client.set_tag(run_id, "fcdd.not_registered", str(result.metrics.get("warning", "no AUC")))
        elif cfg.tracking.register:
            from pipelines.pyfunc import log_detector_model

            export = " with its ONNX export" if self.with_onnx else ""
            print(
                f"{result.cls} seed {result.seed}: registering the model in MLflow{export}",
                file=sys.stderr,
                flush=True,
            )
            try:
                info = log_detector_model(result.model_path, onnx=self.with_onnx)
            except BaseException:
                with contextlib.suppress(Exception):  # the run keeps its results; the error is the news
                    run_page.log_results(client, run_id, result.metrics, now_ms())
                raise
            run_page.log_results(client, run_id, result.metrics, now_ms(), model_id=info.model_id)
            if heatmaps:  # the logged model's Artifacts show the figure too
                figure = Path(result.run_dir) / run_page.HEATMAP_FIGURE
                client.log_model_artifact(info.model_id, str(figure), "figures")
            name = registry.registered_model_name(cfg, self.cls)
            card = self._card(result, heatmaps)
            gate = registry.gate_of(cfg)
            mv, champion = registry.register_version(
                client, self.uri, name, info.model_uri, result.metrics, self.protocol, run_id, card=card,
                objective=cfg.train.objective, gate=gate,
            )  # fmt: skip
            out.update(model_name=name, model_version=mv, champion=champion)
            reason = registry.promotion_unavailable(self.uri) or registry.quality_gate(result.metrics, gate)
            if reason:  # a tag on the version (registry.py), a column and a line here
                out["registry_note"] = f"{name} version {mv} stays challenger: {reason}"
                warnings.warn(out["registry_note"], stacklevel=2)
            client.set_tag(run_id, "fcdd.model", f"models:/{name}/{mv}")
        return out

    def _card(self, result: RunResult, heatmaps: bool):
        from pipelines.model_card import CardFacts

        tags = self.client.get_run(self.run_id).data.tags
        return CardFacts(
            name="",
            version="",
            dataset=self.cfg.data.dataset,
            cls=self.cls,
            seed=int(result.seed),
            data_version=tags.get("fcdd.data_version", "untracked"),
            net=self.cfg.model.net,
            input_size=self.cfg.model.input_size,
            epochs=len(result.history),
            protocol=self.protocol,
            run_id=self.run_id,
            heatmaps=heatmaps,
            objective=self.cfg.train.objective,
        )


def _log_artifacts(client: MlflowClient, run_id: str, result: RunResult) -> None:
    run_dir = Path(result.run_dir).resolve()
    files = list(result.artifacts.values()) + [run_dir / "metrics.json", run_dir / "data_summary.json"]
    files.append(run_dir / run_page.HEATMAP_FIGURE)
    for path in dict.fromkeys(Path(p).resolve() for p in files):
        if not path.is_file():
            continue
        try:
            folder = path.parent.relative_to(run_dir).as_posix()
        except ValueError:
            folder = ""
        client.log_artifact(run_id, str(path), artifact_path=folder if folder not in ("", ".") else None)
