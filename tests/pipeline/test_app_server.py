"""`fcdd app` on the server side: every bad input of the page is a message naming the file while
the rest is scored; the picker and folders stay inside their roots; passwords off loopback; the
download equals `fcdd predict`'s files; verdicts form a folder dataset."""

from __future__ import annotations

import argparse
import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from app_helpers import bomb_png, float_tiff, png16, rgb_png  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from shared_fixtures import tiny_detector  # noqa: E402

from fcdd.app import command, feedback  # noqa: E402
from fcdd.app.catalog import ModelCatalog  # noqa: E402
from fcdd.app.jobs import JobStore  # noqa: E402
from fcdd.app.scorer import Scorer  # noqa: E402
from fcdd.app.server import AppSettings, create_app  # noqa: E402
from fcdd.cli import main  # noqa: E402
from fcdd.errors import UsageError  # noqa: E402


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """The tiny detector with a calibration from its own scores of 39 noise images (n = 39)."""
    folder = tmp_path_factory.mktemp("calibrated")
    det = tiny_detector()
    rng = np.random.default_rng(5)
    cal = det.score([rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(39)])
    det.meta["calibration"] = {
        "n": 39,
        "image_scores": [float(s) for s in cal.scores],
        "pixel_max": [float(h.max()) for h in cal.heatmaps],
    }
    return det.save(folder / "model.pt")


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(models, *, max_files=2000, max_bytes=2**26, max_pixels=None, password=None, **settings):
        catalog = ModelCatalog([str(m) for m in models], settings.pop("models_root", None))
        store = JobStore(max_files=max_files, max_bytes=max_bytes)
        scorer = Scorer(store, catalog, **({"max_pixels": max_pixels} if max_pixels else {}))
        scorer.start()
        started.append((scorer, store))
        app = create_app(
            AppSettings(labels=tmp_path / "labels", password=password, **settings), catalog, store
        )
        return TestClient(app, base_url="http://127.0.0.1", headers={"x-fcdd-app": "1"})

    yield start
    for scorer, store in started:
        scorer.stop()
        store.close()


def _job(client, ref) -> str:
    job = client.post("/api/jobs").json()["job"]
    assert client.post(f"/api/jobs/{job}/track", json={"ref": str(ref)}).status_code == 200
    return job


def _upload(client, job, path: Path, name: str | None = None):
    return client.put(f"/api/jobs/{job}/files", params={"name": name or path.name}, content=path.read_bytes())


def _finished(client, job, ref, files: int) -> dict:
    since, items, results = 0, {}, {}
    for _ in range(200):
        s = client.get(f"/api/jobs/{job}/status", params={"ref": str(ref), "since": since, "wait": 5}).json()
        since = s["stamp"]
        items |= {i["i"]: i for i in s["items"]}
        results |= {r["i"]: r for r in s["results"]}
        if (
            s["counts"]["pending"] == 0
            and s["counts"]["files"] >= files
            and len(results)
            >= files
            - sum(1 for i in items.values() if i["error"] and i["size"] is None and i["i"] not in results)
        ):
            if all(i["i"] in results or i["error"] for i in items.values()):
                return {"status": s, "items": items, "results": results}
    raise AssertionError(f"not finished: {s}")


