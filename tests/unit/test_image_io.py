"""One image loader: 16-bit, 32-bit and float images reach datasets, predict and the served model
at the right 8-bit intensities (Pillow's own conversion turns a 16-bit PNG white)."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_fixtures import tiny_detector

from fcdd.cli import main
from fcdd.config import Config
from fcdd.data import DataError, build_datasets, image_io
from fcdd.data.image_io import array_to_8bit, read_image
from fcdd.data.transforms import to_mode
from fcdd.detector import DetectorError, to_pil

torch.set_num_threads(1)
GREY = np.array([[0, 64], [128, 255]], dtype=np.uint8)  # the 8-bit truth of every test image


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_high_bit_depth_files_scale_to_8_bit(tmp_path):
    sixteen = GREY.astype(np.uint16) * 257
    cases = {
        "i16.png": (sixteen, GREY),
        "i16.tif": (sixteen, GREY),
        "i16b.tif": (sixteen.astype(">u2"), GREY),
        "f01.tif": (GREY.astype(np.float32) / 255, GREY),  # floats in [0, 1]: x 255
        "f255.tif": (GREY.astype(np.float32), GREY),  # floats in [0, 255]: 8-bit values
        "fneg.tif": (GREY.astype(np.float32) / 255 * 4 - 1, GREY),  # [-1, 3]: min-max
        "i32.tif": (GREY.astype(np.int32) * 1000, GREY),  # [0, 255000]: min-max
        "i32_16.tif": (sixteen.astype(np.int32), GREY),  # mode I within 16 bits: / 257
    }
    for name, (array, expected) in cases.items():
        path = write(tmp_path / name, array)
        with Image.open(path) as raw:
            assert raw.mode not in ("L", "RGB"), name  # really a high-bit-depth file
        im = read_image(path)
        assert im.mode == "L", name
        np.testing.assert_array_equal(np.asarray(im), expected, err_msg=name)


def test_colour_palette_alpha_and_bilevel_images(tmp_path):
    rgba = np.dstack([np.full((2, 2, 3), 90, np.uint8), np.zeros((2, 2), np.uint8)])
    assert np.asarray(read_image(write(tmp_path / "a.png", rgba))).tolist() == [[[90] * 3] * 2] * 2
    pal = Image.fromarray(np.full((3, 3, 3), 200, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.png")
    im = read_image(tmp_path / "p.png")
    assert im.mode == "RGB" and np.asarray(im).min() == 200
    Image.fromarray(GREY > 100).save(tmp_path / "b.png")  # mode "1"
    assert np.asarray(read_image(tmp_path / "b.png")).tolist() == [[0, 0], [255, 255]]
    la = Image.fromarray(np.full((2, 2), 33, np.uint8)).convert("LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(read_image(tmp_path / "la.png")).tolist() == [[33, 33], [33, 33]]


def test_arrays_and_pil_images_follow_the_same_rules():
    sixteen = GREY.astype(np.uint16) * 257
    np.testing.assert_array_equal(array_to_8bit(sixteen), GREY)
    np.testing.assert_array_equal(array_to_8bit(GREY.astype(np.float64) / 255), GREY)
    np.testing.assert_array_equal(array_to_8bit(GREY.astype(np.int64)), GREY)
    assert array_to_8bit(np.array([[np.nan, 1.0]])).tolist() == [[0, 255]]
    np.testing.assert_array_equal(np.asarray(to_pil(sixteen)), GREY)
    np.testing.assert_array_equal(np.asarray(to_mode(Image.fromarray(sixteen), 1)), GREY)
    np.testing.assert_array_equal(np.asarray(to_mode(Image.fromarray(sixteen), 3))[..., 1], GREY)
    with pytest.raises(DetectorError, match="expected real numbers"):
        to_pil(np.array([["a", "b"]]))


def test_over_size_and_broken_files_name_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "big.png", np.zeros((20, 30), np.uint8))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 500)
    with pytest.raises(
        DataError, match=r"^\S*big.png: image of 30x20 pixels exceeds the limit of 500 pixels$"
    ):
        read_image(path)
    with pytest.raises(DetectorError, match="big.png: image of 30x20"):
        to_pil(path)
    (tmp_path / "cut.png").write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"cut.png: not a readable image \(unreadable or truncated") as err:
        read_image(tmp_path / "cut.png")
    assert "\n" not in str(err.value)


def _folder_cfg(tmp_path: Path, root: Path) -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.cache_dir = "folder", str(root), str(tmp_path / "cache")
    cfg.model.input_size, cfg.data.stored_size = 28, 30
    cfg.anomalies.kind = "none"
    cfg.data.folder.nominal, cfg.data.folder.anomalous = ["ok"], []
    cfg.data.folder.test_ratio = 0.3
    return cfg


def test_folder_training_items_see_16_bit_intensities(tmp_path):
    root = tmp_path / "sixteen"
    eight = np.tile(np.arange(30, dtype=np.uint8) * 8, (30, 1))  # a ramp 0..232, stored size: no resize
    for i in range(4):
        write(root / "ok" / f"n{i}.png", eight.astype(np.uint16) * 257)
    bundle = build_datasets(_folder_cfg(tmp_path, root), "folder", 0)
    pixels = bundle.train.images.uint8(0).numpy()
    assert pixels.shape == (3, 30, 30)
    np.testing.assert_array_equal(pixels[1], eight)  # not all 255


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    """The same picture as an 8-bit and as a 16-bit PNG."""
    rng = np.random.default_rng(0)
    eight = rng.integers(40, 160, (40, 36), dtype=np.uint8)  # not the full range: no stretching allowed
    return write(tmp_path / "in" / "eight.png", eight), write(
        tmp_path / "in" / "sixteen.png", eight.astype(np.uint16) * 257
    )


def test_predict_scores_a_16_bit_png_like_its_8_bit_twin(tmp_path, capsys):
    model = tiny_detector().save(tmp_path / "model.pt")
    _pair(tmp_path)
    out = tmp_path / "pred"
    assert (
        main(["predict", "--model", str(model), "--out", str(out), "--device", "cpu", str(tmp_path / "in")])
        == 0
    )
    with open(out / "scores.csv") as f:
        scores = {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader(f)}
    assert scores["sixteen.png"] == pytest.approx(scores["eight.png"], rel=1e-6)
    white = tiny_detector().score([np.full((40, 36), 255, np.uint8)]).scores[0]
    assert scores["sixteen.png"] != pytest.approx(white, rel=1e-3)


def test_served_model_scores_16_bit_bytes_like_8_bit(tmp_path):
    pyfunc = pytest.importorskip("pipelines.pyfunc")
    model = pyfunc.FCDDPyfunc()
    model.detector, model.max_pixels = tiny_detector(), pyfunc.DEFAULT_MAX_PIXELS
    model.max_request_pixels = pyfunc.DEFAULT_MAX_REQUEST_PIXELS
    eight, sixteen = _pair(tmp_path)
    frame = pyfunc.pd.DataFrame(
        {"image": [base64.b64encode(p.read_bytes()).decode() for p in (eight, sixteen)]}
    )
    out = model.predict(None, frame, params={"heatmap_format": "none"})
    assert out["score"][1] == pytest.approx(out["score"][0], rel=1e-6)
