"""The training loop: learning a toy problem, exact resume, schedules, accumulation, errors."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import Dataset

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import Config
from fcdd.models import CNN28
from fcdd.scoring import anomaly_scores
from fcdd.training import CHECKPOINT, TIMING_KEYS, TrainingError, choose_loss, resolve_device, train

torch.set_num_threads(1)


class SquaresOnNoise(Dataset):
    """Noise images; with probability ``p_anomaly`` a bright square (label 1, mask on the square).
    Noise and square position are drawn per item from the global RNG, like an augmenting dataset,
    or, with ``fixed``, from the item's index (the same item every epoch and in every batch)."""

    def __init__(
        self, n: int, size: int = 16, p_anomaly: float = 0.5, nan_at: int | None = None, fixed=False
    ):
        self.n, self.size, self.p, self.nan_at, self.fixed = n, size, p_anomaly, nan_at, fixed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        s = self.size
        rng = torch.Generator().manual_seed(index) if self.fixed else None
        image = torch.randn(1, s, s, generator=rng) * 0.5
        mask = torch.zeros(1, s, s)
        label = int(torch.rand((), generator=rng) < self.p)
        if label:
            y, x = torch.randint(0, s - 5, (2,), generator=rng).tolist()
            image[:, y : y + 5, x : x + 5] += 3.0
            mask[:, y : y + 5, x : x + 5] = 1.0
        if index == self.nan_at:
            image[0, 0, 0] = math.nan
        return {"image": image, "label": torch.tensor(label), "mask": mask, "index": index}


def tiny_cfg(**train) -> Config:
    cfg = Config()
    cfg.data.num_workers = 0
    cfg.model.net, cfg.model.input_size = "cnn28", 16
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.optimizer, t.progress, t.threads = 2, 8, 0.01, "sgd", False, None
    t.seeds = [3]
    t.amp = (
        False  # fp32: the equivalence tests compare float results closely (the fast path has its own test)
    )
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def tiny_model(seed: int = 0) -> CNN28:
    torch.manual_seed(seed)
    return CNN28(in_channels=1, input_size=16, width=4)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "dataset, kind, expected",
    [
        ("fmnist", "oe", "image"),
        ("cifar10", "confetti", "image"),
        ("imagenet30", "oe", "image"),
        ("mvtec", "confetti", "pixel"),  # the reference: all-ones maps for synthetic anomalies
        ("mvtec", "semi", "pixel"),
        ("folder", "confetti", "pixel"),
        ("folder", "oe", "pixel"),
        ("mvtec", "none", "image"),
    ],
)
def test_auto_loss_is_pixel_wise_when_training_data_carry_maps(dataset, kind, expected):
    cfg = Config()
    cfg.data.dataset, cfg.anomalies.kind = dataset, kind
    assert choose_loss(cfg) == expected


def test_loss_stays_selectable():
    cfg = Config()
    cfg.data.dataset, cfg.anomalies.kind = "mvtec", "confetti"
    cfg.train.loss = "image"
    assert choose_loss(cfg) == "image"
    cfg.data.dataset, cfg.train.loss = "fmnist", "pixel"
    assert choose_loss(cfg) == "pixel"


def _image_auc(model: nn.Module, items: list[dict]) -> float:
    with torch.no_grad():
        scores = anomaly_scores(model.eval()(torch.stack([t["image"] for t in items]))).image
    return roc_auc_score([int(t["label"]) for t in items], scores.numpy())


def test_learns_bright_squares_on_noise(tmp_path):
    test = [SquaresOnNoise(200)[i] for i in range(200)]
    model = tiny_model(seed=1)  # an init that ranks the squares as the most nominal (AUC ~ 0.05)
    before = _image_auc(model, test)
    cfg = tiny_cfg(epochs=4, batch_size=16, lr=0.01, optimizer="adam", scheduler="none")
    result = train(model, SquaresOnNoise(256), cfg, "cpu", tmp_path)
    assert len(result["history"]) == 4
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    after = _image_auc(model, test)
    assert after > 0.9 and after > before, (before, after)


