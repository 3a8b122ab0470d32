"""Non-square inputs (model.input_size: [H, W], data.resize: keep_aspect) on an elongated folder
dataset: training sees H x W tensors, evaluate / predict / export / serving keep the rectangle, and
a resize that squashes images says so once."""

from __future__ import annotations

import copy
import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd import experiment
from fcdd.cli import main
from fcdd.config import ConfigError
from fcdd.data import build_datasets, dataset_spec
from fcdd.data.batch_augment import BatchAugment
from fcdd.data.transforms import test_transform
from fcdd.detector import Detector
from fcdd.overlay import LEGEND_MIN_WIDTH

H, W = 80, 200  # the files: 2.5:1 strips, like a 500x1250 surface-defect set
INPUT = [40, 100]  # half size, same aspect


@pytest.fixture(scope="module")
def strips(tmp_path_factory) -> Path:
    """good/*.png greyscale strips, defect/*.png with a bright bar, masks/*_mask.png."""
    root = tmp_path_factory.mktemp("strips")
    rng = np.random.default_rng(0)
    for sub in ("good", "defect", "masks"):
        (root / sub).mkdir()

    def surface() -> np.ndarray:
        rows = np.linspace(90, 150, W)[None, :] + rng.normal(0, 6, (H, W))
        return np.clip(rows, 0, 255).astype(np.uint8)

    for i in range(40):
        Image.fromarray(surface()).save(root / "good" / f"g{i:02d}.png")
    for i in range(10):
        img, mask = surface(), np.zeros((H, W), np.uint8)
        y, x = rng.integers(5, H - 25), rng.integers(5, W - 45)
        img[y : y + 16, x : x + 36] = 250
        mask[y : y + 16, x : x + 36] = 255
        Image.fromarray(img).save(root / "defect" / f"d{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"d{i:02d}_mask.png")
    return root


def _cfg(make_folder_config, root: Path, out: Path, *extra: str):
    return make_folder_config(root, out, "data.stored_size=44", "train.epochs=1", *extra)


@pytest.fixture(scope="module")
def trained(strips, make_folder_config, tmp_path_factory, request):
    """One epoch on [40, 100] inputs; the shapes every training forward pass saw."""
    out = tmp_path_factory.mktemp("rect")
    cfg = _cfg(make_folder_config, strips, out, f"model.input_size={INPUT}")
    seen: list[tuple[int, ...]] = []
    build = experiment.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, inp: seen.append(tuple(inp[0].shape[-2:])) if m.training else None
        )
        return model

    mp = pytest.MonkeyPatch()
    mp.setattr(experiment, "build_model", recording_build)
    try:
        result = experiment.run_experiment(cfg, "tiles", 0)
    finally:
        mp.undo()
    return cfg, result, seen, out


def test_input_size_and_resize_are_validated(strips, make_folder_config, tmp_path):
    for extra, words in (
        (["model.input_size=[40]"], "model.input_size: must be a positive integer or [height, width]"),
        (["model.input_size=[40, 0]"], "model.input_size: must be a positive integer"),
        (["model.input_size=[40, 100]", "data.resize=keep_aspect"], "keep_aspect takes one integer"),
        (["data.resize=stretch"], "data.resize: 'stretch' is not one of fixed, keep_aspect"),
    ):
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            _cfg(make_folder_config, strips, tmp_path, *extra)
    with pytest.raises(ConfigError, match="keep_aspect applies to folder and mvtec; fmnist"):
        _cfg(make_folder_config, strips, tmp_path, "data.dataset=fmnist", "data.resize=keep_aspect")


def test_training_sees_h_by_w_and_the_model_keeps_it(trained):
    cfg, result, seen, _ = trained
    assert seen and set(seen) == {tuple(INPUT)}
    det = Detector.load(result.run_dir / "model.pt")
    assert det.model.input_size == tuple(INPUT) and det.upsampler.input_size == tuple(INPUT)
    assert det.preprocess["input_size"] == INPUT and det.preprocess["stored"] == [44, 110]
    assert det.model.output_size == (10, 25)  # cnn32: j 4
    assert 0 <= result.metrics["image_auc"] <= 1 and "pixel_auc" in result.metrics
    figure = Image.open(result.run_dir / "figures" / "heatmaps_local.png")
    assert figure.width > figure.height  # the strips stay wide in the figure


