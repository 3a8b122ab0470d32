"""Batch augmentation on the training device (data.augment_on): run here on the CPU as the "device",
it has the loader path's distributions, depends on the batch seed only, and resumes exactly."""

from __future__ import annotations

import pytest
import torch

from fcdd.config import Config, ConfigError, validate
from fcdd.data import dataset_spec
from fcdd.data.batch_augment import device_augment
from fcdd.data.training_set import TensorStore, TrainingSet
from fcdd.models import CNN28
from fcdd.objectives import fcdd_loss
from fcdd.training import CHECKPOINT, make_loader, train

NONE = {"kind": "none"}
CPU = torch.device("cpu")


def _set(dataset: str, n: int, same_image: bool = False) -> TrainingSet:
    channels, size = (1, 28) if dataset == "fmnist" else (3, 32)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(
        0, 256, (1 if same_image else n, size, size, channels), dtype=torch.uint8, generator=gen
    )
    preprocess = {"input_size": size, "normalisation": NONE}
    return TrainingSet(
        TensorStore(raw.expand(n, -1, -1, -1).contiguous().squeeze(-1).numpy()),
        dataset_spec(dataset).train_transform(preprocess),
        channels,
        batch_transform=dataset_spec(dataset).batch_transform(preprocess),
    )


def _cfg(augment_on: str, workers: int = 0, batch: int = 64) -> Config:
    cfg = Config()
    cfg.data.num_workers, cfg.data.augment_on, cfg.train.batch_size = workers, augment_on, batch
    return cfg


def _images(ts: TrainingSet, cfg: Config) -> list[torch.Tensor]:
    keys = ("image", "label", "mask")
    aug = device_augment(ts, cfg.data.augment_on, CPU)
    return [(b if aug is None else aug(b))["image"] for b in make_loader(ts, cfg, CPU, seed=5, keys=keys)]


def test_augment_on_is_validated():
    cfg = Config()
    cfg.data.augment_on = "gpu"
    with pytest.raises(ConfigError, match="data.augment_on: 'gpu' is not one of auto, loader, device"):
        validate(cfg)


@pytest.mark.parametrize("dataset", ["fmnist", "cifar10"])
def test_device_path_has_the_loader_paths_statistics(dataset):
    """One image 1024 times through both paths: per-pixel mean and spread agree (crop, flip, jitter,
    noise drawn alike), while the streams differ (the device path draws from its own generator)."""
    ts = _set(dataset, 1024, same_image=True)
    loader = torch.cat(_images(ts, _cfg("loader")))
    device = torch.cat(_images(ts, _cfg("device")))
    assert device.dtype == torch.float32 and device.shape == loader.shape
    assert not torch.equal(device, loader)
    assert (device.mean(0) - loader.mean(0)).abs().max() < 0.08
    assert (device.std(0) - loader.std(0)).abs().max() < 0.08
    assert abs(float(device.mean() - loader.mean())) < 0.005


def test_device_path_depends_on_the_batch_seed_only():
    ts = _set("cifar10", 40)
    zero, two = _images(ts, _cfg("device", 0, 8)), _images(ts, _cfg("device", 2, 8))
    assert len(zero) == 5
    for a, b in zip(zero, two, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_device_path_resumes_exactly(tmp_path):
    class Stop(Exception):
        pass

    class StopAfterFirst:
        def on_epoch_end(self, epoch, logs):
            raise Stop

    def run(folder, callbacks=None):
        torch.manual_seed(1)
        model = CNN28(in_channels=1, input_size=28, width=4)
        cfg = _cfg("device", 0, 8)
        cfg.train.epochs, cfg.train.progress, cfg.train.amp, cfg.train.threads = 2, False, False, None
        train(model, _set("fmnist", 20), cfg, "cpu", tmp_path / folder, callbacks=callbacks)
        return model

    whole = run("whole")
    with pytest.raises(Stop):
        run("cut", StopAfterFirst())
    assert (tmp_path / "cut" / CHECKPOINT).exists()
    resumed = run("cut")
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA sync debug mode needs a GPU")
@pytest.mark.parametrize("dataset", ["fmnist", "cifar10"])
def test_training_step_does_not_sync_on_cuda(dataset):
    """Augmentation, forward, loss, backward and optimiser step raise nothing under sync_debug_mode 'error'."""
    cuda = torch.device("cuda")
    ts = _set(dataset, 16)
    batch = next(iter(make_loader(ts, _cfg("device", 0, 16), cuda, seed=0, keys=("image", "label"))))
    batch = {k: v.pin_memory() for k, v in batch.items()}
    model = CNN28(in_channels=ts.channels, input_size=batch["image"].shape[-1], width=4).to(cuda)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    aug = device_augment(ts, "auto", cuda)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        b = aug(dict(batch))
        loss = fcdd_loss(model(b["image"]), b["label"].to(cuda, non_blocking=True))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
