"""A run folder belongs to one configuration: settings fingerprints, --restart, the run-folder lock,
model.pt before evaluation, nominal-only data, and the one-line errors of `fcdd train`/`info`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fcdd import experiment
from fcdd.cli import main
from fcdd.detector import Detector
from fcdd.errors import TrainingError
from fcdd.fingerprint import RUNTIME_KEYS, fingerprint, mismatch
from fcdd.runlock import RunFolderBusy, run_folder_lock

REPO = Path(__file__).resolve().parents[2]


def _params(tmp: Path, cfg) -> Path:
    data = cfg.to_dict()
    data.pop("preset")
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train(params: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["train", "--params", str(params), "-o", "train.epochs=1", *extra])
    return rc, _errors_only(capsys.readouterr().err)


def _errors_only(err: str) -> str:
    """stderr without the progress report: per-epoch and evaluating lines, the 'loaded ...' data summary
    (its continuation lines are indented)."""
    keep = [
        line
        for line in err.splitlines()
        if not (
            line.startswith(("tiles seed 0: epoch ", "tiles seed 0: evaluating", "loaded "))
            or line.startswith(" ")
        )
    ]
    return "\n".join(keep)


def _one_error_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.fixture()
def run(defect_folder, make_folder_config, tmp_path, capsys):
    """A finished one-epoch run (train.lr 0.001, confetti) and its params file."""
    params = _params(tmp_path, make_folder_config(defect_folder, tmp_path, "evaluation.heatmap_count=2"))
    assert _train(params, capsys)[0] == 0
    return params, tmp_path / "runs" / "folder" / "tiles" / "seed0"


# --- point 1: fingerprints and --restart ------------------------------------------------------


def test_fingerprint_counts_result_settings_only(make_folder_config, defect_folder, tmp_path):
    cfg = make_folder_config(defect_folder, tmp_path)
    base = fingerprint(cfg, "tiles", 0)
    assert not (set(base["values"]) & RUNTIME_KEYS)
    outside = {k for k in base["values"] if k.split(".")[0] in ("evaluation", "tracking", "orchestration")}
    assert outside == {"evaluation.calibration"}  # it holds out training images
    runtime = make_folder_config(
        defect_folder, tmp_path, "data.num_workers=3", "train.threads=2", "train.epochs=9",
        "evaluation.quantile=0.5", "tracking.uri=sqlite:///x.db", "data.classes=[]", "train.seeds=[4, 5]",
    )  # fmt: skip
    assert fingerprint(runtime, "tiles", 0)["hash"] == base["hash"]
    for override in (
        "train.lr=0.5", "anomalies.kind=none", "model.sigma=3.0", "data.train_limit=5", "evaluation.calibration=0.3",
    ):  # fmt: skip
        other = fingerprint(make_folder_config(defect_folder, tmp_path, override), "tiles", 0)
        assert other["hash"] != base["hash"] and override.split("=")[0] in mismatch(base, other)
    assert fingerprint(cfg, "tiles", 1)["hash"] != base["hash"]  # the seed counts
    assert "older fcdd" in mismatch(None, base)


def test_other_settings_are_refused_naming_the_keys_and_restart_retrains(run, capsys):
    params, run_dir = run
    model_before = (run_dir / "model.pt").read_bytes()
    rc, err = _train(params, capsys, "-o", "train.lr=0.5", "-o", "anomalies.kind=none")
    assert rc == 2
    _one_error_line(err, "checkpoint.pt", "train.lr 0.001 -> 0.5", "anomalies.kind 'confetti' -> 'none'")
    _one_error_line(err, "--restart", "train.output_dir")
    assert (run_dir / "model.pt").read_bytes() == model_before  # nothing overwritten

    rc, err = _train(params, capsys, "--restart", "-o", "train.lr=0.5", "-o", "anomalies.kind=none")
    assert rc == 0, err
    meta = Detector.load(run_dir / "model.pt").meta
    assert meta["config"]["train.lr"] == 0.5 and meta["config"]["anomalies.kind"] == "none"
    assert meta["settings"]["values"]["train.lr"] == 0.5
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1


def test_more_epochs_resume_and_runtime_knobs_do_not_count(run, capsys):
    params, run_dir = run
    rc, err = _train(params, capsys, "-o", "train.epochs=2", "-o", "train.threads=2")
    assert rc == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    rc, err = _train(params, capsys)  # the checkpoint now holds 2 epochs, 1 asked
    assert rc == 2
    _one_error_line(err, "holds 2 epochs but train.epochs is 1", "--restart")


def test_broken_and_unfingerprinted_checkpoints_are_one_line_errors(run, capsys):
    params, run_dir = run
    ckpt = run_dir / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["settings"]
    torch.save(state, ckpt)
    rc, err = _train(params, capsys)
    assert rc == 2
    _one_error_line(err, "no settings fingerprint", "--restart")
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated
    rc, err = _train(params, capsys)
    assert rc == 2
    _one_error_line(err, "cannot read the checkpoint", "--restart")
    assert _train(params, capsys, "--restart")[0] == 0


def test_evaluate_stage_refuses_a_model_of_other_settings(run, make_folder_config, defect_folder, tmp_path):
    from pipelines.stages.evaluate import evaluate_run

    _, run_dir = run
    other = make_folder_config(defect_folder, tmp_path, "train.lr=0.02")
    with pytest.raises(SystemExit, match=r"trained with other settings \(train\.lr 0\.001 -> 0\.02\)"):
        evaluate_run(other, "tiles", 0, run_dir, "cpu")


# --- point 4: the run-folder lock -------------------------------------------------------------

HOLDER = """
import os, sys, time
from fcdd.runlock import run_folder_lock
with run_folder_lock(sys.argv[1]):
    if os.fork() == 0:  # a child (like a DataLoader worker) that outlives its parent
        time.sleep(20)
        os._exit(0)
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_into_a_locked_folder_fails_at_once_naming_the_holder(run, capsys):
    params, run_dir = run
    holder = _hold_lock(run_dir)
    try:
        rc, err = _train(params, capsys, "-o", "train.epochs=2")
        assert rc == 2
        _one_error_line(err, str(run_dir), f"pid {holder.pid} on {os.uname().nodename}")
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock (its forked child lives on)
        holder.wait(timeout=30)
    with run_folder_lock(run_dir):  # a dead holder's lock does not block
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            with run_folder_lock(run_dir):
                pass
    assert _train(params, capsys, "-o", "train.epochs=2")[0] == 0


