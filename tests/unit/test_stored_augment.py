"""Batched MVTec/folder augmentation (fcdd.data.stored_augment): the per-sample path's distributions,
masks that move with the image, batches that depend only on their seed, and the real data path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fcdd.config import load_config
from fcdd.data import build_datasets, dataset_spec
from fcdd.data.anomalies import Confetti
from fcdd.data.datasets.mvtec import STORED_AUGMENT as MVTEC_AUGMENT
from fcdd.data.stored_augment import StoredBatchAugment
from fcdd.data.training_set import TensorStore, TrainingSet
from fcdd.training import make_loader

NONE = {"kind": "none"}
REPO = Path(__file__).resolve().parents[2]
HAZELNUT = REPO / ".." / "shared" / "data" / "hazelnut_toy"
PARAMS = REPO / "params.yaml"


def _image(size: int, seed: int = 0) -> torch.Tensor:
    """A smooth colour image (blocks of 4 px), so resizing and cropping change pixel statistics."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (3, size // 4 + 1, size // 4 + 1), dtype=torch.uint8, generator=gen)
    return small.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :size, :size].contiguous()


@pytest.mark.parametrize("stored,size", [(34, 32), (40, 32)])  # crop straight away / resize to 34 first
def test_batched_path_has_the_per_sample_distribution(stored, size):
    """The same image 2000 times through both paths: per-pixel mean and spread agree (crop vs resize
    choice, offsets, jitter choice and factors, noise coin and scale drawn alike)."""
    image = _image(stored)
    preprocess = {"input_size": size, "normalisation": NONE}
    per_sample = dataset_spec("mvtec").train_transform(preprocess, stored)
    batched = dataset_spec("mvtec").batch_transform(preprocess)
    assert isinstance(batched, StoredBatchAugment)
    n = 2000
    mask = torch.zeros(1, stored, stored, dtype=torch.bool)
    torch.manual_seed(0)
    a = torch.stack([per_sample(image, mask)[0] for _ in range(n)])
    torch.manual_seed(1)
    b, m = batched(image.expand(n, -1, -1, -1).contiguous(), mask.expand(n, -1, -1, -1).contiguous())
    assert a.shape == b.shape == (n, 3, size, size) and m.shape == (n, 1, size, size)
    assert float((a.mean(0) - b.mean(0)).abs().max()) < 0.03  # per pixel, std of a draw ~0.1-0.3
    assert float((a.std(0) - b.std(0)).abs().mean()) < 0.01
    assert float(a.mean()) == pytest.approx(float(b.mean()), abs=2 / 255)  # torchvision truncates uint8
    # noise: half the draws are noisy, so the spread of a pixel's draws over its neighbours is wide
    noisy_a = (a - a.mean(0)).abs().flatten(1).mean(1)
    noisy_b = (b - b.mean(0)).abs().flatten(1).mean(1)
    assert float(noisy_a.median()) == pytest.approx(float(noisy_b.median()), rel=0.1)
    assert not m.any()


def test_all_branches_path_has_the_per_image_distribution(monkeypatch):
    """The CUDA form (every branch on the whole batch, torch.where keeps the drawn one) run on the
    CPU: the same statistics as the CPU's image-by-image form, and the same masks for the same draws."""
    import fcdd.data.stored_augment as sa

    image, n = _image(34), 1500
    images = image.expand(n, -1, -1, -1).contiguous()
    masks = (images[:, :1] > 128).contiguous()
    augment = StoredBatchAugment(32, NONE, MVTEC_AUGMENT)
    torch.manual_seed(0)
    a, ma = augment(images, masks)
    monkeypatch.setattr(sa, "every_branch", lambda x: True)
    torch.manual_seed(0)
    b, mb = augment(images, masks)
    assert torch.equal(ma, mb)  # geometry draws come first and alike: identical crops and resizes
    assert float((a.mean(0) - b.mean(0)).abs().max()) < 0.03
    assert float((a.std(0) - b.std(0)).abs().mean()) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA sync debug mode needs a GPU")
def test_device_augmentation_does_not_sync_on_cuda():
    cuda = torch.device("cuda")
    images = torch.randint(0, 256, (8, 3, 240, 240), dtype=torch.uint8).to(cuda)
    masks = torch.zeros(8, 1, 240, 240, dtype=torch.bool, device=cuda)
    generator = torch.Generator(device=cuda).manual_seed(0)
    augment = StoredBatchAugment(224, {"kind": "gcn-minmax", "min": -1.0, "max": 2.0}, MVTEC_AUGMENT)
    augment(images, masks, generator)  # warm-up: first calls may allocate and load kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, m = augment(images, masks, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.shape == (8, 3, 224, 224) and m.shape == (8, 1, 224, 224) and x.is_cuda


