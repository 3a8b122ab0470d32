"""Scale-out pieces: crashed class runs are resubmitted; champion promotion is guarded across
processes against a remote MLflow tracking server by a Prefect global concurrency limit."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest
from net_helpers import free_port
from prefect.client.schemas.objects import State, StateType

from pipelines import fanout, registry, results


def _run(kind: StateType, n: int):
    return SimpleNamespace(id=f"run-{n}", state=State(type=kind, message=f"{kind.value} #{n}"))


@pytest.fixture
def no_prefect_logger(monkeypatch):
    monkeypatch.setattr(fanout, "get_run_logger", lambda: logging.getLogger("test"))


@pytest.mark.parametrize(
    ("outcomes", "retries", "submissions", "final"),
    [
        ([StateType.CRASHED, StateType.CRASHED, StateType.COMPLETED], 2, 3, StateType.COMPLETED),
        ([StateType.CRASHED, StateType.CRASHED, StateType.COMPLETED], 1, 2, StateType.CRASHED),
        ([StateType.FAILED, StateType.COMPLETED], 2, 1, StateType.FAILED),  # had its own retries
        ([StateType.COMPLETED], 0, 1, StateType.COMPLETED),
    ],
)
def test_crashed_class_runs_are_resubmitted_up_to_retries(
    no_prefect_logger, outcomes, retries, submissions, final
):
    attempts: list[int] = []

    def submit(attempt: int):
        attempts.append(attempt)
        return _run(outcomes[attempt - 1], attempt)

    run, crashed = fanout.resubmit_crashed(submit, retries, "fmnist class 0 seed 0")
    assert attempts == list(range(1, submissions + 1))
    assert run.state.type == final
    assert crashed == submissions - 1  # resubmissions made


def test_state_messages_become_one_line():
    assert results.one_line("Crashed:\n  worker\tgone ") == "Crashed: worker gone"
    assert len(results.one_line("x" * 1000)) == 300


@pytest.mark.parametrize("pack", [1, 2])
def test_packs_are_resubmitted_like_single_runs(no_prefect_logger, monkeypatch, pack):
    """A lost class run on the pool is submitted again, whether it trains one job or a pack of K."""
    from fcdd.config import load_config

    cfg = load_config(
        None,
        [
            "orchestration.mode=deployments",
            f"orchestration.pack={pack}",
            "orchestration.retries=1",
            "tracking.enabled=false",
            "data.dataset=folder",
        ],
    )
    submitted = []

    def run_deployment(name, parameters, timeout, flow_run_name):
        submitted.append((flow_run_name, parameters.get("pack")))
        kind = StateType.COMPLETED if "resubmit" in flow_run_name else StateType.CRASHED  # 1st run lost
        return SimpleNamespace(id=f"run-{len(submitted)}", state=State(type=kind, message="host lost"))

    def published(flow_run_id):
        return {
            results.result_artifact_key("folder", c, s): {"class": c, "seed": s, "status": "completed"}
            for c, s in (("a", 0), ("b", 0))
        }

    monkeypatch.setattr(fanout, "run_deployment", run_deployment)
    monkeypatch.setattr(fanout, "rows_from_artifacts", published)
    monkeypatch.setattr(fanout, "canonical_class", lambda cfg, c: c)
    rows = fanout.run_jobs(cfg, "params.yaml", [], [("a", 0), ("b", 0)], None, subflow=None)
    assert [(r["class"], r["status"], r["resubmissions"]) for r in rows] == [
        ("a", "completed", 1),
        ("b", "completed", 1),
    ]
    names = sorted(name for name, _ in submitted)
    if pack == 1:
        assert names == [
            "folder-a-seed0",
            "folder-a-seed0-resubmit1",
            "folder-b-seed0",
            "folder-b-seed0-resubmit1",
        ]
    else:
        assert names == ["folder-pack-a-2", "folder-pack-a-2-resubmit1"]
        assert all(p == [["a", 0], ["b", 0]] for _, p in submitted)


# --------------------------------------------------- promotions against a remote tracking server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (SQLite backend here; PostgreSQL in the rehearsal) with
    artifacts proxied by the server: clients speak HTTP only."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"), start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_concurrent_promotions_against_a_tracking_server_elect_the_best(mlflow_server, harness, monkeypatch):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    # Widen the race window: every promotion waits after reading the champion, before moving it.
    # Unguarded, all four read "no champion" and the last writer wins whatever its score.
    read_champion = registry._alias_version

    def slow_read(*args, **kwargs):
        found = read_champion(*args, **kwargs)
        time.sleep(0.4)
        return found

    monkeypatch.setattr(registry, "_alias_version", slow_read)
    scores = [0.61, 0.93, 0.72, 0.85]
    experiment_id = client.create_experiment("fcdd-test-concurrent")
    name = "fcdd-test-concurrent"
    results: dict[float, tuple[str, bool]] = {}
    errors: list[BaseException] = []

    def register(score: float) -> None:
        try:
            run_id = client.create_run(experiment_id).info.run_id
            results[score] = registry.register_version(
                client, mlflow_server, name, f"runs:/{run_id}/model", {"image_auc": score}, "p1", run_id
            )
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=register, args=(s,)) for s in scores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    assert float(champion.tags[registry.TAG_SCORE]) == max(scores)
    assert len(client.search_model_versions(f"name='{name}'")) == len(scores)
    newest = max(int(v) for v, _ in results.values())
    assert int(client.get_model_version_by_alias(name, registry.CHALLENGER).version) == newest


def test_remote_promotion_without_a_shared_prefect_api_is_refused(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}):
        with pytest.raises(RuntimeError, match="needs a shared Prefect API"):
            with registry.registry_lock("http://tracking.example:5000"):
                pass


@pytest.mark.slow
def test_a_logged_model_registers_against_a_tracking_server(mlflow_server, harness):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.create_experiment("fcdd-test-logged-model")
    run_id = client.create_run(experiment_id).info.run_id
    model = client.create_logged_model(experiment_id, source_run_id=run_id)
    version, champion = registry.register_version(
        client,
        mlflow_server,
        "fcdd-test-logged",
        f"models:/{model.model_id}",
        {"image_auc": 0.7},
        "p",
        run_id,
    )
    assert version == "1" and champion


def test_a_dataset_whose_classes_all_failed_summarises_to_nothing():
    from fcdd.config import Config
    from pipelines.tracking import log_dataset_summary

    cfg = Config()
    cfg.tracking.enabled = False
    rows = [
        {"class": "a", "status": "failed", "error": "x"},
        {"class": "b", "status": "failed", "error": "y"},
    ]
    assert log_dataset_summary(cfg, None, rows) == {}


def test_a_run_resumed_on_another_worker_continues_the_lost_mlflow_run(tmp_path):
    from mlflow import MlflowClient

    from pipelines.tracking import find_unfinished_run

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    experiment_id = client.create_experiment("e", artifact_location=str(tmp_path / "a"))
    shared = "s3://team/checkpoints"
    lost = client.create_run(
        experiment_id,
        tags={
            "fcdd.run_key": "fmnist/trouser/seed0",
            "fcdd.run_dir": "/tmp/clone-1/runs/x",
            "fcdd.checkpoint_uri": shared,
        },
    ).info.run_id  # left RUNNING: its worker was killed
    key = "fmnist/trouser/seed0"
    assert (
        find_unfinished_run(client, experiment_id, key, tmp_path / "clone-2" / "runs" / "x", shared) == lost
    )
    assert find_unfinished_run(client, experiment_id, key, tmp_path / "clone-2" / "runs" / "x") is None
    assert find_unfinished_run(client, experiment_id, key, tmp_path / "x", "/other/shared") is None


@pytest.mark.slow
def test_fcdd_train_against_a_tracking_server_without_a_prefect_api_keeps_the_trained_model(
    mlflow_server, tmp_path
):
    """Issue 28.1: `fcdd train` with tracking.uri http://<server> and no PREFECT_API_URL trained,
    evaluated, logged the model, then failed at promotion and registered nothing. Now it says so
    before training and registers the version as challenger, saying why there is no champion."""
    import os
    from pathlib import Path

    from mlflow import MlflowClient
    from shared_fixtures import TINY_RUN

    repo = Path(__file__).resolve().parents[2]
    fmnist, oe = repo / "data" / "fashion-mnist", repo.parent / "shared" / "data" / "imagenet1k_samples"
    if not (any(fmnist.glob("*ubyte*")) and oe.is_dir()):
        pytest.skip("needs data/fashion-mnist and ../shared/data/imagenet1k_samples")
    overrides = [o for o in TINY_RUN if not o.startswith("tracking.")] + [
        "train.epochs=1", f"data.root={fmnist}", f"anomalies.oe_source={oe}", f"train.output_dir={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}", "tracking.enabled=true", f"tracking.uri={mlflow_server}",
        "tracking.onnx=false", "tracking.experiment_prefix=fcdd-no-prefect",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    done = subprocess.run(
        [sys.executable, "-m", "fcdd.cli", "train", "--params", str(repo / "params.yaml"), "--classes", "trouser",
         *[a for o in overrides for a in ("-o", o)]],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    said = [i for i, line in enumerate(lines) if "registered as challenger only" in line]
    first_epoch = next(i for i, line in enumerate(lines) if "epoch 1/1" in line)
    assert said and said[0] < first_epoch, done.stderr  # before the training, not after
    assert "needs a shared Prefect API" in lines[said[0]]
    client = MlflowClient(tracking_uri=mlflow_server)
    (version,) = client.search_model_versions("name='fcdd-fmnist-trouser'")
    assert str(client.get_model_version_by_alias("fcdd-fmnist-trouser", "challenger").version) == str(
        version.version
    )
    assert version.tags[registry.TAG_COMPARISON].startswith("no champion decision: champion promotion")
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("fcdd-fmnist-trouser", "champion")
