"""A worker that cannot clone, cannot `dvc pull` or cannot reach the tracking server fails its run
with one line (pipelines.worker_setup): in the flow run's state message and in results.csv, while
the other classes of the fan-out finish."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from net_helpers import free_port
from prefect.client.schemas.objects import State, StateType

from pipelines import fanout, flows, results, worker_setup

REPO = Path(__file__).resolve().parents[2]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


# ------------------------------------------------------------------ the steps, without a worker


def test_an_unreachable_tracking_server_is_one_line_naming_it():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(worker_setup.WorkerSetupError) as caught:
        worker_setup.check_tracking_server(uri, timeout_s=2)
    message = str(caught.value)
    assert "\n" not in message and uri in message and worker_setup.is_setup_failure(message)
    worker_setup.check_tracking_server("sqlite:///mlruns.db")  # local stores are not probed


def test_a_repository_that_does_not_exist_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    url = f"file://{tmp_path / 'no-such.git'}"
    with pytest.raises(worker_setup.WorkerSetupError) as caught:
        worker_setup.clone(url, commit_sha="0123456789abcdef")
    message = str(caught.value)
    assert "\n" not in message and f"cannot clone {url} at 0123456789ab" in message


@pytest.mark.skipif(not Path(DVC).exists(), reason="needs dvc")
def test_a_missing_dvc_remote_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(DVC).parent}:{os.environ['PATH']}")
    project = _dvc_project(tmp_path / "clone")
    monkeypatch.chdir(project)
    remote = tmp_path / "no-such-remote"
    with pytest.raises(worker_setup.WorkerSetupError) as caught:
        worker_setup.dvc_pull(str(remote))
    message = str(caught.value)
    assert "\n" not in message and f"dvc pull of data.dvc from {remote} failed: ERROR" in message


def _dvc_project(root: Path) -> Path:
    """A DVC project whose data.dvc names data that is in no cache and no remote."""
    root.mkdir(parents=True)
    for args in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(args, cwd=root, check=True, capture_output=True)
    (root / "data").mkdir()
    (root / "data" / "x.bin").write_bytes(b"fcdd")
    subprocess.run([DVC, "add", "-q", "data"], cwd=root, check=True, capture_output=True)
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc" / "cache")
    return root


def _run(kind: StateType, message: str):
    return SimpleNamespace(id="run", state=State(type=kind, message=message))


@pytest.mark.parametrize(
    ("message", "submissions"),
    [(worker_setup.setup_failure("cannot clone x"), 3), ("Flow run encountered an exception: ValueError", 1)],
)
def test_runs_failed_by_their_worker_are_resubmitted_up_to_retries(monkeypatch, message, submissions):
    monkeypatch.setattr(fanout, "get_run_logger", lambda: logging.getLogger("test"))
    attempts = []

    def submit(attempt):
        attempts.append(attempt)
        return _run(StateType.FAILED, message)

    run, lost = fanout.resubmit_crashed(submit, 2, "fmnist class 0 seed 0")
    assert len(attempts) == submissions and lost == submissions - 1
    assert run.state.is_failed() and run.state.message == message


# ------------------------------------------------------- a real server, a process worker, a fan-out

FMNIST = REPO / "data" / "fashion-mnist"
SHARED_OE = REPO.parent / "shared" / "data" / "imagenet1k_samples"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    not (any(FMNIST.glob("*ubyte*")) and SHARED_OE.is_dir() and Path(DVC).exists()),
    reason="needs data/fashion-mnist, ../shared/data/imagenet1k_samples and dvc",
)
def test_setup_failures_fail_their_class_with_one_line_and_the_others_finish(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.system.test_prefect_integration import _cli, _start, _stop, _wait_healthy, tiny_overrides

    closed = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(DVC).parent}:{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    # One class deployment per way to fail, and a healthy one; the parent sends each class to one.
    clone_of_nothing = _dvc_project(tmp_path / "clone")
    good_pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    setups = {
        "good": (good_pull, {}),
        "no-repo": ([{"pipelines.worker_setup.clone": {"repository": f"file://{tmp_path}/no-such.git"}}], {}),
        "no-dvc-remote": (
            [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(clone_of_nothing)}},
                {"pipelines.worker_setup.dvc_pull": {"remote": str(tmp_path / "no-such-remote")}},
            ],
            {},
        ),
        "no-tracking": (good_pull, {"env": {"MLFLOW_TRACKING_URI": closed}}),
    }
    spec = {
        "name": "fcdd-setup-test",
        "build": None,
        "push": None,
        "pull": good_pull,
        "deployments": [
            {
                "name": name,
                "entrypoint": "pipelines/flows.py:train_class",
                "pull": pull,
                "work_pool": {"name": "gpu-pool", "job_variables": job_variables},
            }
            for name, (pull, job_variables) in setups.items()
        ],
    }
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(spec))
    route = {"t-shirt-top": "good", "trouser": "no-repo", "pullover": "no-dvc-remote", "dress": "no-tracking"}
    submit = fanout.run_deployment

    def routed(name, parameters, **kwargs):
        return submit(name=f"fcdd-train-class/{route[parameters['cls']]}", parameters=parameters, **kwargs)

    monkeypatch.setattr(fanout, "run_deployment", routed)
    logs = tmp_path / "logs"
    logs.mkdir()
    server = _start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        logs / "server.log",
    )
    worker = None
    try:
        _wait_healthy(api, server, logs / "server.log")
        _cli(["work-pool", "create", "gpu-pool", "--type", "process"], env)
        _cli(["--no-prompt", "deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml")], env)
        worker = _start(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu-pool"],
            env,
            logs / "worker.log",
        )
        overrides = [
            *tiny_overrides(tmp_path),
            "data.classes=[0, 1, 2, 3]",
            "orchestration.retries=1",
            "tracking.enabled=true",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
        ]
        with temporary_settings({PREFECT_API_URL: api}):
            with pytest.raises(flows.ClassRunsFailed) as failed:  # three of four classes fail
                flows.train_dataset(params=str(REPO / "params.yaml"), overrides=overrides)
            rows = failed.value.rows
            states = {row["class"]: _flow_run_state(row["flow_run_id"]) for row in rows}
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
    worker_log = (logs / "worker.log").read_text()[-6000:]
    table = pd.read_csv(tmp_path / "runs" / "fmnist-results-partial.csv", dtype={"class": str})
    table = table.set_index("class")
    ids = pd.read_csv(tmp_path / "runs" / "fmnist-tracking.csv", dtype={"class": str}).set_index("class")
    assert table.loc["t-shirt-top", "status"] == "completed", worker_log
    expected = {
        "trouser": f"cannot clone file://{tmp_path}/no-such.git",
        "pullover": f"dvc pull of data.dvc from {tmp_path / 'no-such-remote'} failed: ERROR",
        "dress": f"tracking server {closed} unreachable",
    }
    for cls, reason in expected.items():
        state_type, message = states[cls]
        assert state_type == "FAILED" and reason in message and "\n" not in message, (
            cls,
            message,
            worker_log,
        )
        assert worker_setup.is_setup_failure(message)
        assert table.loc[cls, "status"] == "failed" and table.loc[cls, "error"] == results.one_line(
            f"Failed: {message}"
        )
        assert ids.loc[cls, "resubmissions"] == 1  # another worker may reach the servers: once more


def _flow_run_state(flow_run_id: str) -> tuple[str, str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.type.value, state.message or ""


def test_the_cluster_pull_steps_use_the_one_line_wrappers():
    pull = yaml.safe_load((REPO / "prefect.cluster.yaml").read_text())["pull"]
    steps = [next(iter(step)) for step in pull]
    assert steps == [
        "pipelines.worker_setup.clone",
        "prefect.deployments.steps.set_working_directory",
        "pipelines.worker_setup.dvc_pull",
    ]
    assert json.dumps(pull).count("{{") == 4  # commit, git URL, clone directory, DVC remote
