"""train.compile: eager fallback on the CPU and after a failed compile, equal to an eager run."""

from __future__ import annotations

import math

import pytest
import torch

import fcdd.training.runtime as runtime
import fcdd.training.step as compiled_step
from fcdd.config import ConfigError, load_config
from fcdd.training import train, train_packed
from tests.unit.test_engine import SquaresOnNoise, tiny_cfg, tiny_model

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_messages(monkeypatch):
    monkeypatch.setattr(runtime, "_said", set())  # each test sees its own one-time lines


def _trained(cfg, tmp_path, name: str, n: int = 28) -> dict:
    model = tiny_model(seed=1)
    train(model, SquaresOnNoise(n), cfg, "cpu", tmp_path / name)
    return model.state_dict()


def _assert_equal(a: dict, b: dict) -> None:
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_on_the_cpu_trains_eager_and_says_so_once(tmp_path, capsys, mode):
    eager = _trained(tiny_cfg(), tmp_path, "off")
    capsys.readouterr()
    on = _trained(tiny_cfg(compile=mode), tmp_path, "on")
    err = capsys.readouterr().err
    assert err.count(f"train.compile={mode}: CUDA only") == 1, err
    _assert_equal(on, eager)


def test_packed_compile_on_the_cpu_equals_the_eager_pack(tmp_path, capsys):
    states = {}
    for mode in ("off", "reduce-overhead"):
        models = [tiny_model(s) for s in (3, 4)]
        sets = [SquaresOnNoise(24, p_anomaly=p) for p in (0.3, 0.5)]
        dirs = [tmp_path / mode / str(k) for k in range(2)]
        train_packed(models, sets, tiny_cfg(compile=mode), "cpu", dirs, [3, 4])
        states[mode] = [m.state_dict() for m in models]
    assert "train.compile=reduce-overhead: CUDA only" in capsys.readouterr().err
    for a, b in zip(states["off"], states["reduce-overhead"], strict=True):
        _assert_equal(a, b)


def test_a_failed_compile_undoes_the_step_and_the_run_equals_eager(tmp_path, capsys, monkeypatch):
    """A compiled step that fails after its forward (BatchNorm statistics moved) and part of its
    backward (gradients accumulated) is undone and rerun eager. 28 images in batches of 8 with
    accumulate 2: the last batch (4 images, a new shape, so compiled afresh) is the second step of
    its group, on top of the gradients of the first."""
    cfg = tiny_cfg(epochs=2, accumulate=2)
    eager = _trained(cfg, tmp_path, "eager")

    calls = {"ok": 0, "failed": 0}

    def fake_compile(fn, mode, dynamic):
        def compiled(x, target):
            if x.shape[0] == 8:  # the full batch "compiles": the same arithmetic as eager
                calls["ok"] += 1
                return fn(x, target)
            calls["failed"] += 1
            (fn(x, target) * 0.5).backward()  # forward and half a backward, then the failure
            raise RuntimeError("simulated inductor lowering failure\nsecond line of advice")

        return compiled

    monkeypatch.setattr(compiled_step, "compile_unsupported", lambda mode, device: None)
    monkeypatch.setattr(compiled_step.torch, "compile", fake_compile)
    capsys.readouterr()
    fell_back = _trained(tiny_cfg(epochs=2, accumulate=2, compile="default"), tmp_path, "compiled")
    err = capsys.readouterr().err
    assert calls == {"ok": 3, "failed": 1}  # epoch 1's three full batches, then eager for good
    assert err.count("compiling the step failed (RuntimeError: simulated inductor lowering failure)") == 1
    assert "second line" not in err
    _assert_equal(fell_back, eager)


def test_compile_mode_is_validated_and_not_part_of_the_fingerprint():
    from fcdd.fingerprint import fingerprint

    with pytest.raises(ConfigError, match="train.compile: 'fast' is not one of off, default"):
        load_config(None, ["train.compile=fast"])
    off, on = load_config(None, []), load_config(None, ["train.compile=reduce-overhead"])
    assert fingerprint(off) == fingerprint(on)  # a compiled run resumes an eager one and back


def test_unsupported_reasons():
    assert compiled_step.compile_unsupported("off", torch.device("cpu")) is None
    assert "CUDA only" in compiled_step.compile_unsupported("default", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_cuda_compiled_step_follows_the_eager_losses(tmp_path, mode):
    histories = {}
    for name in ("off", mode):
        cfg = tiny_cfg(epochs=3, batch_size=16, compile=name, amp=False)
        model = tiny_model(seed=1)
        histories[name] = [
            h["loss"] for h in train(model, SquaresOnNoise(72), cfg, "cuda", tmp_path / name)["history"]
        ]
    assert all(math.isfinite(v) for v in histories[mode])
    assert histories[mode] == pytest.approx(histories["off"], rel=1e-3)
