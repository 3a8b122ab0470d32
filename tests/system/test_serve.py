"""`mlflow models serve` of a registered FCDD model: scores + heatmaps over HTTP, 400 on bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
torch = pytest.importorskip("torch")

from mlflow import MlflowClient  # noqa: E402
from net_helpers import free_port  # noqa: E402
from shared_fixtures import images, tiny_detector  # noqa: E402

from pipelines import pyfunc, registry  # noqa: E402

START_TIMEOUT_S = 120


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_until_up(base: str, server: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"mlflow models serve exited with {server.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve not up after {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


@pytest.mark.integration
@pytest.mark.slow
def test_serve_registered_model(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("serve", artifact_location=(tmp_path / "art").as_uri())
    detector = tiny_detector()
    with mlflow.start_run(experiment_id=experiment) as run:
        info = pyfunc.log_detector_model(
            detector.save(tmp_path / "model.pt"), max_pixels=64 * 64, max_request_pixels=5000
        )
    version, champion = registry.register_version(
        client, uri, "fcdd-fmnist-0", info.model_uri, {"image_auc": 0.9}, "fmnist/0", run.info.run_id
    )
    assert champion

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    # MLflow execs `uvicorn` by name: the interpreter's bin folder (the venv) must be on PATH
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=uri, PATH=path)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fcdd-fmnist-0@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_until_up(base, server, log_path)
        imgs = images(2)
        payload = {
            "dataframe_split": {"columns": ["image"], "data": [[pyfunc.encode_image(im)] for im in imgs]},
            "params": {"heatmap_format": "npy"},
        }
        status, body = post(f"{base}/invocations", payload)
        assert status == 200, body
        predictions = body["predictions"]
        expected = detector.score(imgs)
        np.testing.assert_allclose([p["score"] for p in predictions], expected.scores, rtol=1e-5, atol=1e-7)
        for p, heatmap in zip(predictions, expected.heatmaps, strict=True):
            assert (p["height"], p["width"]) == heatmap.shape
            np.testing.assert_allclose(pyfunc.decode_heatmap(p["heatmap"]), heatmap, rtol=1e-5, atol=1e-7)

        bad = {"dataframe_split": {"columns": ["image"], "data": [["not an image!"]]}}
        status, body = post(f"{base}/invocations", bad)
        assert status == 400 and "neither base64" in body.get("message", ""), body
        too_big = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[pyfunc.encode_image(np.zeros((80, 80), np.uint8))]],
            }
        }
        status, body = post(f"{base}/invocations", too_big)
        assert status == 400 and "exceeds the limit" in body.get("message", ""), body
        over_budget = {  # 3 images of 50x50: 2500 px each within the 4096 limit, 7500 in all > 5000
            "dataframe_split": {
                "columns": ["image"],
                "data": [[pyfunc.encode_image(np.zeros((50, 50), np.uint8))]] * 3,
            }
        }
        status, body = post(f"{base}/invocations", over_budget)
        assert status == 400 and "request too large" in body.get("message", ""), body
        status, body = post(f"{base}/invocations", {"dataframe_records": [{"picture": "x"}]})
        assert 400 <= status < 500, body
        path_input = {"dataframe_split": {"columns": ["image"], "data": [[str(tmp_path / "model.pt")]]}}
        status, body = post(f"{base}/invocations", path_input)
        assert status == 400 and "file paths are not accepted" in body.get("message", ""), body
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
