"""End to end on a real Prefect server: work pool, process worker, `prefect deploy --all`, a deployment
run of the fan-out that starts a class deployment run, its results and artifacts.

Starts `prefect server start` and `prefect worker start` on loopback with PREFECT_HOME in a tmp dir,
and stops both (their whole process groups) whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from net_helpers import free_port
from shared_fixtures import TINY_RUN

REPO = Path(__file__).resolve().parents[2]
PARAMS = str(REPO / "params.yaml")
FMNIST = REPO / "data" / "fashion-mnist"
SHARED_OE = REPO.parent / "shared" / "data" / "imagenet1k_samples"
PREFECT = [sys.executable, "-m", "prefect"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (any(FMNIST.glob("*ubyte*")) and SHARED_OE.is_dir()),
        reason="needs data/fashion-mnist and ../shared/data/imagenet1k_samples",
    ),
]


def tiny_overrides(tmp_path: Path) -> list[str]:
    """One epoch on a few images, on the CPU, tracking off: seconds of real training."""
    return [
        "orchestration.mode=deployments",
        "train.epochs=1",
        *TINY_RUN,
        "orchestration.retry_delay_s=1",
        "data.classes=['0']",
        f"train.output_dir={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"data.root={FMNIST}",
        f"anomalies.oe_source={SHARED_OE}",
    ]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    # A new session: the process and all it spawns form one group we can kill together.
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _cli(args: list[str], env: dict, timeout: float = 300) -> str:
    done = subprocess.run(
        [*PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture()
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict, Path]]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
        "PYTHONPATH": str(REPO),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    server = _start(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, logs / "server.log"
    )
    worker = None
    try:
        _wait_healthy(api, server, logs / "server.log")
        _cli(["work-pool", "create", "gpu-pool", "--type", "process"], env)
        _cli(["gcl", "create", "gpu", "--limit", "1"], env)
        _cli(["--no-prompt", "deploy", "--all"], env)
        worker = _start([*PREFECT, "worker", "start", "--pool", "gpu-pool"], env, logs / "worker.log")
        yield api, env, logs
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)


def test_deployment_run_fans_out_to_class_deployment_runs(prefect_server, tmp_path):
    api, env, logs = prefect_server
    output = tmp_path / "runs"
    # The deployment's own output_dir (runs/deployments) would win over no parameter: pass it.
    params = {
        "params": PARAMS,
        "classes": ["0"],
        "overrides": tiny_overrides(tmp_path),
        "output_dir": str(output),
    }
    run = subprocess.run(
        [*PREFECT, "deployment", "run", "fcdd-train/fcdd-train", "--params", json.dumps(params), "--watch"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    worker_log = (logs / "worker.log").read_text()
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- worker:\n{worker_log[-6000:]}"

    table = pd.read_csv(output / "fmnist" / "results.csv", dtype={"class": str})
    assert list(table["class"]) == ["t-shirt-top"] and list(table["status"]) == ["completed"]
    assert 0.0 <= float(table.loc[0, "image_auc"]) <= 1.0
    assert "flow_run_id" not in table  # run-specific: beside the folder DVC hashes, not in it
    tracking = pd.read_csv(output / "fmnist-tracking.csv", dtype={"class": str})
    assert list(tracking["class"]) == ["t-shirt-top"]
    assert isinstance(tracking.loc[0, "flow_run_id"], str)  # it ran as its own deployment run
    assert (output / "fmnist" / "t-shirt-top" / "seed0" / "model.pt").is_file()

    flow_runs = _api_post(api, "/flow_runs/filter", {})
    states = [fr["state"]["type"] for fr in flow_runs]
    assert len(flow_runs) == 2 and states == ["COMPLETED", "COMPLETED"], flow_runs
    child = next(fr for fr in flow_runs if fr["name"] == "fmnist-t-shirt-top-seed0")
    assert child["id"] == tracking.loc[0, "flow_run_id"]

    keys = {a["key"] for a in _api_post(api, "/artifacts/filter", {})}
    assert {"fcdd-fmnist-aucs", "fcdd-fmnist-summary", "fcdd-fmnist-t-shirt-top-seed0"} <= keys
    assert "epoch 1/1" in worker_log  # the engine's epoch log reached Prefect's run logger


def _api_post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        f"{api}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