class Interrupt(Exception):
    pass


class StopAfter:
    def __init__(self, epoch: int):
        self.epoch, self.seen = epoch, []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.seen.append((epoch, logs))
        if epoch == self.epoch:
            raise Interrupt


@pytest.mark.parametrize(
    "train_cfg",
    [
        {"optimizer": "sgd", "scheduler": "lambda", "gamma": 0.5, "accumulate": 3},
        {"optimizer": "adam", "scheduler": "milestones", "milestones": [2], "gamma": 0.1, "epoch_repeats": 2},
    ],
)
def test_resume_after_interruption_equals_uninterrupted(tmp_path, train_cfg):
    cfg = tiny_cfg(epochs=3, **train_cfg)
    data = SquaresOnNoise(20)  # 20 / 8: a short last batch, and a short accumulation group
    whole = tiny_model()
    expected = train(whole, data, cfg, "cpu", tmp_path / "whole")

    stopper = StopAfter(epoch=1)
    with pytest.raises(Interrupt):
        train(tiny_model(), data, cfg, "cpu", tmp_path / "cut", callbacks=stopper)
    assert (tmp_path / "cut" / CHECKPOINT).exists()
    resumed_model = tiny_model(seed=99)  # a different init: the checkpoint must replace it
    resumed = train(resumed_model, data, cfg, "cpu", tmp_path / "cut")

    assert resumed["resumed_from_epoch"] == 1
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in expected["history"]]
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in expected["history"]]
    # A finished run resumes to nothing and returns its history (the checkpoint keeps no timings).
    again = train(tiny_model(), data, cfg, "cpu", tmp_path / "cut")
    assert again["history"] == [
        {k: v for k, v in h.items() if k not in TIMING_KEYS} for h in resumed["history"]
    ]
    # A checkpoint that trained longer than asked is not silently taken as this run's result.
    with pytest.raises(TrainingError, match="holds 3 epochs but train.epochs is 2"):
        train(tiny_model(), data, tiny_cfg(epochs=2, **train_cfg), "cpu", tmp_path / "cut")


def test_checkpoint_bytes_repeat_for_the_same_seed_and_settings(tmp_path):
    """dvc.lock hashes the run folder: the checkpoint holds no wall-clock times (callbacks get them)."""
    for name in ("a", "b"):
        fit = train(tiny_model(), SquaresOnNoise(8), tiny_cfg(epochs=2), "cpu", tmp_path / name)
        assert fit["history"][-1]["epoch_time_s"] > 0  # still measured and returned
    assert (tmp_path / "a" / CHECKPOINT).read_bytes() == (tmp_path / "b" / CHECKPOINT).read_bytes()


def test_checkpoint_bytes_do_not_depend_on_other_code_drawing_from_global_rngs(tmp_path):
    """Tracking or orchestration threads may draw from Python's or numpy's global RNG while a step
    runs (the main job's flow made 5 of 10 checkpoints differ in rng/python): not the run's state."""
    import random

    import numpy as np

    class DrawsDuringTheStep(CNN28):
        def forward(self, x):
            random.random(), np.random.random()  # what a background thread may do meanwhile
            return super().forward(x)

    plain = tiny_model()
    drawing = DrawsDuringTheStep(in_channels=1, input_size=16, width=4)
    drawing.load_state_dict(plain.state_dict())
    train(plain, SquaresOnNoise(8), tiny_cfg(epochs=2), "cpu", tmp_path / "a")
    train(drawing, SquaresOnNoise(8), tiny_cfg(epochs=2), "cpu", tmp_path / "b")
    assert (tmp_path / "a" / CHECKPOINT).read_bytes() == (tmp_path / "b" / CHECKPOINT).read_bytes()