def test_bad_inputs_are_named_and_the_rest_is_scored(serve, calibrated, tmp_path):
    client = serve([calibrated], max_pixels=100_000, max_bytes=200_000)
    job = _job(client, calibrated)
    files = {
        "good.png": rgb_png(tmp_path / "good.png"),
        "sixteen.png": png16(tmp_path / "sixteen.png"),
        "float.tif": float_tiff(tmp_path / "float.tif"),
        "notes.txt": tmp_path / "notes.txt",
        "bomb.png": bomb_png(tmp_path / "bomb.png"),  # 60000² pixels claimed: Pillow's own guard
        "bomb2.png": bomb_png(tmp_path / "bomb2.png", side=12_000),  # below Pillow's guard, over ours
        "big.png": rgb_png(tmp_path / "big.png", size=(400, 300)),  # 120,000 px > 100,000
        "huge.png": tmp_path / "huge.png",  # 300 kB of noise > the 200 kB upload limit
    }
    (tmp_path / "notes.txt").write_text("not an image")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(
        files["huge.png"]
    )
    for name, path in files.items():
        assert _upload(client, job, path, name).status_code == 200
    done = _finished(client, job, calibrated, len(files))
    by_name = {i["name"]: i for i in done["items"].values()}
    errors = {n: i["error"] for n, i in by_name.items() if i["error"]}
    assert set(errors) == {"notes.txt", "bomb.png", "bomb2.png", "big.png", "huge.png"}, errors
    assert "not a readable image" in errors["notes.txt"]
    assert "decompression bomb" in errors["bomb.png"]
    assert "12000x12000 pixels exceeds the limit of 100000 pixels" in errors["bomb2.png"]
    assert "300x400 pixels exceeds the limit" in errors["big.png"]
    assert "upload limit" in errors["huge.png"]
    assert "16-bit" in by_name["sixteen.png"]["note"] and "floating-point" in by_name["float.tif"]["note"]
    scored = {by_name[n]["i"] for n in ("good.png", "sixteen.png", "float.tif")}
    assert scored <= set(done["results"]) and all(done["results"][i]["p"] is not None for i in scored)
    assert client.get("/api/setup").status_code == 200  # the server is alive
    # 16-bit: shown as the model saw it, an 8-bit PNG, not the 16-bit original
    shown = client.get(f"/api/jobs/{job}/items/{by_name['sixteen.png']['i']}/image")
    assert Image.open(io.BytesIO(shown.content)).mode == "L"


def test_hundreds_of_files_and_the_per_page_limit(serve, tmp_path):
    model = tiny_detector().save(tmp_path / "m" / "model.pt")
    client = serve([model], max_files=250)
    job = _job(client, model)
    image = rgb_png(tmp_path / "x.png", size=(32, 32))
    codes = [_upload(client, job, image, f"img{k:03d}.png").status_code for k in range(260)]
    assert codes.count(200) == 250 and set(codes[250:]) == {400}
    refused = _upload(client, job, image, "late.png").json()["detail"]
    assert "late.png: not added: at most 250 images per page" in refused
    done = _finished(client, job, model, 251)
    assert done["status"]["counts"]["scored"] == 250
    assert any(
        "at most 250 images per page" in m for m in client.get(f"/api/jobs/{job}/status").json()["messages"]
    )


def test_the_picker_loads_only_offered_models(serve, calibrated, tmp_path):
    root = tmp_path / "models"
    inside = tiny_detector(1).save(root / "b" / "model.pt")
    client = serve([calibrated], models_root=root.resolve())
    listed = [m["ref"] for m in client.get("/api/setup").json()["catalog"]["models"]]
    assert listed == [str(calibrated), str(inside.resolve())]
    assert client.get("/api/model", params={"ref": str(inside)}).json()["net"] == "cnn28"
    for ref in ("/etc/passwd", str(root / ".." / "calibrated"), str(tmp_path / "elsewhere.pt")):
        r = client.get("/api/model", params={"ref": ref})
        assert r.status_code == 400 and "not offered here" in r.json()["detail"], ref
    r = client.get("/api/model", params={"ref": "models:/x@champion"})
    assert r.status_code == 400 and "no model registry is configured" in r.json()["detail"]
    job = client.post("/api/jobs").json()["job"]
    assert client.post(f"/api/jobs/{job}/track", json={"ref": "/etc/hosts"}).status_code == 400


def test_server_folders_only_under_the_image_root(serve, calibrated, tmp_path):
    root = tmp_path / "images"
    (root / "lot1").mkdir(parents=True)
    for k in range(3):
        rgb_png(root / "lot1" / f"{k}.png", seed=k)
    client = serve([calibrated], images_root=root.resolve())
    job = _job(client, calibrated)
    assert client.post(f"/api/jobs/{job}/folder", json={"path": "lot1"}).json() == {
        "added": 3,
        "found": 3,
        "failed": 0,
    }
    for path in ("..", "/etc", "lot1/../.."):
        r = client.post(f"/api/jobs/{job}/folder", json={"path": path})
        assert r.status_code == 400 and "outside --images-root" in r.json()["detail"], path
    done = _finished(client, job, calibrated, 3)
    assert sorted(i["name"] for i in done["items"].values()) == ["lot1/0.png", "lot1/1.png", "lot1/2.png"]
    off = serve([calibrated])
    job = off.post("/api/jobs").json()["job"]
    assert "--images-root" in off.post(f"/api/jobs/{job}/folder", json={"path": "lot1"}).json()["detail"]


