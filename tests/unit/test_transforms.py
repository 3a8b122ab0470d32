"""Preprocessing: the test transform, normalisation statistics, joint image+mask augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd.data import dataset_spec
from fcdd.data.normalisation import cached_stats, gcn, gcn_minmax_stats, meanstd_stats, normalise
from fcdd.data.transforms import pil_to_uint8, test_transform, to_mode
from fcdd.errors import DataError

torch.set_num_threads(1)
NONE = {"kind": "none"}


def preprocess(size: int, channels: int, resize=None, crop=None, normalisation=NONE) -> dict:
    return {
        "input_size": size,
        "channels": channels,
        "resize": resize,
        "crop": crop,
        "normalisation": normalisation,
    }


def test_gcn_gives_zero_mean_and_unit_mean_absolute_value_per_sample():
    x = torch.rand(4, 3, 8, 8) * torch.arange(1, 5).view(4, 1, 1, 1)
    g = gcn(x)
    assert torch.allclose(g.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(g.abs().mean(dim=(1, 2, 3)), torch.ones(4), atol=1e-5)
    assert torch.isfinite(gcn(torch.ones(1, 8, 8))).all()  # constant image: no NaN


def test_statistics_over_batches_equal_those_of_the_whole_data():
    x = torch.rand(10, 3, 5, 5)
    mm = gcn_minmax_stats([x[:4], x[4:]])
    assert mm["min"] == pytest.approx(gcn(x).min().item()) and mm["max"] == pytest.approx(gcn(x).max().item())
    ms = meanstd_stats([x[:3], x[3:]])
    assert ms["mean"] == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert ms["std"] == pytest.approx(
        x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False).tolist(), abs=1e-5
    )
    with pytest.raises(DataError, match="no nominal training images"):
        meanstd_stats([])


def test_minmax_scaling_maps_the_training_data_into_unit_interval():
    x = torch.rand(6, 1, 7, 7)
    stats = gcn_minmax_stats([x])
    y = normalise(x, stats)
    assert y.min().item() == pytest.approx(0.0, abs=1e-6) and y.max().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(DataError, match="not one of"):
        normalise(x, {"kind": "zscore"})


def test_cached_stats_are_computed_once_and_a_damaged_cache_is_rebuilt(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"kind": "gcn-minmax", "min": -1.0, "max": float(len(calls))}

    assert cached_stats(tmp_path, "fmnist|bag|/x", compute)["max"] == 1.0
    assert cached_stats(tmp_path, "fmnist|bag|/x", compute)["max"] == 1.0
    assert len(calls) == 1
    assert "fmnist|bag|/x" in json.loads((tmp_path / "normalisation.json").read_text())
    (tmp_path / "normalisation.json").write_text("{broken")
    assert cached_stats(tmp_path, "fmnist|bag|/x", compute)["max"] == 2.0


def test_test_transform_accepts_any_size_and_mode():
    t = test_transform(preprocess(28, 1))
    for image in (
        Image.new("RGB", (50, 31), (200, 10, 10)),
        Image.new("RGBA", (28, 28)),
        Image.new("P", (9, 9)),
    ):
        assert t(image).shape == (1, 28, 28)
    crop = test_transform(preprocess(224, 3, resize=256, crop=224))
    assert crop(Image.new("L", (400, 300))).shape == (3, 224, 224)
    sixteen = Image.fromarray(np.array([[0, 1000], [30000, 65535]], dtype=np.uint16))
    assert np.asarray(to_mode(sixteen, 1)).tolist() == [[0, 4], [117, 255]]  # v / 257, rounded


def test_test_transform_of_a_pil_image_equals_the_in_memory_tensor_path():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    norm = {"kind": "meanstd", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    t = test_transform(preprocess(32, 3, normalisation=norm))
    via_pil = t(Image.fromarray(array))
    via_tensor = t.from_uint8(torch.from_numpy(array).permute(2, 0, 1))
    assert torch.equal(via_pil, via_tensor)
    expected = (torch.from_numpy(array[:, :, 1]).float() / 255 - 0.4) / 0.25
    assert torch.allclose(via_pil[1], expected, atol=1e-6)


def test_test_transform_rejects_incomplete_preprocess():
    with pytest.raises(DataError, match="lacks normalisation"):
        test_transform({"input_size": 28, "channels": 1, "resize": None, "crop": None})
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        test_transform(preprocess(28, 2))


def square_image(size: int, channels: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A dark noisy image with one bright square and the mask of that square."""
    side = size // 4
    y, x = rng.integers(0, size - side, 2)
    image = rng.integers(0, 40, (channels, size, size), dtype=np.uint8)
    image[:, y : y + side, x : x + side] = 230
    mask = np.zeros((1, size, size), dtype=bool)
    mask[:, y : y + side, x : x + side] = True
    return torch.from_numpy(image), torch.from_numpy(mask)


@pytest.mark.parametrize(
    "dataset, size, channels, stored, min_iou",
    [
        ("fmnist", 28, 1, 28, 1.0),
        ("cifar10", 32, 3, 32, 0.99),
        ("mvtec", 56, 3, 60, 0.9),
        ("folder", 56, 3, 60, 0.9),
    ],
)
def test_joint_train_transform_keeps_the_mask_on_the_bright_square(dataset, size, channels, stored, min_iou):
    t = dataset_spec(dataset).train_transform(preprocess(size, channels), stored_size=stored)
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    moved = 0
    for _ in range(30):
        image, mask = square_image(stored, channels, rng)
        x, m = t(image, mask)
        assert x.shape == (channels, size, size) and m.shape == (1, size, size) and x.dtype == torch.float32
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        bright = x.mean(dim=0) > 0.5
        if m.sum() == 0:  # the square was cropped away: the image shows none of it either
            assert bright.sum() <= 2
            continue
        inter, union = (bright & (m[0] > 0)).sum().item(), (bright | (m[0] > 0)).sum().item()
        assert inter / union >= min_iou
        moved += not torch.equal(m[0].bool(), mask[0, :size, :size])
    assert moved > 0  # the augmentation did move the mask


def test_imagenet_train_transform_output_size():
    t = dataset_spec("imagenet30").train_transform(preprocess(64, 3, resize=73, crop=64))
    image, mask = square_image(90, 3, np.random.default_rng(2))
    x, m = t(image, mask)
    assert x.shape == (3, 64, 64) and m.shape == (1, 64, 64)


def test_train_transform_is_deterministic_given_the_torch_seed():
    t = dataset_spec("mvtec").train_transform(preprocess(56, 3), stored_size=60)
    image, mask = square_image(60, 3, np.random.default_rng(3))
    torch.manual_seed(5)
    a = [t(image, mask) for _ in range(3)]
    torch.manual_seed(5)
    b = [t(image, mask) for _ in range(3)]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], a[1][0])


def test_unknown_dataset_has_no_train_transform():
    with pytest.raises(DataError, match=r"data.dataset 'svhn' is not one of .*fmnist"):
        dataset_spec("svhn").train_transform(preprocess(32, 3))


def test_pil_to_uint8_channels():
    assert pil_to_uint8(Image.new("RGB", (5, 4)), 1).shape == (1, 4, 5)
    assert pil_to_uint8(Image.new("L", (5, 4)), 3).shape == (3, 4, 5)
