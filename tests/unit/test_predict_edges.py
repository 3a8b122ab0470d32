"""`fcdd predict` at its edges (issue 28): one output folder per call, odd file names and folders,
models that are not what they claim, truncated images, and every such case one line on stderr."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd.cli import main
from fcdd.testing import tiny_detector

torch.set_num_threads(1)
FCDD = [sys.executable, "-m", "fcdd.cli"]
NOT_UTF8 = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8


def write_images(folder: Path, n: int, size=(40, 36), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [folder / f"im{i:03d}.png" for i in range(n)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(p)
    return paths


def rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def calibrated_model(path: Path, n: int = 39, pixel_max: float | None = None) -> Path:
    """The tiny detector calibrated on its own scores of n noise images (or a given pixel_max)."""
    det = tiny_detector()
    rng = np.random.default_rng(5)
    cal = det.score([rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(n)])
    det.meta["calibration"] = {
        "n": n,
        "image_scores": [float(s) for s in cal.scores],
        "pixel_max": [float(h.max()) if pixel_max is None else pixel_max for h in cal.heatmaps],
    }
    return det.save(path)


@pytest.fixture
def model(tmp_path) -> Path:
    return calibrated_model(tmp_path / "model.pt")


def predict(model: Path, out: Path, *inputs, extra=("--alpha", "0.2")) -> int:
    """`fcdd predict` in this process; alpha 0.2 holds with n = 39 (no warning line)."""
    argv = ["predict", "--model", str(model), "--out", str(out), "--device", "cpu", *extra]
    return main([*argv, *map(str, inputs)])


def test_a_second_predict_into_the_same_folder_fails_at_once_naming_the_first(model, tmp_path, capsys):
    write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    holder = subprocess.Popen(  # another process in the middle of `fcdd predict --out out`
        [sys.executable, "-c", "import sys, time; from fcdd.folder_lock import folder_lock; "
         "from fcdd.predict_inputs import PREDICT_LOCK\nwith folder_lock(sys.argv[1], PREDICT_LOCK):\n"
         "    print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert predict(model, out, tmp_path / "in") == 2
        assert time.monotonic() - started < 30  # at once: no waiting, no model work
        err = capsys.readouterr().err.strip()
        assert err == (
            f"fcdd predict: error: --out {out}: another fcdd predict is writing into this folder "
            f"(pid {holder.pid} on {os.uname().nodename} since {err.split(' since ')[1].split(')')[0]}); "
            "wait for it to finish or choose another --out"
        )
        assert not (out / "scores.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    assert predict(model, out, tmp_path / "in") == 0  # the holder is gone: the lock is free again
    assert len(rows(out / "scores.csv")) == 2


def test_a_file_name_that_is_not_utf8_is_a_failure_row_and_the_rest_is_scored(model, tmp_path, capsys):
    good = write_images(tmp_path / "in", 3)
    shutil.copy(good[0], os.path.join(os.fsencode(tmp_path / "in"), os.fsencode(NOT_UTF8)))
    out = tmp_path / "out"
    assert predict(model, out, tmp_path / "in") == 1
    assert [Path(r["path"]).name for r in rows(out / "scores.csv")] == [p.name for p in good]
    (failure,) = rows(out / "failures.csv")
    assert failure["path"] == f"{tmp_path / 'in'}/caf\\xe9.png" and "not valid UTF-8" in failure["reason"]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"fcdd predict: failed: {failure['path']}: {failure['reason']}",
        f"fcdd predict: 1 of 4 files failed, listed in {out / 'failures.csv'}",
    ]


def _as_nobody(argv: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """Run `fcdd` as a user without rights on a chmod-000 folder (root reads everything)."""
    if os.geteuid() != 0:
        return subprocess.run(FCDD + argv, capture_output=True, text=True, timeout=300)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the rights to read a folder")
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    env = dict(os.environ, HOME=str(tmp), MPLCONFIGDIR=str(tmp / "mpl"))
    # a checkout in a private folder (e.g. under `mktemp -d`, mode 700) keeps `nobody` from its
    # interpreter: setpriv would then exit 1 before fcdd runs, which must not pass for fcdd's exit
    probe = subprocess.run(
        drop + [sys.executable, "-c", "import fcdd.cli"], capture_output=True, text=True, env=env, cwd=tmp
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run {sys.executable} with fcdd: {probe.stderr.strip()[-200:]}")
    return subprocess.run(drop + FCDD + argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp)


def test_an_unreadable_subfolder_is_reported_like_an_unreadable_file():
    tmp = Path(tempfile.mkdtemp(prefix="fcdd-unreadable-"))  # outside root's private pytest folder
    try:
        tmp.chmod(0o777)
        model = calibrated_model(tmp / "model.pt")
        good = write_images(tmp / "in", 2)
        write_images(tmp / "in" / "locked", 2, seed=1)
        for p in [tmp, tmp / "in", model, *good]:
            p.chmod(0o777 if p.is_dir() else 0o644)
        (tmp / "in" / "locked").chmod(0)
        done = _as_nobody(["predict", "--model", str(model), "--out", str(tmp / "out"), str(tmp / "in")], tmp)
        assert done.returncode == 1, done.stderr
        assert [Path(r["path"]).name for r in rows(tmp / "out" / "scores.csv")] == [p.name for p in good]
        (failure,) = rows(tmp / "out" / "failures.csv")
        assert failure == {
            "path": str(tmp / "in" / "locked"),
            "reason": "folder not readable (Permission denied)",
        }
        assert done.stderr.splitlines()[-2:] == [
            f"fcdd predict: failed: {failure['path']}: {failure['reason']}",
            f"fcdd predict: 1 of 3 files failed, listed in {tmp / 'out' / 'failures.csv'}",
        ]
        assert "Traceback" not in done.stderr
    finally:
        (tmp / "in" / "locked").chmod(0o755)
        shutil.rmtree(tmp)


def test_a_call_that_fails_before_scoring_leaves_no_output_folder_behind(model, tmp_path, capsys):
    write_images(tmp_path / "in", 1)
    out = tmp_path / "new" / "out"
    assert predict(tmp_path / "absent.pt", out, tmp_path / "in") == 2  # the model does not load
    assert (
        capsys.readouterr().err.strip()
        == f"fcdd predict: error: {tmp_path / 'absent.pt'}: no such model file"
    )
    assert not out.exists()  # not even an empty folder holding the lock file
    kept = tmp_path / "kept"
    (kept / "mine.txt").parent.mkdir()
    (kept / "mine.txt").write_text("a folder the user made")
    assert predict(tmp_path / "absent.pt", kept, tmp_path / "in") == 2
    assert sorted(f.name for f in kept.iterdir()) == [".fcdd-predict.lock", "mine.txt"]  # theirs: kept
    assert predict(model, out, tmp_path / "in") == 0 and (out / "scores.csv").is_file()


def test_an_absent_model_file_of_an_export_folder_is_an_error_not_another_file(tmp_path, capsys):
    from fcdd.detector import Detector
    from fcdd.export import export_detector

    det = Detector.load(calibrated_model(tmp_path / "model.pt"))
    export_detector(det, "torchscript", tmp_path / "export", source="tiny")
    write_images(tmp_path / "in", 1)
    assert predict(tmp_path / "export" / "model.onnx", tmp_path / "out", tmp_path / "in") == 2
    assert capsys.readouterr().err.strip() == (
        f"fcdd predict: error: {tmp_path / 'export' / 'model.onnx'}: no such file "
        f"(the folder {tmp_path / 'export'} holds an export)"
    )
    assert predict(tmp_path / "export" / "model.ts", tmp_path / "out", tmp_path / "in") == 0


def test_out_inside_the_scored_folder_or_in_a_run_folder_is_refused(model, tmp_path, capsys):
    write_images(tmp_path / "in", 2)
    for out in (tmp_path / "in", tmp_path / "in" / "predictions"):
        assert predict(model, out, tmp_path / "in") == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith(f"fcdd predict: error: --out {out}: lies inside the scored folder")
            and "\n" not in err
        )
        assert not (out / "scores.csv").exists()
    assert predict(model, tmp_path / "in" / "x", f"{tmp_path}/in/*.png") == 0  # not recursive: fine
    assert predict(model, tmp_path / "in" / "y", f"{tmp_path}/in/**/*.png") == 2  # recursive: refused
    run = tmp_path / "runs" / "folder" / "x" / "seed0"
    run.mkdir(parents=True)
    (run / "scores.csv").write_text("path,score,label\nt.png,1.0,1\n")
    (run / "metrics.json").write_text("{}")
    capsys.readouterr()
    assert predict(model, run, tmp_path / "in" / "im000.png") == 2
    assert "is a training run's or evaluation's folder (holds metrics.json)" in capsys.readouterr().err
    assert (run / "scores.csv").read_text() == "path,score,label\nt.png,1.0,1\n"


def test_loading_a_file_that_is_not_a_model_never_suggests_unsafe_loading(tmp_path, capsys):
    write_images(tmp_path / "in", 1)
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # pickled code: refused
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    expected = {
        "module.pt": "it holds Python objects other than tensors and plain values, which fcdd never loads",
        "text.pt": "not a PyTorch file: model files are torch.save archives",
        "noise.pt": "not a PyTorch file: model files are torch.save archives",
    }
    for name, reason in expected.items():
        assert predict(tmp_path / name, tmp_path / "out", tmp_path / "in") == 2
        err = capsys.readouterr().err
        assert err == f"fcdd predict: error: {tmp_path / name}: not an FCDD model file ({reason})\n"
        assert "weights_only" not in err


def test_a_png_with_missing_rows_is_a_failure_not_a_black_image(model, tmp_path):
    from edge_files import png_bytes

    good = write_images(tmp_path / "in", 2)
    a = np.random.default_rng(1).integers(1, 256, (40, 36), dtype=np.uint8)
    (tmp_path / "in" / "cut.png").write_bytes(png_bytes(a, rows=10))
    Image.fromarray(a).save(tmp_path / "in" / "anim.gif")  # .gif: an image for every reader
    assert predict(model, tmp_path / "out", tmp_path / "in") == 1
    assert sorted(Path(r["path"]).name for r in rows(tmp_path / "out" / "scores.csv")) == sorted(
        ["anim.gif", *(p.name for p in good)]
    )
    (failure,) = rows(tmp_path / "out" / "failures.csv")
    assert Path(failure["path"]).name == "cut.png" and failure["reason"].startswith(
        "not a readable image (truncated"
    )


@pytest.mark.slow
def test_every_edge_case_is_one_line_on_stderr_never_a_traceback(tmp_path):
    """Each case in a fresh `fcdd predict` process: exit 2 (nothing scored) prints exactly one line;
    exit 1 (some files failed) one line per failed file plus the summary line; no traceback."""
    from fcdd.detector import Detector
    from fcdd.export import export_detector

    model = calibrated_model(tmp_path / "model.pt")
    good = tmp_path / "in"
    write_images(good, 2)
    odd = tmp_path / "odd"
    write_images(odd, 1)
    shutil.copy(odd / "im000.png", os.path.join(os.fsencode(odd), os.fsencode(NOT_UTF8)))
    cut = tmp_path / "cut"
    write_images(cut, 1)
    from edge_files import png_bytes

    (cut / "cut.png").write_bytes(png_bytes(np.full((20, 20), 9, np.uint8), rows=5))
    export_detector(Detector.load(model), "torchscript", tmp_path / "export", source="m")
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    (tmp_path / "file").write_text("x")
    locked = tmp_path / "locked"
    m = str(model)
    cases = {  # name: (argv after `predict`, exit status)
        "lock": (["--model", m, "--out", str(locked), str(good)], 2),
        "not utf-8": (["--model", m, "--out", str(tmp_path / "o1"), str(odd)], 1),
        "absent onnx": (
            ["--model", str(tmp_path / "export" / "model.onnx"), "--out", str(tmp_path / "o2"), str(good)],
            2,
        ),
        "out inside input": (["--model", m, "--out", str(good / "p"), str(good)], 2),
        "out in a run folder": (["--model", m, "--out", str(run), str(good)], 2),
        "out is a file": (["--model", m, "--out", str(tmp_path / "file"), str(good)], 2),
        "out under a file": (["--model", m, "--out", str(tmp_path / "file" / "sub"), str(good)], 2),
        "not a model": (
            ["--model", str(tmp_path / "module.pt"), "--out", str(tmp_path / "o3"), str(good)],
            2,
        ),
        "truncated png": (["--model", m, "--out", str(tmp_path / "o4"), str(cut)], 1),
        "out not utf-8": (
            ["--model", m, "--out", os.fsdecode(bytes(tmp_path / "o") + b"\xff"), str(good)],
            0,
        ),
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fcdd.folder_lock import folder_lock; "
         "from fcdd.predict_inputs import PREDICT_LOCK\nwith folder_lock(sys.argv[1], PREDICT_LOCK):\n"
         "    print('held', flush=True); time.sleep(300)", str(locked)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        for name, (argv, status) in cases.items():
            argv = ["predict", "--device", "cpu", "--alpha", "0.2", *argv]
            done = subprocess.run(FCDD + argv, capture_output=True, timeout=300)
            err = done.stderr.decode("utf-8").splitlines()
            assert done.returncode == status, (name, err)
            assert not any("Traceback" in line for line in err), (name, err)
            if status == 2:
                assert len(err) == 1 and err[0].startswith("fcdd predict: error: "), (name, err)
            elif status == 1:
                failed = [line for line in err if line.startswith("fcdd predict: failed: ")]
                assert len(failed) == 1 and len(err) == 2 and " files failed, listed in " in err[1], (
                    name,
                    err,
                )
            else:
                assert err == [], (name, err)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_one_large_image_costs_a_few_bytes_per_pixel(tmp_path):
    """Peak RSS of `fcdd predict` over one 3000x3000 RGB PNG against a 256 px one: scoring at the
    model's size and writing the overlay in bands costs ~10-25 bytes per pixel (the decoded image
    and the model's input transform); full-resolution float heatmaps cost ~100 (89 measured on
    main before this change). 50 megapixels must fit in 2 GB."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_predict_memory", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_predict_memory.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = tiny_detector().save(tmp_path / "model.pt")
    code = os.environ.get("FCDD_BENCH_CODE")  # another checkout's fcdd (PYTHONPATH), to compare
    peaks = {}
    for side in (256, 3000):
        (tmp_path / f"in{side}").mkdir()
        bench.write_large(tmp_path / f"in{side}" / "im.png", side)
        peaks[side] = bench.run_predict(
            model, tmp_path / f"in{side}", tmp_path / f"out{side}", "global", code
        )[0]
    per_pixel = (peaks[3000] - peaks[256]) * 2**20 / (3000**2 - 256**2)
    assert per_pixel < 40, peaks
    assert peaks[256] + per_pixel * 50e6 / 2**20 < 2048, peaks
