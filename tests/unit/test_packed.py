"""Packed training: K models in one batched step equal K separate runs of the same loop."""

from __future__ import annotations

import pytest
import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.training import CHECKPOINT, TrainingError, load_checkpoint, train, train_packed
from tests.unit.test_engine import SquaresOnNoise, tiny_cfg, tiny_model

torch.set_num_threads(1)


def _close(a: dict, b: dict, rtol: float = 1e-4, skip: tuple[str, ...] = ()) -> None:
    for name in a:
        if name in skip:
            continue
        x, y = a[name].float(), b[name].float()
        scale = max(float(y.abs().max()), 1e-6)
        assert float((x - y).abs().max()) <= rtol * scale + 1e-6, name


def _separate(cfg, seeds, sets, tmp_path, upsampler=None):
    results, states = [], []
    for k, seed in enumerate(seeds):
        model = tiny_model(seed)
        results.append(
            train(model, sets[k], cfg, "cpu", tmp_path / f"sep{k}", upsampler=upsampler, seed=seed)
        )
        states.append(model.state_dict())
    return results, states


@pytest.mark.parametrize(
    "opts",
    [
        {"optimizer": "sgd"},
        {"optimizer": "adam", "lr": 0.003},
        {"optimizer": "sgd", "accumulate": 2, "loss": "pixel"},
    ],
    ids=["sgd", "adam", "pixel-accumulate"],
)
def test_packed_equals_separate_runs(tmp_path, opts):
    cfg = tiny_cfg(**opts)
    seeds = [3, 4, 5]
    sets = [SquaresOnNoise(24, p_anomaly=0.3 + 0.1 * k) for k in range(3)]  # three different data streams
    upsampler = ReceptiveFieldUpsampler(tiny_model().receptive_field, 1.2, 16)
    sep_results, sep_states = _separate(cfg, seeds, sets, tmp_path, upsampler)

    models = [tiny_model(s) for s in seeds]
    dirs = [tmp_path / f"pack{k}" for k in range(3)]
    packed = train_packed(models, sets, cfg, "cpu", dirs, seeds, upsampler=upsampler)

    # Adam divides the conv bias's gradient, which BatchNorm cancels (true value 0), by its own tiny
    # size: that bias (and the running mean that tracks it) follows float noise; the outputs with batch
    # statistics do not.
    skip = ("features.0.bias", "features.1.running_mean") if opts["optimizer"] == "adam" else ()
    probe = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for k in range(3):
        _close(models[k].state_dict(), sep_states[k], skip=skip)
        separate = tiny_model()
        separate.load_state_dict(sep_states[k])
        with torch.no_grad():
            # train mode: batch statistics, where that bias cancels exactly
            torch.testing.assert_close(
                models[k].train()(probe), separate.train()(probe), rtol=1e-3, atol=1e-4
            )
        got = [h["loss"] for h in packed[k]["history"]]
        want = [h["loss"] for h in sep_results[k]["history"]]
        assert got == pytest.approx(want, rel=1e-4)
        # the packed checkpoint is a normal engine checkpoint of model k
        ckpt = load_checkpoint(dirs[k] / CHECKPOINT)
        assert ckpt["epoch"] == cfg.train.epochs
        _close(ckpt["model"], sep_states[k], skip=skip)
    # the three models really differ (a shared-parameter bug would make them equal)
    assert not torch.equal(models[0].state_dict()["head.weight"], models[1].state_dict()["head.weight"])