def test_lr_schedules_and_callback_logs(tmp_path):
    callback = StopAfter(epoch=-1)
    cfg = tiny_cfg(epochs=3, lr=0.1, scheduler="lambda", gamma=0.5)
    result = train(tiny_model(), SquaresOnNoise(8), cfg, "cpu", tmp_path / "a", callbacks=callback)
    assert [h["lr"] for h in result["history"]] == pytest.approx([0.1, 0.05, 0.025])
    assert [e for e, _ in callback.seen] == [1, 2, 3]
    assert {"loss", "lr", "images_per_s", "epoch_time_s"} <= set(callback.seen[0][1])
    assert callback.seen[0][1]["images_per_s"] > 0

    cfg = tiny_cfg(epochs=4, lr=0.1, scheduler="milestones", milestones=[1, 3], gamma=0.1)
    result = train(tiny_model(), SquaresOnNoise(8), cfg, "cpu", tmp_path / "b", callbacks=object())
    assert [h["lr"] for h in result["history"]] == pytest.approx([0.1, 0.01, 0.01, 0.001])


class NoBatchNorm(nn.Module):
    """Without BatchNorm, a batch's gradient is the mean of its halves' gradients."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(), nn.Conv2d(4, 1, 1))

    def forward(self, x):
        return self.net(x)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    data = SquaresOnNoise(16, fixed=True)  # batches of 4 and 8 get different seeds: fix the items
    big, small = NoBatchNorm(), NoBatchNorm()
    train(big, data, tiny_cfg(epochs=2, batch_size=8, accumulate=1), "cpu", tmp_path / "big")
    train(small, data, tiny_cfg(epochs=2, batch_size=4, accumulate=2), "cpu", tmp_path / "small")
    for key, value in big.state_dict().items():
        torch.testing.assert_close(small.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_epoch_repeats_iterate_the_set_several_times(tmp_path):
    seen = []

    class Recording(SquaresOnNoise):
        def __getitem__(self, index):
            seen.append(index)
            return super().__getitem__(index)

    train(tiny_model(), Recording(10), tiny_cfg(epochs=1, epoch_repeats=3), "cpu", tmp_path)
    assert sorted(seen) == sorted(list(range(10)) * 3)


def test_nan_loss_raises_with_epoch_and_step(tmp_path):
    cfg = tiny_cfg(epochs=1, batch_size=4)
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+: loss is nan"):
        train(tiny_model(), SquaresOnNoise(12, nan_at=5), cfg, "cpu", tmp_path)


def test_pixel_loss_needs_the_upsampler_and_trains_with_masks(tmp_path):
    cfg = tiny_cfg(epochs=2, loss="pixel")
    with pytest.raises(TrainingError, match="upsampler"):
        train(tiny_model(), SquaresOnNoise(8), cfg, "cpu", tmp_path / "a")
    model = tiny_model()
    up = ReceptiveFieldUpsampler.for_model(model, 1.2)
    result = train(model, SquaresOnNoise(16), cfg, "cpu", tmp_path / "b", upsampler=up)
    assert result["loss_kind"] == "pixel" and all(math.isfinite(h["loss"]) for h in result["history"])


def test_checkpoint_is_atomic_and_loads_weights_only(tmp_path):
    train(tiny_model(), SquaresOnNoise(8), tiny_cfg(epochs=1), "cpu", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]  # no .tmp left behind
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler", "rng", "sampler_rng"} <= set(state)


def test_unusable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / CHECKPOINT).write_text("garbage")
    with pytest.raises(TrainingError, match=CHECKPOINT):
        train(tiny_model(), SquaresOnNoise(8), tiny_cfg(epochs=1), "cpu", tmp_path)
    other = tmp_path / "other"
    train(NoBatchNorm(), SquaresOnNoise(8), tiny_cfg(epochs=1), "cpu", other)
    with pytest.raises(TrainingError, match="does not fit"):
        train(tiny_model(), SquaresOnNoise(8), tiny_cfg(epochs=2), "cpu", other)


@pytest.mark.slow
def test_worker_processes_give_the_same_result(tmp_path):
    results = []
    for workers in (0, 2):
        cfg = tiny_cfg(epochs=2)
        cfg.data.num_workers = workers
        model = tiny_model()
        train(model, SquaresOnNoise(16), cfg, "cpu", tmp_path / str(workers))
        results.append(model.state_dict())
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", ["image", "pixel"])
def test_cuda_bf16_training_learns(tmp_path, loss):
    test = [SquaresOnNoise(200)[i] for i in range(200)]
    cfg = tiny_cfg(epochs=4, batch_size=16, optimizer="adam", scheduler="none", loss=loss, amp=True)
    cfg.data.num_workers = 2  # pinned memory and persistent workers on the CUDA path
    model = tiny_model(seed=1)
    up = ReceptiveFieldUpsampler.for_model(model, 1.2)
    result = train(model, SquaresOnNoise(256), cfg, "cuda", tmp_path, upsampler=up)
    assert next(model.parameters()).is_cuda
    assert all(math.isfinite(h["loss"]) for h in result["history"])
    assert _image_auc(model.cpu(), test) > 0.9


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    """Logs (DVC, Prefect workers, CI) are not terminals: no bar redrawn hundreds of times there;
    the per-epoch summary goes through the callbacks and loggers instead."""
    import io
    import sys

    class Stream(io.StringIO):
        def __init__(self, tty: bool):
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    for tty in (False, True):
        stream = Stream(tty)
        monkeypatch.setattr(sys, "stderr", stream)
        train(tiny_model(), SquaresOnNoise(16), tiny_cfg(epochs=1, progress=True), "cpu", tmp_path / str(tty))
        assert ("epoch 1/1" in stream.getvalue()) is tty, stream.getvalue()[:200]


def test_fast_cpu_path_follows_the_eager_fp32_loss_trajectory(tmp_path):
    """bf16 autocast (where the CPU has native bf16) and channels-last change rounding, not the
    result: the loss trajectory stays close to the plain fp32 run's, and resume stays exact."""
    histories = {}
    for name, fast in (("eager", False), ("fast", True)):
        cfg = tiny_cfg(epochs=3, amp=fast, channels_last=fast)
        histories[name] = [
            h["loss"] for h in train(tiny_model(), SquaresOnNoise(48), cfg, "cpu", tmp_path / name)["history"]
        ]
    assert histories["fast"] == pytest.approx(histories["eager"], rel=0.05)
    assert histories["fast"][-1] < histories["fast"][0]  # it still learns

    cfg = tiny_cfg(epochs=3, amp=True, channels_last=True)
    train(
        tiny_model(),
        SquaresOnNoise(48),
        tiny_cfg(epochs=1, amp=True, channels_last=True),
        "cpu",
        tmp_path / "r",
    )
    resumed = train(tiny_model(), SquaresOnNoise(48), cfg, "cpu", tmp_path / "r")["history"]
    assert [h["loss"] for h in resumed] == histories["fast"]


def test_autocast_bf16_only_where_the_hardware_has_it(monkeypatch, capsys):
    import fcdd.training.runtime as engine
    from fcdd.hardware import CPUInfo

    cpu = torch.device("cpu")
    assert not engine.autocast_bf16(cpu, amp=False)
    monkeypatch.setattr(engine, "cpu_info", lambda: CPUInfo("AMX box", 2, ("avx512f", "amx_bf16"), "AVX512"))
    assert engine.autocast_bf16(cpu, amp=True)
    monkeypatch.setattr(engine, "cpu_info", lambda: CPUInfo("Old AMD", 2, ("avx2", "fma"), "AVX2"))
    monkeypatch.setattr(engine, "_said", set())
    assert not engine.autocast_bf16(cpu, amp=True)
    assert not engine.autocast_bf16(cpu, amp=True)
    err = capsys.readouterr().err
    assert err.count("no native bf16") == 1 and "Old AMD" in err
