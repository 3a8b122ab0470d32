"""Batched augmentation (fcdd.data.batch_augment): the per-sample path's distributions, masks that
move with the image, and batches that depend only on their seed."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from fcdd.config import Config
from fcdd.data import colour_jitter as jitter
from fcdd.data import dataset_spec
from fcdd.data.batch_augment import BatchAugment
from fcdd.data.colour_jitter import BatchColorJitter
from fcdd.data.training_set import TensorStore, TrainingSet
from fcdd.training import make_loader

NONE = {"kind": "none"}


def _colour_image(n: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_colour_ops_equal_torchvision_per_sample():
    x = _colour_image(4).float() / 255
    for k, f in enumerate([0.97, 1.0, 1.02, 0.99]):
        one = x[k : k + 1]
        fac = torch.full((1, 1, 1, 1), f)
        torch.testing.assert_close(
            jitter.brightness(one.clone(), fac), F.adjust_brightness(one, f), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(
            jitter.contrast(one.clone(), fac), F.adjust_contrast(one, f), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            jitter.saturation(one.clone(), fac), F.adjust_saturation(one, f), atol=1e-5, rtol=0
        )
    for shift in (-0.01, 0.0, 0.004, 0.3):
        torch.testing.assert_close(
            jitter.hue(x, torch.full((4,), shift)), F.adjust_hue(x, shift), atol=1e-4, rtol=0
        )


def _draws(fn, n: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.stack([fn() for _ in range(n)])


@pytest.mark.parametrize("dataset,channels,size", [("fmnist", 1, 28), ("cifar10", 3, 32)])
def test_batched_path_has_the_per_sample_distribution(dataset, channels, size):
    """The same image through both paths many times: per-pixel mean and spread agree (crop offsets,
    flips, jitter and noise drawn alike), where a wrong padding, flip rate or order would not."""
    image = _colour_image(1, size)[0, :channels]
    preprocess = {"input_size": size, "normalisation": NONE}
    per_sample = dataset_spec(dataset).train_transform(preprocess)
    batched = dataset_spec(dataset).batch_transform(preprocess)
    n = 3000
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    a = _draws(lambda: per_sample(image, mask)[0], n)
    torch.manual_seed(1)
    b = batched(image.expand(n, *image.shape).contiguous(), None)[0]
    assert a.shape == b.shape
    assert float((a.mean(0) - b.mean(0)).abs().max()) < 0.035  # per pixel, 3000 draws of values in [0, 1]
    assert float((a.std(0) - b.std(0)).abs().mean()) < 0.01
    # torchvision's colour ops on uint8 truncate after each of the four ops (the per-sample CIFAR-10
    # path's mean sits ~1.5/255 low); the batched path stays in float (see the jitter test below)
    assert float(a.mean()) == pytest.approx(float(b.mean()), abs=2e-3 if dataset == "fmnist" else 2 / 255)
    # the batched path really augments: draws differ from each other
    assert float(b.std(0).mean()) > 0.05


def test_crop_offsets_and_flips_are_uniform():
    n = 4000
    x = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # a marker in the top-left corner
    torch.manual_seed(0)
    out, _ = BatchAugment(2, NONE)(x)
    where = out.flatten(1).argmax(1)  # the marker lands at (row, col) or is cropped away
    visible = out.flatten(1).amax(1) > 0
    rows, cols = where // 8, where % 8
    # offsets top/left uniform in 0..4: the marker at row 2-top, visible when top <= 2 (3 of 5)
    assert float(visible.float().mean()) == pytest.approx(9 / 25, abs=0.03)
    assert set(rows[visible].tolist()) == {0, 1, 2}
    left_side = (cols[visible] <= 2).float().mean()  # flipped markers land on the right
    assert float(left_side) == pytest.approx(0.5, abs=0.05)


def test_masks_move_with_the_image():
    x = _colour_image(64, 16)
    masks = x[:, :1] > 128
    torch.manual_seed(3)
    out, m = BatchAugment(3, NONE)(x, masks)
    grey_out = out[:, :1]
    # the image without jitter is x/255 cropped: its >128/255 pixels are exactly the mask's ones
    assert torch.equal(m.bool(), grey_out > 128 / 255)
    assert m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}


def test_jitter_matches_torchvision_color_jitter_on_float_images():
    from torchvision.transforms import v2

    x = _colour_image(1)[0].float() / 255
    n = 2000
    reference = _draws(lambda: v2.ColorJitter(0.1, 0.1, 0.1, 0.05)(x), n)
    torch.manual_seed(1)
    ours = BatchColorJitter(0.1, 0.1, 0.1, 0.05)(x.expand(n, *x.shape).contiguous())
    assert float(reference.mean()) == pytest.approx(float(ours.mean()), abs=3e-3)  # ~5 standard errors
    assert float((reference.std(0) - ours.std(0)).abs().mean()) < 0.003
    assert float(ours.std(0).mean()) > 0.01


def test_jitter_draws_a_random_order_per_sample():
    jitter = BatchColorJitter(0.5, 0.5, 0.5, 0.2)
    x = _colour_image(256, 8).float() / 255
    torch.manual_seed(0)
    out = jitter(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, x)


class _Ones(TrainingSet):
    pass


def test_batches_depend_on_their_seed_only(tmp_path):
    """Through the engine's loader: 0 and 2 workers give the same augmented batches."""
    images = TensorStore(torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8).numpy())
    preprocess = {"input_size": 32, "normalisation": NONE}
    runs = []
    for workers in (0, 2):
        cfg = Config()
        cfg.data.num_workers, cfg.train.batch_size = workers, 8
        ts = TrainingSet(
            images,
            dataset_spec("cifar10").train_transform(preprocess),
            3,
            batch_transform=dataset_spec("cifar10").batch_transform(preprocess),
        )
        runs.append(
            [
                b["image"]
                for b in make_loader(ts, cfg, torch.device("cpu"), seed=5, keys=("image", "label", "mask"))
            ]
        )
    assert len(runs[0]) == 5
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