def test_password_off_loopback_and_requests_from_other_sites(serve, calibrated, monkeypatch):
    args = argparse.Namespace(
        host="0.0.0.0", password_file=None, max_files=10, max_upload_mb=1, labels="labels", images_root=None
    )
    monkeypatch.delenv(command.PASSWORD_ENV, raising=False)
    with pytest.raises(
        UsageError, match="--host 0.0.0.0: other machines could reach the page; set a password"
    ):
        command._settings(args, AppSettings)
    monkeypatch.setenv(command.PASSWORD_ENV, "s3cret")
    settings = command._settings(args, AppSettings)
    assert (settings.password, settings.loopback) == ("s3cret", False)
    client = serve([calibrated], password="s3cret", loopback=False)
    assert client.get("/").status_code == 401 and client.get("/api/setup").status_code == 401
    assert client.get("/api/setup", auth=("fcdd", "wrong")).status_code == 401
    assert client.get("/api/setup", auth=("fcdd", "s3cret")).status_code == 200
    local = serve([calibrated])
    assert local.get("/api/setup", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
    r = local.post("/api/jobs", headers={"x-fcdd-app": ""})  # a form posted by another site
    assert r.status_code == 403 and "fcdd app page" in r.json()["detail"]


def test_the_download_is_what_fcdd_predict_writes(serve, calibrated, tmp_path):
    images = [
        rgb_png(tmp_path / f"p{k}.png", size=(40 + 8 * k, 56), seed=k, square=k % 2 == 1) for k in range(6)
    ]
    images.append(png16(tmp_path / "deep.png"))
    client = serve([calibrated])
    job = _job(client, calibrated)
    for path in images:
        _upload(client, job, path)
    _finished(client, job, calibrated, len(images))
    alpha = 0.3
    z = zipfile.ZipFile(
        io.BytesIO(
            client.get(f"/api/jobs/{job}/download", params={"ref": str(calibrated), "alpha": alpha}).content
        )
    )
    assert (
        main(
            [
                "predict",
                "--model",
                str(calibrated),
                "--alpha",
                str(alpha),
                "--out",
                str(tmp_path / "pred"),
                "--no-heatmaps",
                *map(str, images),
            ]
        )
        == 0
    )
    with open(tmp_path / "pred" / "scores.csv", newline="") as f:
        expected = list(csv.DictReader(f))
    got = list(csv.DictReader(io.StringIO(z.read("scores.csv").decode())))
    assert [r["path"] for r in got] == [p.name for p in images]
    assert len({r["anomalous"] for r in got}) == 2  # some flagged, some not: the masks are exercised
    for g, e in zip(got, expected, strict=True):
        # oneDNN rounds per batch size (predict: one batch of 7, the page: batches of 4): scores agree
        # to float precision, decisions and mask pixels exactly
        assert float(g["score"]) == pytest.approx(float(e["score"]), rel=1e-5)
        assert {k: g[k] for k in g if k not in ("path", "score")} == {
            k: e[k] for k in g if k not in ("path", "score")
        }
        if g["mask"]:
            assert z.read(g["mask"]) == (tmp_path / "pred" / e["mask"]).read_bytes()


def test_verdicts_form_a_folder_dataset(serve, calibrated, tmp_path, make_folder_config):
    client = serve([calibrated])
    job = _job(client, calibrated)
    names = [f"part{k}.png" for k in range(4)]
    for k, name in enumerate(names):
        _upload(client, job, rgb_png(tmp_path / name, seed=k, square=k == 3))
    _finished(client, job, calibrated, 4)

    def send(i, verdict, **kw):
        return client.post(
            "/api/feedback",
            json={"job": job, "i": i, "ref": str(calibrated), "verdict": verdict, "alpha": 0.05, **kw},
        )

    for i in range(3):
        assert send(i, "false_alarm").status_code == 200
    mask = np.zeros((48, 48), np.uint8)
    mask[10:24, 12:26] = 255
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = send(3, "missed_defect", mask=data_url).json()
    assert (
        r["image"].startswith("defect/part3-")
        and r["mask"] == r["image"].replace("defect/", "masks/")[:-4] + "_mask.png"
    )
    small = io.BytesIO()
    Image.fromarray(mask[:20]).save(small, format="PNG")
    bad = send(
        3, "missed_defect", mask="data:image/png;base64," + base64.b64encode(small.getvalue()).decode()
    )
    assert bad.status_code == 400 and "48x20 pixels, but the image is 48x48" in bad.json()["detail"]
    labels = tmp_path / "labels"
    with open(labels / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["verdict"] for r in rows] == ["false_alarm"] * 3 + ["missed_defect"]
    assert (
        rows[0]["model"] == str(calibrated)
        and float(rows[0]["score"]) > 0
        and rows[0]["source"] == "part0.png"
    )
    # the folder dataset reads the labels folder as written
    from fcdd.data.datasets.folder import load_folder

    cfg = make_folder_config(
        labels,
        tmp_path / "out",
        "data.folder={nominal: [good], anomalous: [defect], masks: [masks], mask_suffix: _mask, test_ratio: 0.34}",
    )
    raw = load_folder(cfg, "tiles", 0)
    assert (
        len(raw.test.paths) == 2
        and list(raw.test.labels) == [0, 1]
        and raw.test.full_mask(1).sum() == 14 * 14
    )
    # judged again: the image moves to the new verdict's folder, the CSV keeps both rows
    moved = send(3, "false_alarm").json()
    assert (
        moved["replaced"]
        and not list((labels / "defect").iterdir())
        and not list((labels / "masks").iterdir())
    )


def test_labels_never_inside_a_model_folder(calibrated):
    with pytest.raises(feedback.FeedbackError, match="inside the model's folder"):
        feedback.check_labels_folder(calibrated.parent / "labels", [calibrated.parent])
    assert feedback.check_labels_folder(calibrated.parent.parent / "labels", [calibrated.parent])


def test_the_picker_lists_and_loads_registered_models(serve, calibrated, tmp_path):
    """The MLflow registry through the MLflow plugin (fcdd.plugins): aliases listed, a models:/ URI
    loaded with the version's metrics; a store that does not exist is not created by looking."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from fcdd.app.registry import open_registry
    from pipelines import pyfunc, registry

    missing = open_registry(f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.list_models() == [] and not (tmp_path / "none.db").exists()
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("app", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.set_tag("fcdd.data_version", "md5:abc123")
        info = pyfunc.log_detector_model(calibrated)
    registry.register_version(
        client,
        uri,
        "fcdd-folder-tiles",
        info.model_uri,
        {"image_auc": 0.91, "calibration_n": 39},
        "folder/tiles",
        run_id=run.info.run_id,
    )
    catalog = ModelCatalog([], registry=open_registry(uri))
    refs = [m["ref"] for m in catalog.entries()["models"]]
    assert refs == ["models:/fcdd-folder-tiles@challenger", "models:/fcdd-folder-tiles@champion"]
    card = catalog.get("models:/fcdd-folder-tiles@champion").card
    assert (card["version"], card["image_auc"], card["data_version"]) == ("1", 0.91, "md5:abc123")
    assert card["calibration_n"] == 39 and card["alphas"][0]["alpha"] == 0.001
    with pytest.raises(UsageError, match="models:/fcdd-folder-tiles@nope: not in the registry"):
        catalog.get("models:/fcdd-folder-tiles@nope")


def test_the_page_answers_without_nagle_delays():
    """Every kept-alive request waited ~40 ms for a delayed ACK when the listening socket did not say
    it was TCP (asyncio then leaves Nagle on). The connections the server accepts have TCP_NODELAY."""
    import asyncio
    import socket

    sock = command._bind("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