def test_dataset_tensors_are_h_by_w(trained):
    cfg = copy.deepcopy(trained[0])
    data = build_datasets(cfg, "tiles", 0)
    batch = data.train.collate([data.train[i] for i in range(4)])  # batched augmentation (default)
    assert tuple(batch["image"].shape) == (4, 3, *INPUT) and tuple(batch["mask"].shape) == (4, 1, *INPUT)
    cfg.data.batch_augment = False  # and the per-sample transforms
    assert tuple(build_datasets(cfg, "tiles", 0).train[0]["image"].shape) == (3, *INPUT)
    item = data.test[0]
    assert tuple(item["image"].shape) == (3, *INPUT)


def test_evaluate_reproduces_and_predict_gives_each_image_its_own_size(trained, strips, tmp_path, capsys):
    cfg, result, _, out = trained
    model = result.run_dir / "model.pt"
    assert main(["evaluate", str(model), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["image_auc"] == pytest.approx(result.metrics["image_auc"], abs=1e-6)
    assert metrics["pixel_auc"] == pytest.approx(result.metrics["pixel_auc"], abs=1e-6)
    det = Detector.load(model)
    files = [strips / "defect" / "d00.png", strips / "good" / "g00.png"]
    other = np.full((60, 90), 120, np.uint8)  # another size and aspect: resized to 40x100 too
    output = det.score([*files, other])
    assert [h.shape for h in output.heatmaps] == [(H, W), (H, W), (60, 90)]
    assert main(["predict", "--model", str(model), "--out", str(tmp_path / "pred"), str(files[0])]) == 0
    with open(tmp_path / "pred" / "scores.csv") as f:
        (row,) = list(csv.DictReader(f))
    with Image.open(tmp_path / "pred" / row["heatmap"]) as heat:  # the strip at its own size, legend below
        assert heat.width == max(W, LEGEND_MIN_WIDTH) and heat.height > H
        if W < LEGEND_MIN_WIDTH:  # the canvas beside the image is white from column W on
            assert heat.getpixel((W, H // 2)) == (255, 255, 255) != heat.getpixel((W - 1, H // 2))


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_export_scores_like_pytorch(trained, strips, tmp_path, fmt):
    pytest.importorskip("onnx")
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torch"}[fmt])
    from fcdd.backends import ExportedDetector
    from fcdd.export import META_FILE, export_detector

    det = Detector.load(trained[1].run_dir / "model.pt")
    export_detector(det, fmt, tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["input"]["shape"] == ["batch", 3, *INPUT] and meta["preprocess"]["input_size"] == INPUT
    files = [strips / "defect" / "d01.png", strips / "good" / "g01.png"]
    ref, got = det.score(files), ExportedDetector.load(tmp_path).score(files)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4)
    for a, b in zip(got.heatmaps, ref.heatmaps, strict=True):
        assert a.shape == (H, W)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_packed_training_takes_the_rectangle(strips, make_folder_config, tmp_path):
    """train_pack (the pipeline's batched runs) builds and trains [40, 100] nets; each run then
    evaluates from its checkpoint as a run of its own."""
    from fcdd.experiment import train_pack

    cfg = _cfg(make_folder_config, strips, tmp_path, f"model.input_size={INPUT}", "train.seeds=[0, 1]")
    dirs = train_pack(cfg, [("tiles", 0), ("tiles", 1)])
    for seed, run_dir in enumerate(dirs):
        result = experiment.run_experiment(cfg, "tiles", seed)
        assert result.run_dir == run_dir and [h["epoch"] for h in result.history] == [1]
        assert Detector.load(run_dir / "model.pt").model.output_size == (10, 25)


def test_served_pyfunc_scores_like_the_detector(trained, strips):
    pytest.importorskip("mlflow")
    from types import SimpleNamespace

    from pipelines import pyfunc

    model_path = trained[1].run_dir / "model.pt"
    served = pyfunc.FCDDPyfunc()
    served.load_context(
        SimpleNamespace(model_config={}, artifacts={pyfunc.DETECTOR_ARTIFACT: str(model_path)})
    )
    strip = np.asarray(Image.open(strips / "defect" / "d02.png"))
    out = served.predict(None, pyfunc.images_frame([strip]))
    ref = Detector.load(model_path).score([strip])
    assert (out["height"][0], out["width"][0]) == (H, W)
    np.testing.assert_allclose(out["score"].to_numpy(), ref.scores, rtol=1e-5)
    np.testing.assert_allclose(
        pyfunc.decode_heatmap(out["heatmap"][0]), ref.heatmaps[0], rtol=1e-5, atol=1e-7
    )
    example = pyfunc.example_input(INPUT, 3)  # the logged input example
    assert np.asarray(pyfunc.decode_image(example.iloc[0, 0], 10**6, 0)).shape[:2] == tuple(INPUT)


def test_squashing_resize_warns_once_and_keep_aspect_does_not(strips, make_folder_config, tmp_path):
    square = _cfg(make_folder_config, strips, tmp_path, "model.input_size=40")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_datasets(square, "tiles", 0)
    lines = [str(w.message) for w in caught if "aspect ratio" in str(w.message)]
    assert len(lines) == 1 and "50 of 50 images" in lines[0] and "\n" not in lines[0], lines
    assert tuple(data.test[0]["image"].shape) == (3, 40, 40)

    keep = _cfg(make_folder_config, strips, tmp_path, "model.input_size=40", "data.resize=keep_aspect")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_datasets(keep, "tiles", 0)
    assert not [w for w in caught if "aspect ratio" in str(w.message)]
    assert data.preprocess["input_size"] == INPUT  # short side 40, long side 40 * 2.5
    assert tuple(data.train.collate([data.train[0]])["image"].shape) == (1, 3, *INPUT)


def test_keep_aspect_over_images_of_several_shapes_does_not_advise_keep_aspect(
    strips, make_folder_config, tmp_path
):
    """Strips and squares in one folder: keep_aspect follows the strips' median, so the squares are
    still squashed; the warning says why instead of advising the setting already in use."""
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(strips, mixed)
    for i in range(6):
        Image.fromarray(np.full((H, H), 120, np.uint8)).save(mixed / "good" / f"square{i}.png")
    keep = _cfg(make_folder_config, mixed, tmp_path, "model.input_size=40", "data.resize=keep_aspect")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_datasets(keep, "tiles", 0)
    lines = [str(w.message) for w in caught if "aspect ratio" in str(w.message)]
    assert len(lines) == 1 and "6 of 56 images" in lines[0] and "square" in lines[0], lines
    assert "median" in lines[0] and "set model.input_size" not in lines[0], lines
    assert data.preprocess["input_size"] == INPUT  # the strips' shape still wins


def test_keep_aspect_trains_evaluates_and_saves_the_resolved_size(strips, make_folder_config, tmp_path):
    cfg = _cfg(make_folder_config, strips, tmp_path, "model.input_size=40", "data.resize=keep_aspect")
    result = experiment.run_experiment(cfg, "tiles", 0)
    det = Detector.load(result.run_dir / "model.pt")
    assert det.model.input_size == tuple(INPUT) and det.preprocess["input_size"] == INPUT
    assert [h.shape for h in det.score([strips / "good" / "g02.png"]).heatmaps] == [(H, W)]
    # evaluate rebuilds the split from the stored config: keep_aspect resolves to the same size again
    assert main(["evaluate", str(result.run_dir / "model.pt"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["image_auc"] == pytest.approx(result.metrics["image_auc"], abs=1e-6)


def test_test_transform_reads_old_int_and_new_rect_sizes():
    norm = {"kind": "none"}
    old = test_transform({"input_size": 28, "channels": 1, "resize": 28, "crop": None, "normalisation": norm})
    rect = test_transform(
        {
            "input_size": INPUT,
            "channels": 1,
            "resize": INPUT,
            "crop": None,
            "normalisation": norm,
            "stored": [44, 110],
        }
    )
    image = Image.fromarray(np.zeros((H, W), np.uint8))
    assert tuple(old(image).shape) == (1, 28, 28) and tuple(rect(image).shape) == (1, *INPUT)
    mask = np.zeros((H, W), bool)
    assert tuple(rect.mask(mask).shape) == (1, *INPUT)


def test_batch_augment_keeps_h_by_w():
    augment = BatchAugment(2, {"kind": "none"})
    x, m = augment(torch.zeros(3, 1, *INPUT, dtype=torch.uint8), torch.zeros(3, 1, *INPUT, dtype=torch.bool))
    assert tuple(x.shape) == (3, 1, *INPUT) and tuple(m.shape) == (3, 1, *INPUT)


@pytest.mark.parametrize("every_branch", [False, True])  # the CPU loop and the CUDA path (forced here)
def test_stored_batch_augment_crops_rectangles_and_masks_follow(monkeypatch, every_branch):
    from fcdd.data import stored_augment

    monkeypatch.setattr(stored_augment, "every_branch", lambda x: every_branch)
    n, (sh, sw) = 64, (44, 110)  # the stored copy of a [40, 100] input (stored_size 44)
    images = torch.zeros(n, 3, sh, sw, dtype=torch.uint8)
    masks = torch.zeros(n, 1, sh, sw, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        y, x = (
            torch.randint(0, sh - 12, (1,), generator=gen).item(),
            torch.randint(0, sw - 30, (1,), generator=gen).item(),
        )
        images[i, :, y : y + 12, x : x + 30] = 255
        masks[i, :, y : y + 12, x : x + 30] = True
    augment = dataset_spec("folder").batch_transform({"input_size": INPUT, "normalisation": {"kind": "none"}})
    torch.manual_seed(0)
    out, m = augment(images, masks)
    assert tuple(out.shape) == (n, 3, *INPUT) and tuple(m.shape) == (n, 1, *INPUT)
    inside = (out * m).sum((1, 2, 3)) / (3 * m.sum((1, 2, 3))).clamp_min(1)
    outside = (out * (1 - m)).sum((1, 2, 3)) / (3 * (1 - m).sum((1, 2, 3)))
    assert bool((m.sum((1, 2, 3)) > 0).all()) and float((inside - outside).min()) > 0.5


def test_resize_then_centre_crop_keeps_the_rectangle():
    """The crop geometry (ImageNet-30's resize-then-centre-crop) with an [H, W] crop: the short side
    goes to ``resize``, then the centre H x W."""
    pre = {"input_size": INPUT, "channels": 1, "resize": 46, "crop": INPUT, "normalisation": {"kind": "none"}}
    ramp = np.tile(np.linspace(0, 255, W, dtype=np.float32), (H, 1)).astype(np.uint8)
    x = test_transform(pre)(Image.fromarray(ramp))
    assert tuple(x.shape) == (1, *INPUT)
    # 80x200 -> 46x115, centre 100 columns: the ramp's middle, symmetric about 0.5
    assert float(x[0, :, 0].mean() + x[0, :, -1].mean()) == pytest.approx(1.0, abs=0.02)
    assert 0.02 < float(x[0, 0, 0]) < 0.1


def test_fixed_resize_leaves_old_fingerprints_alone(strips, make_folder_config, tmp_path):
    """data.resize is new: at its old behaviour (fixed) it is not hashed, so checkpoints written
    before it existed still resume; keep_aspect counts."""
    from fcdd.fingerprint import result_settings

    fixed = _cfg(make_folder_config, strips, tmp_path, "model.input_size=40")
    keep = _cfg(make_folder_config, strips, tmp_path, "model.input_size=40", "data.resize=keep_aspect")
    assert "data.resize" not in result_settings(fixed)
    assert result_settings(keep)["data.resize"] == "keep_aspect"
