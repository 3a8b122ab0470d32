"""One rule for what is an image (the CLI, the served model, the page and datasets read the same
files) and PNGs whose pixel data ends early are refused instead of being read with black rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from edge_files import png_bytes
from PIL import Image

from fcdd.data import image_io
from fcdd.data.image_io import read_image
from fcdd.errors import DataError


def test_a_png_with_missing_rows_is_refused_not_read_black(tmp_path):
    a = np.random.default_rng(0).integers(1, 256, (60, 40), dtype=np.uint8)
    whole = tmp_path / "whole.png"
    whole.write_bytes(png_bytes(a))
    np.testing.assert_array_equal(np.asarray(read_image(whole)), a)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png_bytes(a, rows=30))
    with Image.open(cut) as im:  # what Pillow alone does: no error, the lower half black
        im.load()
        assert not np.asarray(im)[30:].any()
    with pytest.raises(DataError, match=r"cut.png: not a readable image \(truncated: .* 50 % missing") as err:
        read_image(cut)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="truncated"):  # bytes, as the served model and the page pass them
        read_image(cut.read_bytes(), "upload.png")
    inter = png_bytes(a, rows=50, interlace=True)
    with pytest.raises(DataError, match="truncated"):
        read_image(inter, "interlaced.png")
    np.testing.assert_array_equal(np.asarray(read_image(png_bytes(a, interlace=True))), a)


def test_black_images_are_not_mistaken_for_truncated_ones(tmp_path):
    for name, array in {
        "black.png": np.zeros((50, 30), np.uint8),
        "black16.png": np.zeros((20, 30), np.uint16),
        "black_rgb.png": np.zeros((20, 30, 3), np.uint8),
        "black_bottom.png": np.vstack([np.full((10, 30), 9, np.uint8), np.zeros((10, 30), np.uint8)]),
    }.items():
        Image.fromarray(array).save(tmp_path / name)
        assert read_image(tmp_path / name).size == (30, array.shape[0]), name


def test_one_list_of_image_files_and_formats(tmp_path):
    assert ".gif" in image_io.IMAGE_EXTENSIONS
    assert image_io.is_image_file("A.GIF") and not image_io.is_image_file("a.eps")
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "a.gif")
    assert np.asarray(read_image(tmp_path / "a.gif")).max() == 77
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="EPS")  # Pillow opens it via Ghostscript
    with pytest.raises(DataError, match="not one of PNG, JPEG"):
        read_image(buf.getvalue(), "x.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match=r"dir.png: a folder, not an image file"):
        read_image(tmp_path / "dir.png")


def test_datasets_and_outlier_exposure_use_the_same_list():
    from fcdd.data import files, outlier_exposure
    from fcdd.data.datasets import folder

    assert folder.is_image_file is image_io.is_image_file and files.is_image_file is image_io.is_image_file
    assert outlier_exposure.IMAGE_EXTENSIONS is image_io.IMAGE_EXTENSIONS
    assert Path("x.webp").suffix in image_io.IMAGE_EXTENSIONS