def test_masks_move_with_the_image():
    """A bright square on black, its mask on the square: after crop/resize, jitter and noise the
    mask still covers the bright pixels in every sample (and both geometry branches occur)."""
    n, stored, size = 200, 40, 32
    images = torch.zeros(n, 3, stored, stored, dtype=torch.uint8)
    masks = torch.zeros(n, 1, stored, stored, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for i, (y, x) in enumerate(torch.randint(0, stored - 12, (n, 2), generator=gen).tolist()):
        images[i, :, y : y + 12, x : x + 12] = 255
        masks[i, :, y : y + 12, x : x + 12] = True
    torch.manual_seed(0)
    out, m = StoredBatchAugment(size, NONE, MVTEC_AUGMENT)(images, masks)
    assert m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}
    inside = (out * m).sum((1, 2, 3)) / (3 * m.sum((1, 2, 3))).clamp_min(1)
    outside = (out * (1 - m)).sum((1, 2, 3)) / (3 * (1 - m).sum((1, 2, 3)))
    visible = m.sum((1, 2, 3)) > 0
    assert bool(visible.all())
    assert float((inside - outside).min()) > 0.5


def test_crop_or_resize_is_drawn_per_image_with_probability_one_half():
    """A 1-px checkerboard mask stays a perfect checkerboard under a crop (34 -> 32) and breaks under
    the resize (two of 34 rows and columns dropped)."""
    n, stored, size = 400, 34, 32
    board = (torch.arange(stored)[:, None] + torch.arange(stored)[None, :]) % 2 == 1
    masks = board.expand(n, 1, stored, stored).contiguous()
    images = torch.full((n, 3, stored, stored), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    _, m = StoredBatchAugment(size, NONE, MVTEC_AUGMENT)(images, masks)
    rows_alternate = (m[..., 1:, :] != m[..., :-1, :]).flatten(1).all(1)
    cols_alternate = (m[..., :, 1:] != m[..., :, :-1]).flatten(1).all(1)
    cropped = rows_alternate & cols_alternate
    assert float(cropped.float().mean()) == pytest.approx(0.5, abs=0.08)
    # crop offsets uniform in 0..2: the top-left cell is (top + left) odd with probability 4/9
    odd = m[cropped, 0, 0, 0]
    assert float(odd.mean()) == pytest.approx(4 / 9, abs=0.1)


def _confetti_set(n: int) -> TrainingSet:
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (n, 40, 40, 3), dtype=torch.uint8, generator=gen)
    preprocess = {"input_size": 32, "normalisation": NONE}
    return TrainingSet(
        TensorStore(raw.numpy()),
        dataset_spec("mvtec").train_transform(preprocess, 40),
        3,
        source=Confetti("changed"),
        probability=0.5,
        batch_transform=dataset_spec("mvtec").batch_transform(preprocess),
    )


def test_batches_depend_on_their_seed_only():
    """Through the engine's loader with confetti injection: 0 and 2 workers, and a second pass with
    the same seed, give the same images and masks bit for bit (what exact resume relies on)."""
    ts = _confetti_set(20)
    runs = []
    for workers in (0, 2, 0):
        cfg = load_config(None, [f"data.num_workers={workers}", "train.batch_size=8"])
        keys = ("image", "label", "mask")
        runs.append([b for b in make_loader(ts, cfg, torch.device("cpu"), seed=5, keys=keys)])
    assert len(runs[0]) == 3
    assert any(bool(b["label"].any()) for b in runs[0])
    for batches in runs[1:]:
        for a, b in zip(runs[0], batches, strict=True):
            for key in ("image", "label", "mask"):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.skipif(not HAZELNUT.is_dir(), reason="needs ../shared/data/hazelnut_toy")
def test_real_data_path_uses_the_batched_augmentation(tmp_path):
    overrides = [
        "data.dataset=mvtec",
        f"data.root={HAZELNUT}",
        f"data.cache_dir={tmp_path}",
        "data.train_limit=4",
        "data.test_limit=4",
        "tracking.enabled=false",
        "evaluation.calibration=0",
        "train.batch_size=4",
    ]
    cfg = load_config(PARAMS, overrides, preset=["mvtec"])
    bundle = build_datasets(cfg, "hazelnut", seed=0)
    assert isinstance(bundle.train.batch_transform, StoredBatchAugment)
    batch = next(iter(make_loader(bundle.train, cfg, torch.device("cpu"), 0, ("image", "label", "mask"))))
    assert batch["image"].shape == (4, 3, 224, 224) and batch["mask"].shape == (4, 1, 224, 224)
    off_cfg = load_config(PARAMS, [*overrides, "data.batch_augment=false"], preset=["mvtec"])
    off = build_datasets(off_cfg, "hazelnut", seed=0)
    assert off.train.batch_transform is None
