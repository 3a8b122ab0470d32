"""Quiet, informative output: `fcdd --version`, and warnings as one plain line each, once."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from fcdd import __version__
from fcdd.cli import main
from fcdd.cli.messages import hide_warning, one_line_warnings


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"fcdd {__version__} (torch ") and "Python" in line


def _library_warning(text: str) -> None:
    """A warning as a library in site-packages raises it, coloured as MLflow colours its own."""
    warnings.warn_explicit(
        f"\x1b[33m{text}\x1b[0m",
        UserWarning,
        "/venv/lib/python3.11/site-packages/somelib/utils.py",
        12,
        registry={},  # a fresh registry: Python's own once-per-location filter does not hide repeats
    )


def test_library_warnings_are_plain_named_and_shown_once(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as MLflow sets around its calls
        with one_line_warnings("fcdd train"):
            for _ in range(3):  # e.g. once per class
                _library_warning("something about the library")
            warnings.warn("our own advice", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "\x1b[" not in err
    assert err.splitlines() == [
        "fcdd train: warning: something about the library (from somelib)",
        "fcdd train: warning: our own advice",
    ]


def test_hidden_warnings_are_dropped_and_the_command_restores_the_handler(capsys):
    hide_warning(r"Advice for the calling code")
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with one_line_warnings("evaluate"):
            _library_warning("Advice for the calling code: add type hints")
    assert capsys.readouterr().err == "" and warnings.showwarning is before


def test_mlflow_type_hint_advice_is_not_shown_by_fcdd_train():
    """Importing the MLflow model (what `fcdd train` with tracking does) prints no MLflow advice."""
    pytest.importorskip("mlflow")
    code = (
        "from fcdd.cli.messages import one_line_warnings\n"
        "with one_line_warnings('fcdd train'):\n"
        "    import pipelines.pyfunc\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "type hints" not in done.stderr and "\x1b[" not in done.stderr


@pytest.mark.slow
def test_a_tracked_train_logs_one_plain_line_per_step(defect_folder, make_folder_config, tmp_path):
    """`fcdd train` with MLflow tracking, its output going to a log file (not a terminal): one line
    per step (loaded, epoch, evaluating, registering), no colour codes, no progress-bar frames, no
    MLflow INFO lines or advice meant for fcdd's own code."""
    pytest.importorskip("mlflow")
    import yaml

    cfg = make_folder_config(
        defect_folder,
        tmp_path,
        "train.epochs=1",
        "tracking.enabled=true",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
    )
    data = cfg.to_dict()
    data.pop("preset")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "fcdd.cli", "train", "--params", "params.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "\x1b[" not in err and "\r" not in err and "Downloading artifacts" not in err, err
    assert "type hints" not in err and " INFO " not in err, err
    lines = err.splitlines()
    assert any(ln.startswith("tiles seed 0: evaluating: scoring ") for ln in lines), err
    assert any(ln.startswith("tiles seed 0: registering the model in MLflow") for ln in lines), err


def test_a_missing_gpu_limit_is_said_once_not_per_class(monkeypatch):
    pytest.importorskip("prefect")
    from prefect.exceptions import ObjectNotFound

    from fcdd.config import Config
    from pipelines import gpu_slots

    said: list[str] = []

    class Logger:
        def info(self, message, *args):
            said.append(message % args)

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_global_concurrency_limit_by_name(self, name):
            raise ObjectNotFound(http_exc=Exception(name))

    monkeypatch.setattr(gpu_slots, "get_run_logger", Logger)
    monkeypatch.setattr(gpu_slots, "get_client", lambda sync_client: Client())
    monkeypatch.setattr(gpu_slots, "_MISSING_LIMITS_SAID", set())
    for _ in range(3):  # three class runs in one process
        with gpu_slots.training_slot(Config()):
            pass
    assert len(said) == 1 and "not found" in said[0]
