"""fcdd export: ONNX / OpenVINO / TorchScript graphs score like the PyTorch Detector, and an
edited or foreign export is refused with one line."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from shared_fixtures import PREPROCESS, tiny_detector

from fcdd import cli
from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import Config, ModelConfig
from fcdd.detector import Detector, DetectorError
from fcdd.export import META_FILE, ExportError, export_detector, meta_digest
from fcdd.models import build_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from fcdd.backends import ExportedDetector  # noqa: E402

FORMATS = ("onnx", "openvino", "torchscript")
NETS = {"cnn28": (1, 28), "cnn32": (3, 32), "vgg11_bn": (3, 64)}  # VGG at 64 px: the same graph, faster


def _detector(net: str) -> Detector:
    channels, size = NETS[net]
    torch.manual_seed(0)
    model = build_model(Config(model=ModelConfig(net=net, input_size=size)), in_channels=channels)
    # Non-trivial BatchNorm statistics, so eval-mode normalisation is part of what is compared.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, None, size)
    pre = dict(PREPROCESS, input_size=size, channels=channels)
    meta = {
        "net": {"net": net, "input_size": size, "sigma": None},
        "dataset": "x",
        "class": "a",
        "quantile": 0.97,
    }
    meta["calibration"] = {
        "n": 3,
        "image_scores": torch.tensor([0.1, 0.2, 0.3]),
        "pixel_max": [1.0, 2.0, 3.0],
    }
    return Detector(model, upsampler, pre, meta)


def _images(channels: int, n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    shape = (lambda i: (30 + 7 * i, 26 + 5 * i)) if channels == 1 else (lambda i: (30 + 7 * i, 26 + 5 * i, 3))
    return [rng.integers(0, 256, shape(i), dtype=np.uint8) for i in range(n)]


def _close(out, ref) -> tuple[float, float]:
    score_rel = float(np.max(np.abs(out.scores - ref.scores) / np.abs(ref.scores)))
    heat_rel = max(
        float(np.abs(a - b).max() / (b.max() - b.min()))
        for a, b in zip(out.heatmaps, ref.heatmaps, strict=True)
    )
    return score_rel, heat_rel


@pytest.fixture(scope="module", params=list(NETS))
def exported(request, tmp_path_factory):
    det = _detector(request.param)
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    for fmt in FORMATS:
        export_detector(det, fmt, root / fmt)
    return request.param, det, root


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 5])
def test_exported_scores_and_heatmaps_match_pytorch(exported, fmt, batch):
    net, det, root = exported
    images = _images(NETS[net][0])
    ref = det.score(images, batch_size=batch)
    out = ExportedDetector.load(root / fmt).score(images, batch_size=batch)
    assert out.scores.shape == (5,) and [h.shape for h in out.heatmaps] == [h.shape for h in ref.heatmaps]
    score_rel, heat_rel = _close(out, ref)
    assert score_rel < 1e-4 and heat_rel < 1e-4, (net, fmt, batch, score_rel, heat_rel)
    np.testing.assert_allclose(out.maps, ref.maps, rtol=1e-4, atol=1e-6 * float(np.abs(ref.maps).max()))


def test_onnx_graph_has_dynamic_batch_and_heatmap_output(tmp_path):
    import onnx

    export_detector(tiny_detector(), "onnx", tmp_path)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(graph.input[0]) == ["batch", 1, 28, 28]
    outputs = {o.name: dims(o) for o in graph.output}
    assert outputs["score"] == ["batch"] and outputs["heatmap"] == ["batch", 1, 28, 28]


def test_non_square_model_exports_with_its_own_height_and_width(tmp_path):
    det = tiny_detector()
    det.upsampler = ReceptiveFieldUpsampler(det.model.receptive_field, 1.2, (28, 36))
    export_detector(det, "onnx", tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["input"]["shape"] == ["batch", 1, 28, 36]
    x = torch.rand(3, 1, 28, 36)
    score, heat, amap = ExportedDetector.load(tmp_path).run(x.numpy())
    s, a, up = det.score_tensor(x)
    assert heat.shape == (3, 1, 28, 36)
    np.testing.assert_allclose(heat[:, 0], up.numpy(), rtol=1e-4, atol=1e-6)


def test_json_carries_preprocessing_sigma_calibration_and_hashes(tmp_path):
    det = _detector("cnn28")
    export_detector(det, "openvino", tmp_path, source="run/model.pt")
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["preprocess"] == det.preprocess and meta["sigma"] == pytest.approx(det.upsampler.sigma)
    assert meta["quantile"] == 0.97 and meta["meta"]["calibration"]["image_scores"] == pytest.approx(
        [0.1, 0.2, 0.3]
    )
    assert set(meta["files"]) == {"model.xml", "model.bin"} and meta["source"] == "run/model.pt"
    assert ExportedDetector.load(tmp_path).meta["calibration"]["n"] == 3


def _edit(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return meta


def test_tampered_json_is_refused(tmp_path):
    export_detector(tiny_detector(), "onnx", tmp_path)
    _edit(tmp_path / META_FILE, sigma=3.0)
    with pytest.raises(ExportError, match="edited after export"):
        ExportedDetector.load(tmp_path)


def test_other_package_version_is_refused(tmp_path):
    export_detector(tiny_detector(), "onnx", tmp_path)
    meta = _edit(tmp_path / META_FILE, fcdd_version="0.0.1")
    _edit(tmp_path / META_FILE, digest=meta_digest(meta))  # a consistent JSON from another version
    with pytest.raises(ExportError, match="exported by fcdd 0.0.1, this is fcdd"):
        ExportedDetector.load(tmp_path)


def test_replaced_model_file_is_refused(tmp_path):
    export_detector(tiny_detector(0), "onnx", tmp_path / "a")
    export_detector(tiny_detector(1), "onnx", tmp_path / "b")
    (tmp_path / "a" / "model.onnx").write_bytes((tmp_path / "b" / "model.onnx").read_bytes())
    with pytest.raises(ExportError, match="SHA-256 differs"):
        ExportedDetector.load(tmp_path / "a")


def test_missing_extra_names_the_extra(monkeypatch, tmp_path):
    export_detector(tiny_detector(), "onnx", tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ExportError, match=r"install the export extra \(pip install 'fcdd\[export\]'\)"):
        ExportedDetector.load(tmp_path)


@pytest.mark.slow
def test_cli_export_predict_and_info_like_pytorch(tmp_path, capsys):
    det = _detector("cnn28")
    det.save(tmp_path / "model.pt")
    for i, a in enumerate(_images(1, 3)):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    imgs = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert (
        cli.main(["predict", *imgs, "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "pt")])
        == 0
    )
    rows = {}
    for fmt in FORMATS:
        assert (
            cli.main(["export", str(tmp_path / "model.pt"), "--format", fmt, "--out", str(tmp_path / fmt)])
            == 0
        )
        assert (
            cli.main(["predict", *imgs, "--model", str(tmp_path / fmt), "--out", str(tmp_path / f"p-{fmt}")])
            == 0
        )
        with open(tmp_path / f"p-{fmt}" / "scores.csv") as f:
            rows[fmt] = list(csv.DictReader(f))
    with open(tmp_path / "pt" / "scores.csv") as f:
        ref = list(csv.DictReader(f))
    for fmt, got in rows.items():
        assert [r.keys() for r in got] == [r.keys() for r in ref]  # same columns, calibration included
        assert [r["anomalous"] for r in got] == [r["anomalous"] for r in ref]
        np.testing.assert_allclose(
            [float(r["score"]) for r in got], [float(r["score"]) for r in ref], rtol=1e-4
        )
        assert all((tmp_path / f"p-{fmt}" / r["heatmap"]).is_file() for r in got)
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "onnx" / "model.onnx")]) == 0
    out = capsys.readouterr().out
    assert "backend: onnx" in out and "net: cnn28" in out and "n: 3" in out


def test_cli_refuses_tampered_export_in_one_line(tmp_path, capsys):
    tiny_detector().save(tmp_path / "model.pt")
    assert cli.main(["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "e")]) == 0
    _edit(tmp_path / "e" / META_FILE, preprocess={"channels": 3})
    Image.fromarray(_images(1, 1)[0]).save(tmp_path / "x.png")
    assert cli.main(["predict", str(tmp_path / "x.png"), "--model", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "edited after export" in err
    assert cli.main(["evaluate", str(tmp_path / "e")]) == 2
    assert "needs the model.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_registry_version_carries_the_onnx_export(tmp_path, monkeypatch):
    """tracked_experiment registers a version whose ONNX folder scores like the Detector."""
    pytest.importorskip("mlflow")
    from fcdd import runs
    from fcdd.config import load_config
    from fcdd.experiment import RunResult, run_dir_for
    from pipelines import registry, tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None,
        overrides=[
            f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
            f"train.output_dir={tmp_path / 'runs'}",
        ],
    )

    def fake_experiment(cfg, cls, seed, callbacks=None):
        run_dir = run_dir_for(cfg, cls, seed)
        model_path = tiny_detector(seed).save(run_dir / "model.pt")
        return RunResult(cfg.data.dataset, cls, seed, run_dir, {"image_auc": 0.7}, [], model_path, {})

    monkeypatch.setattr(runs, "run_experiment", fake_experiment)
    result = tracking.tracked_experiment(cfg, "bag", 0)
    folder = registry.download_onnx(f"models:/{result['model_name']}@champion", tmp_path / "dl")
    assert sorted(p.name for p in folder.iterdir()) == ["fcdd_export.json", "model.onnx"]
    imgs = _images(1, 3)
    expected = tiny_detector(0).score(imgs).scores
    np.testing.assert_allclose(ExportedDetector.load(folder).score(imgs).scores, expected, rtol=1e-4)

    uri = f"models:/{result['model_name']}@champion"
    tracking_uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}"]
    assert (
        cli.main(["export", uri, *tracking_uri, "--format", "openvino", "--out", str(tmp_path / "ov")]) == 0
    )
    np.testing.assert_allclose(ExportedDetector.load(tmp_path / "ov").score(imgs).scores, expected, rtol=1e-4)

    off = load_config(
        None, overrides=[f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}", "tracking.onnx=false"]
    )
    result = tracking.tracked_experiment(off, "coat", 0)
    with pytest.raises(ValueError, match="not an fcdd model with a 'onnx' artifact"):
        registry.download_onnx(f"models:/{result['model_name']}/1", tmp_path / "dl2")


@pytest.mark.slow
def test_bench_export_quick_times_every_backend(capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_export.py"
    spec = importlib.util.spec_from_file_location("bench_export", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_export", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    rows = bench.main(["--quick", "--nets", "cnn28", "--batches", "1", "3", "--threads", "1"])
    assert {(r.backend, r.batch) for r in rows} == {(b, n) for b in bench.BACKEND_ORDER for n in (1, 3)}
    assert all(r.images_per_s > 0 and len(r.latencies) >= 2 for r in rows)
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "| cnn28 | 28 | onnx | 3 |" in out


def test_a_model_scored_by_its_heatmap_maximum_exports_that_score(tmp_path):
    det = _detector("cnn28")
    x = torch.rand(4, 1, 28, 28)
    by_mean, amap, heat = det.score_tensor(x)
    det.meta["image_score"] = "max"
    by_max, amap_max, heat_max = det.score_tensor(x)
    # the same maps; only the image score changes, to each heatmap's maximum
    torch.testing.assert_close(heat_max, heat)
    torch.testing.assert_close(amap_max, amap)
    torch.testing.assert_close(by_max, heat.flatten(1).amax(1))
    torch.testing.assert_close(by_mean, amap.flatten(1).mean(1))
    assert not torch.allclose(by_max, by_mean)
    det.save(tmp_path / "model.pt")
    loaded = Detector.load(tmp_path / "model.pt")
    assert loaded.image_score == "max"
    torch.testing.assert_close(loaded.score_tensor(x)[0], by_max)
    export_detector(loaded, "onnx", tmp_path / "onnx")
    score, exported_heat, _ = ExportedDetector.load(tmp_path / "onnx").run(x.numpy())
    np.testing.assert_allclose(score, by_max.numpy(), rtol=1e-4)
    np.testing.assert_allclose(exported_heat[:, 0], heat.numpy(), rtol=1e-4, atol=1e-6)


def test_a_model_file_with_an_unknown_image_score_is_refused_in_one_line(tmp_path):
    det = _detector("cnn28")
    det.meta["image_score"] = "p99"
    det.save(tmp_path / "model.pt")
    with pytest.raises(DetectorError) as err:
        Detector.load(tmp_path / "model.pt")
    assert str(err.value) == (
        f"{tmp_path / 'model.pt'}: image score 'p99' is not one of mean, max (a model file of a newer fcdd?)"
    )