def test_packed_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_cfg(epochs=3, optimizer="adam", lr=0.003)
    seeds = [1, 2]
    sets = [SquaresOnNoise(16), SquaresOnNoise(16, p_anomaly=0.2)]
    full = [tiny_model(s) for s in seeds]
    train_packed(full, sets, cfg, "cpu", [tmp_path / "a0", tmp_path / "a1"], seeds)

    short = tiny_cfg(epochs=1, optimizer="adam", lr=0.003)
    dirs = [tmp_path / "b0", tmp_path / "b1"]
    train_packed([tiny_model(s) for s in seeds], sets, short, "cpu", dirs, seeds)
    resumed = [tiny_model(s) for s in seeds]
    out = train_packed(resumed, sets, cfg, "cpu", dirs, seeds)
    assert out[0]["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in out[1]["history"]] == [1, 2, 3]
    for a, b in zip(resumed, full, strict=True):
        _close(a.state_dict(), b.state_dict(), rtol=1e-6)


def test_packed_checkpoint_resumes_as_a_separate_run(tmp_path):
    cfg = tiny_cfg(epochs=2)
    seeds = [7, 8]
    sets = [SquaresOnNoise(16), SquaresOnNoise(16, p_anomaly=0.7)]
    train_packed(
        [tiny_model(s) for s in seeds],
        sets,
        tiny_cfg(epochs=1),
        "cpu",
        [tmp_path / "p0", tmp_path / "p1"],
        seeds,
    )
    model = tiny_model(8)
    train(model, sets[1], cfg, "cpu", tmp_path / "p1", seed=8)  # second epoch alone
    reference = tiny_model(8)
    train(reference, sets[1], cfg, "cpu", tmp_path / "ref", seed=8)
    _close(model.state_dict(), reference.state_dict())


def test_packed_errors(tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(TrainingError, match="same number of batches"):
        train_packed(
            [tiny_model(0), tiny_model(1)],
            [SquaresOnNoise(16), SquaresOnNoise(40)],
            cfg,
            "cpu",
            [tmp_path / "x0", tmp_path / "x1"],
            [0, 1],
        )
    sets = [SquaresOnNoise(16), SquaresOnNoise(16)]
    train(tiny_model(0), sets[0], tiny_cfg(epochs=1), "cpu", tmp_path / "y0", seed=0)
    with pytest.raises(TrainingError, match="1 of 2 runs have no checkpoint"):
        train_packed(
            [tiny_model(0), tiny_model(1)], sets, cfg, "cpu", [tmp_path / "y0", tmp_path / "y1"], [0, 1]
        )


def test_train_pack_then_run_experiment_equals_separate_experiments(tmp_path):
    """The pipeline's use: train_pack trains K Fashion-MNIST runs together, then run_experiment on
    each only evaluates; scores and AUCs match K experiments of their own."""
    pytest.importorskip("fcdd.experiment")
    from pathlib import Path

    from fcdd.config import load_config
    from fcdd.experiment import run_experiment, train_pack
    from tests.shared_fixtures import TINY_RUN

    if not Path("data/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not in data/fashion-mnist (scripts/setup_data.sh)")
    overrides = [
        *TINY_RUN,
        "train.epochs=2",
        "train.amp=false",
        "anomalies.kind=none",
        "evaluation.calibration=0",
    ]
    jobs = [("bag", 0), ("sneaker", 0), ("bag", 1)]
    separate = load_config("params.yaml", [*overrides, f"train.output_dir={tmp_path / 'sep'}"])
    packed = load_config("params.yaml", [*overrides, f"train.output_dir={tmp_path / 'pack'}"])
    dirs = train_pack(packed, jobs)
    assert [d.name for d in dirs] == ["seed0", "seed0", "seed1"]
    for (cls, seed), run_dir in zip(jobs, dirs, strict=True):
        alone = run_experiment(separate, cls, seed)
        after_pack = run_experiment(packed, cls, seed)
        assert after_pack.run_dir == run_dir
        assert [h["epoch"] for h in after_pack.history] == [1, 2]
        assert after_pack.metrics["image_auc"] == pytest.approx(alone.metrics["image_auc"], abs=2e-3)
        assert [h["loss"] for h in after_pack.history] == pytest.approx(
            [h["loss"] for h in alone.history], rel=1e-3
        )
