"""benchmarks/bench_objectives.py: the params file it writes for a profile (no training here; the
comparison stage it runs is tested end to end in tests/system/test_compare_stage.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from fcdd.config import load_config

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "bench_objectives", ROOT / "benchmarks" / "bench_objectives.py"
)
bo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bo)


def _load(tmp_path: Path, params: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_config(path)


def test_the_profile_uses_the_presets_and_turns_tracking_off(tmp_path):
    cfg = _load(tmp_path, bo.profile_params("fmnist", [0, 1, 2], ["0", "6"], quick=False))
    assert cfg.preset == ["fmnist", "cpu"] and cfg.train.epochs == 3 and cfg.train.seeds == [0, 1, 2]
    assert cfg.data.classes == ["0", "6"] and not cfg.tracking.enabled
    assert cfg.data.train_limit is None and cfg.data.test_limit is None  # the CPU profile: all images


def test_limits_apply_to_every_objective_alike(tmp_path):
    params = bo.profile_params("fmnist", [0], None, quick=False, limits=(1000, None))
    cfg = _load(tmp_path, params)
    assert (cfg.data.train_limit, cfg.data.test_limit) == (1000, None)
    cifar = _load(tmp_path, bo.profile_params("cifar10", [0], None, quick=False, limits=(None, 500)))
    assert (cifar.data.train_limit, cifar.data.test_limit) == (2000, 500)  # the profile's, then the flag's
