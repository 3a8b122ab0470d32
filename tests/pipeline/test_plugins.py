"""The plugin interface of the fcdd command (fcdd/plugins.py): trackers and model URIs from plugins,
the installed MLflow plugin, and one line saying what to install when none is there."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import sys
from pathlib import Path

import pytest
import yaml

from fcdd import plugins
from fcdd.cli import main
from fcdd.detector import Detector
from fcdd.runs import result_row, run_one

REPO = Path(__file__).resolve().parents[2]


class MemoryTracker:
    """A tracker that keeps what it is told in memory (what an MLflow run would record)."""

    def __init__(self):
        self.epochs, self.finished, self.opened = [], [], []

    @contextlib.contextmanager
    def run(self, cfg, cls, seed, parent_run_id=None):
        self.opened.append((cls, seed, parent_run_id))
        tracker = self

        class Run:
            def on_epoch_end(self, epoch, logs):
                tracker.epochs.append(epoch)

            def finish(self, result):
                tracker.finished.append(result.metrics["image_auc"])
                return {"mlflow_run_id": f"mem-{len(tracker.finished)}"}

        yield Run()

    def describe(self, row):
        return f"; memory run {row['mlflow_run_id']}"


class MemoryPlugin:
    model_schemes = ("mem:/",)

    def __init__(self, models: dict[str, Path]):
        self.made, self.models, self.loaded = MemoryTracker(), models, []

    def tracker(self, cfg):
        return self.made

    def load_detector(self, ref, device, tracking_uri=None):
        self.loaded.append((ref, tracking_uri))
        return Detector.load(self.models[ref], device=device)


@pytest.fixture
def registered():
    made = []

    def register(plugin):
        plugins.register(plugin)
        made.append(plugin)
        return plugin

    yield register
    for plugin in made:
        plugins.unregister(plugin)


def _params(tmp: Path, cfg) -> Path:
    path = tmp / "params.yaml"
    data = cfg.to_dict()
    data.pop("preset")
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_tracks_through_a_registered_plugin(
    defect_folder, make_folder_config, tmp_path, registered, capsys
):
    """`fcdd train` with tracking on: the plugin's tracker opens the run, gets every epoch and the
    result, and its line follows the metrics; the run folder is the same as without tracking."""
    plugin = registered(MemoryPlugin({}))
    cfg = make_folder_config(defect_folder, tmp_path, "train.epochs=2", "tracking.enabled=true")
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--params", str(_params(tmp_path, cfg))]) == 0
    out = capsys.readouterr().out
    assert plugin.made.opened == [("tiles", 0, None)] and plugin.made.epochs == [1, 2]
    assert len(plugin.made.finished) == 1 and "; memory run mem-1" in out
    assert (tmp_path / "runs" / "folder" / "tiles" / "seed0" / "model.pt").is_file()


def test_model_uris_go_to_the_plugin_that_claims_them(
    defect_folder, make_folder_config, tmp_path, registered, capsys
):
    from shared_fixtures import tiny_detector

    model = tiny_detector().save(tmp_path / "model.pt")
    plugin = registered(MemoryPlugin({"mem:/tiny": model}))
    assert main(["info", "mem:/tiny", "--tracking-uri", "somewhere"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["net"] == "cnn28"
    assert plugin.loaded == [("mem:/tiny", "somewhere")]


def test_one_function_runs_an_experiment_with_or_without_a_tracker(monkeypatch, tmp_path):
    from fcdd import runs
    from fcdd.config import load_config
    from fcdd.experiment import RunResult

    cfg = load_config(None, [f"train.output_dir={tmp_path}"])
    seen = []

    def experiment(cfg, cls, seed, callbacks=None):
        callbacks.on_epoch_end(1, {"loss": 1.0})
        metrics = {"image_auc": 0.7, "per_defect": {"a": 1}, "n_test": 4, "warning": None}
        return RunResult("fmnist", cls, seed, tmp_path, metrics, [{"epoch": 1}], tmp_path / "model.pt")

    class Callbacks:
        def on_epoch_end(self, epoch, logs):
            seen.append(epoch)

    monkeypatch.setattr(runs, "run_experiment", experiment)
    plain = run_one(cfg, "trouser", 0, callbacks=Callbacks())
    tracker = MemoryTracker()
    tracked = run_one(cfg, "trouser", 0, tracker=tracker, callbacks=Callbacks(), parent_run_id="p")
    assert seen == [1, 1] and tracker.epochs == [1] and tracker.opened == [("trouser", 0, "p")]
    assert tracked == plain | {"mlflow_run_id": "mem-1"}
    assert list(plain) == ["dataset", "class", "seed", "run_dir", "image_auc", "n_test", "warning", "epochs"]
    assert plain["epochs"] == 1 and "per_defect" not in plain  # scalars only: the rest is in metrics.json
    assert result_row(experiment(cfg, "trouser", 0, Callbacks())) == plain


def test_the_mlflow_plugin_is_installed_as_an_entry_point():
    pytest.importorskip("mlflow")
    found = {e.name: e.value for e in importlib.metadata.entry_points(group=plugins.GROUP)}
    assert found.get("mlflow") == "pipelines.plugin:plugin", (
        f"entry points of {plugins.GROUP}: {found}; reinstall the package (pip install -e .)"
    )
    plugin = next(p for p in plugins.discover().plugins if getattr(p, "name", "") == "mlflow")
    assert plugin.model_schemes == ("models:/", "runs:/")


def test_without_plugins_the_command_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    monkeypatch.chdir(tmp_path)
    assert main(["info", "models:/fcdd-mvtec-grid@champion"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install fcdd[pipelines]" in err and "models:/fcdd" in err
    argv = ["train", "--params", str(REPO / "params.yaml"), "-o", f"train.output_dir={tmp_path}"]
    assert main([*argv, "-o", "tracking.enabled=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "pip install fcdd[pipelines]" in err
        and "tracking.enabled=false" in err
    )
    from fcdd.app.registry import open_registry
    from fcdd.errors import UsageError

    with pytest.raises(
        UsageError, match=r"sqlite:///x.db: reading a model registry needs the pipelines extra"
    ):
        open_registry("sqlite:///x.db")


def test_fcdd_imports_no_orchestration_package():
    """fcdd/ (the CLI included) reaches MLflow, Prefect and pipelines/ only through plugins."""
    import subprocess

    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "house_check.py"), "--only", "fcdd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "fcdd/ imports of pipelines, mlflow, prefect, dvc  0" in res.stdout, res.stdout
