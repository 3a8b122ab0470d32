"""Outputs only from the stage that owns them (issue 22.3): a run outside `dvc repro` never writes
into a DVC stage's output (fcdd/stage_outputs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fcdd.config import load_config
from fcdd.errors import ConfigError
from fcdd.stage_outputs import STAGE_ENV, check_output_owner, project_root, stage_outputs

REPO = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path) -> Path:
    """A DVC project as the repository has it: dvc.yaml's train out is ${train.output_dir}/${data.dataset}."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  old:\n    outs:\n    - path: runs/cifar10\n"
    )
    return tmp_path


def test_stage_outputs_fill_in_params_and_read_the_lock(tmp_path):
    root = _project(tmp_path)
    outs = stage_outputs(root)
    assert outs[(root / "runs" / "fmnist").resolve()] == "train"
    assert outs[(root / "outputs" / "evaluate" / "runs").resolve()] == "evaluate"
    assert outs[(root / "runs" / "cifar10").resolve()] == "old"
    assert project_root(root / "runs") == root.resolve()
    assert project_root(tmp_path.parent) is None


def test_a_run_outside_the_stage_is_refused_in_its_output(tmp_path, monkeypatch):
    root = _project(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.delenv(STAGE_ENV, raising=False)
    cfg = load_config("params.yaml")
    with pytest.raises(ConfigError, match=r"runs/fmnist is the output of the DVC stage 'train'"):
        check_output_owner(cfg)
    with pytest.raises(ConfigError):  # inside it
        check_output_owner(load_config("params.yaml", ["train.output_dir=runs/fmnist/mine"]))
    check_output_owner(load_config("params.yaml", ["train.output_dir=runs/mine"]))  # beside it: fine
    monkeypatch.setenv(STAGE_ENV, "train")
    check_output_owner(cfg)  # the stage itself
    monkeypatch.setenv(STAGE_ENV, "evaluate")
    with pytest.raises(ConfigError):
        check_output_owner(cfg)


def test_fcdd_train_into_the_main_jobs_output_is_one_line_before_any_work(tmp_path):
    """Outside a project nothing is refused; inside, `fcdd train` on params.yaml as shipped is."""
    root = _project(tmp_path)
    env = {k: v for k, v in __import__("os").environ.items() if k != STAGE_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "fcdd.cli", "train", "--classes", "0", "--root", str(REPO), "-o", "tracking.enabled=false"],
        cwd=root, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs/fmnist is the output of the DVC stage 'train'" in lines[0]
    assert "-o train.output_dir=" in lines[0]
    assert not (root / "runs").exists()
