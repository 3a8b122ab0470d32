"""The served model on the cases of `fcdd predict`'s edges (issues 28, 22): the same image rule
(GIF read, truncated PNGs and other formats a 400 with one message), masks never empty for a flagged
image, and the small-calibration warning; in Python and over HTTP (`mlflow models serve`)."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

mlflow = pytest.importorskip("mlflow")

from edge_files import png_bytes  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from net_helpers import free_port  # noqa: E402

from pipelines import pyfunc  # noqa: E402
from tests.system.test_serve import post, wait_until_up  # noqa: E402
from tests.unit.test_predict_edges import calibrated_model  # noqa: E402


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _file_bytes(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def probes() -> dict[str, bytes]:
    a = np.random.default_rng(2).integers(1, 256, (40, 36), dtype=np.uint8)
    return {
        "truncated": png_bytes(a, rows=10),
        "eps": _file_bytes(np.stack([a] * 3, -1), "EPS"),
        "gif": _file_bytes(a, "GIF"),
        "png": _file_bytes(a, "PNG"),
    }


@pytest.fixture
def served(tmp_path):
    """The pyfunc on a model whose calibrated pixel threshold no new image reaches, n = 20."""
    model = pyfunc.FCDDPyfunc()
    path = calibrated_model(tmp_path / "model.pt", n=20, pixel_max=1e6)
    model.load_context(SimpleNamespace(model_config={}, artifacts={pyfunc.DETECTOR_ARTIFACT: str(path)}))
    return model


def test_bad_files_are_400s_with_one_message_and_gifs_are_images(served):
    data = probes()
    for name, needle in (("truncated", "not a readable image (truncated"), ("eps", "not one of PNG, JPEG")):
        with pytest.raises(MlflowException) as err:
            served.predict(None, pyfunc.pd.DataFrame({"image": [_b64(data[name])]}))
        assert err.value.get_http_status_code() == 400 and needle in err.value.message
        assert "\n" not in err.value.message
    out = served.predict(None, pyfunc.pd.DataFrame({"image": [_b64(data["gif"]), _b64(data["png"])]}))
    assert out["score"].iloc[0] == pytest.approx(out["score"].iloc[1])  # the same pixels


def test_flagged_images_get_masks_and_small_calibrations_a_note(served):
    data = probes()
    frame = pyfunc.pd.DataFrame({"image": [_b64(data["png"])] * 2})
    for fmt in ("png", "rle"):
        out = served.predict(None, frame, params={"alpha": 0.9, "mask_format": fmt})
        assert out["anomalous"].all()
        for cell, note in zip(out["mask"], out["mask_note"], strict=True):
            if fmt == "png":
                mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(cell)))) > 0
            else:
                from fcdd.calibration import rle_decode

                mask = rle_decode(cell)
            assert mask.shape == (40, 36) and mask.any()
            assert note.startswith("no pixel above the calibrated pixel threshold")
    from fcdd.decisions import alpha_warning

    out = served.predict(None, frame, params={"alpha": 0.05})
    assert (out["note"] == alpha_warning({"n": 20}, 0.05)).all() and "mask" not in out.columns
    assert "note" not in served.predict(None, frame, params={"alpha": 0.5}).columns


@pytest.mark.slow
def test_the_same_probes_over_http(tmp_path, monkeypatch):
    """`mlflow models serve` of the logged model: 400s with one message, the server alive after them."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.MlflowClient(uri).create_experiment(
        "edges", artifact_location=(tmp_path / "a").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment):
        info = pyfunc.log_detector_model(calibrated_model(tmp_path / "model.pt", n=20, pixel_max=1e6))
    port, log_path = free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=uri, PATH=path)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        info.model_uri,
        "--env-manager",
        "local",
    ]
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_up(base, server, log_path)
        data = probes()

        def ask(*cells: bytes, **params):
            payload = {"dataframe_split": {"columns": ["image"], "data": [[_b64(c)] for c in cells]}}
            return post(f"{base}/invocations", payload | ({"params": params} if params else {}))

        for name, needle in (("truncated", "truncated"), ("eps", "not one of PNG, JPEG")):
            status, body = ask(data[name], data["png"])
            message = body.get("message", "")
            assert status == 400 and needle in message and "\n" not in message, body
        status, body = ask(data["gif"], data["png"], alpha=0.9, mask_format="png", heatmap_format="none")
        assert status == 200, body
        for p in body["predictions"]:
            assert p["anomalous"] and p["mask_note"]
            assert (np.asarray(Image.open(io.BytesIO(base64.b64decode(p["mask"])))) > 0).any()
        from fcdd.decisions import alpha_warning

        status, body = ask(data["png"], alpha=0.05, heatmap_format="none")
        assert status == 200 and body["predictions"][0]["note"] == alpha_warning({"n": 20}, 0.05)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
    assert Path(log_path).is_file()