# --- point 9: model.pt before evaluation --------------------------------------------------------


def test_a_failing_evaluation_keeps_the_trained_model(
    defect_folder, make_folder_config, tmp_path, monkeypatch
):
    cfg = make_folder_config(defect_folder, tmp_path, "train.epochs=1")

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(experiment, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        experiment.run_experiment(cfg, "tiles", 0)
    run_dir = experiment.run_dir_for(cfg, "tiles", 0)
    det = Detector.load(run_dir / "model.pt")
    assert det.meta["epochs"] == 1 and not (run_dir / "metrics.json").exists()


# --- point 10: a folder dataset with nominal images only ----------------------------------------


def test_nominal_only_folder_trains_saves_and_reports_null_aucs(
    defect_folder, make_folder_config, tmp_path, capsys
):
    from fcdd.metrics import aggregate
    from pipelines.stages.evaluate import METRIC_KEYS, evaluate_run, top_metrics
    from pipelines.stages.report import render

    cfg = make_folder_config(
        defect_folder,
        tmp_path,
        "data.folder={nominal: [good], test_ratio: 0.25}",
        "evaluation.heatmap_count=2",
    )
    params = _params(tmp_path, cfg)
    rc, err = _train(params, capsys)
    assert rc == 0, err
    assert "warning" in err and "AUCs need both nominal and anomalous test images" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    run_dir = tmp_path / "runs" / "folder" / "tiles" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["image_auc"] is None and metrics["pixel_auc"] is None and metrics["n_anomalous"] == 0
    assert Detector.load(run_dir / "model.pt").meta["metrics"]["image_auc"] is None
    assert (run_dir / "scores.csv").read_text().count("\n") == metrics["n_test"] + 1

    # the DVC evaluate and report stages cope with the nulls
    os.chdir(tmp_path)
    try:
        for folder in ("outputs/evaluate/runs", "outputs/evaluate/heatmaps"):
            Path(folder).mkdir(parents=True, exist_ok=True)
        row = evaluate_run(cfg, "tiles", 0, run_dir, "cpu")
        assert row["image_auc"] is None
        top = top_metrics("folder", aggregate([row], keys=METRIC_KEYS))
        report = render({"dataset": "folder", "metrics": top, "quantile": 0.99, "figures": []})
        assert "| tiles | – |" in report
    finally:
        os.chdir(REPO)


# --- point 11: one-line errors ------------------------------------------------------------------


def _bomb_png(path: Path, side: int = 40_000) -> None:
    """A PNG header claiming side x side pixels (PIL refuses it at open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_in_training_data_is_one_line(defect_folder, make_folder_config, tmp_path, capsys):
    good = tmp_path / "data" / "good"
    good.mkdir(parents=True)
    for p in sorted((defect_folder / "good").glob("*.png"))[:8]:
        (good / p.name).write_bytes(p.read_bytes())
    _bomb_png(good / "huge.png")
    cfg = make_folder_config(
        defect_folder, tmp_path, f"data.root={tmp_path / 'data'}", "data.folder={nominal: [good]}"
    )
    rc, err = _train(_params(tmp_path, cfg), capsys)
    assert rc == 2
    _one_error_line(err, "huge.png", "decompression bomb")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "argv",
    [["train", "-o", "train.device=cuda"], ["predict", "--model", "m.pt", "--device", "cuda", "x.png"]],
)
def test_cuda_without_cuda_is_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "m.pt").write_bytes(b"")
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, "'cuda' requested but CUDA is not available")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.momentum=-0.5", "train.momentum: must be at least 0"),
        ("train.weight_decay=-1", "train.weight_decay: must be at least 0"),
        ("train.threads=-1", "train.threads: must be at least 0"),
        ("data.num_workers=-1", "data.num_workers: must be at least 0"),
        ("train.seeds=[-3]", "train.seeds[0]: must be in"),
        ("evaluation.quantile=2", "evaluation.quantile: must be in (0, 1]"),
        ("train.lr=.nan", "train.lr: must be a finite number"),
    ],
)
def test_bad_values_stop_train_before_any_work(override, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-o", override, "-o", f"train.output_dir={tmp_path / 'runs'}"]) == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "runs").exists()


class NotPlain:  # a pickled object that weights_only loading refuses
    pass


@pytest.mark.parametrize("drop", ["sigma", "preprocess", "meta", "net"])
def test_damaged_model_files_are_one_line(run, drop, tmp_path, capsys):
    state = torch.load(run[1] / "model.pt", weights_only=True)
    del state[drop]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    assert main(["info", str(bad)]) == 2
    _one_error_line(capsys.readouterr().err, "bad.pt: damaged FCDD model file", drop)


def test_unpicklable_model_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "pickled.pt"
    torch.save({"format": "fcdd-detector/1", "thing": NotPlain()}, bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "pickled.pt: not an FCDD model file", "Python objects other than tensors")
    assert "weights_only" not in err  # never torch's advice to load it unsafely


def test_training_error_is_caught_by_the_cli(run, capsys, monkeypatch):
    import fcdd.experiment as exp

    def failing(*a, **k):
        raise TrainingError("epoch 1, step 1: loss is nan (not finite); try a lower train.lr")

    monkeypatch.setattr(exp, "train", failing)
    rc, err = _train(run[0], capsys, "--restart")
    assert rc == 2
    _one_error_line(err, "loss is nan")


def test_a_run_folder_repeats_byte_for_byte_in_another_clone(
    defect_folder, make_folder_config, tmp_path, monkeypatch
):
    """Two clones at different places, data at data/tiles in each, different MLflow stores: every
    file of the run folder has the same bytes (dvc.lock hashes them). model.pt stores the data root
    relative to itself, and `fcdd evaluate` still finds it from any folder."""
    clones = [tmp_path / "a", tmp_path / "deeper" / "b"]
    folders = []
    for clone in clones:
        shutil.copytree(defect_folder, clone / "data" / "tiles")
        monkeypatch.chdir(clone)
        cfg = make_folder_config(
            Path("data/tiles"), Path("."), "train.epochs=1", f"tracking.uri=sqlite:///{clone}/m.db"
        )
        result = experiment.run_experiment(cfg, "tiles", 0)
        folders.append(clone / result.run_dir)

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    first, second = (files(f) for f in folders)
    assert {"model.pt", "checkpoint.pt", "scores.csv", "figures/heatmaps_local.png"} <= set(first)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    meta = Detector.load(folders[1] / "model.pt").meta
    assert meta["data_root_from_model"] == "../../../../data/tiles" and "data_root_resolved" not in meta
    assert not any(k.startswith("tracking.") for k in meta["config"])

    monkeypatch.chdir(tmp_path)  # from elsewhere: the root is found next to the model
    assert main(["evaluate", str(folders[1] / "model.pt"), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_test"] == meta["metrics"]["n_test"]
