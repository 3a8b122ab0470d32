"""`fcdd predict` as a user runs it: number validation, per-file failures, bounded memory."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_fixtures import tiny_detector

from fcdd import heatmaps as figs
from fcdd.cli import main
from fcdd.data import image_io
from fcdd.detector import full_heatmap, to_pil
from fcdd.predict import Reservoir, predict_files

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def write_images(folder: Path, n: int, size: tuple[int, int] = (40, 36), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(folder / f"im{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.fixture
def model(tmp_path) -> Path:
    return tiny_detector().save(tmp_path / "model.pt")


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "-1"], "--batch-size: must be an integer >= 1, got -1"),
        (["--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
        (["--batch-size", "two"], "--batch-size: must be an integer >= 1, got 'two'"),
        (["--threshold", "nan"], "--threshold: must be a finite number, got 'nan'"),
        (["--threshold=-inf"], "--threshold: must be a finite number, got '-inf'"),
    ],
)
def test_numbers_are_validated_before_any_work(model, tmp_path, capsys, args, message):
    write_images(tmp_path / "in", 1)
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", str(model), "--out", str(tmp_path / "o"), *args, str(tmp_path / "in")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_and_missing_cuda_are_one_line_errors(model, tmp_path, capsys):
    write_images(tmp_path / "in", 1)
    (tmp_path / "taken").write_text("x")
    assert (
        main(["predict", "--model", str(model), "--out", str(tmp_path / "taken"), str(tmp_path / "in")]) == 2
    )
    assert "--out " in capsys.readouterr().err
    if not torch.cuda.is_available():
        argv = [
            "predict",
            "--model",
            str(model),
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "o"),
            str(tmp_path / "in"),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fcdd predict: error: --device 'cuda'") and "\n" not in err


def test_unreadable_and_over_size_files_are_listed_not_fatal(model, tmp_path, capsys, monkeypatch):
    good = write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(good[0].read_bytes()[:50])
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(tmp_path / "in" / "huge.png")
    monkeypatch.setattr(image_io, "MAX_PIXELS", 50 * 50)
    out = tmp_path / "pred"
    assert (
        main(["predict", "--model", str(model), "--out", str(out), "--device", "cpu", str(tmp_path / "in")])
        == 1
    )
    scored = rows(out / "scores.csv")
    assert [Path(r["path"]).name for r in scored] == [p.name for p in good]
    assert all((out / r["heatmap"]).is_file() for r in scored)
    failures = {Path(r["path"]).name: r["reason"] for r in rows(out / "failures.csv")}
    assert set(failures) == {"broken.png", "huge.png"}
    assert failures["huge.png"] == "image of 60x60 pixels exceeds the limit of 2500 pixels"
    assert "not a readable image" in failures["broken.png"]
    err = capsys.readouterr().err
    assert f"failed: {tmp_path / 'in' / 'huge.png'}: image of 60x60" in err
    assert "2 of 5 files failed" in err
    # a clean call into the same folder leaves no stale failure list behind
    assert (
        main(["predict", "--model", str(model), "--out", str(out), "--device", "cpu", *map(str, good)]) == 0
    )
    assert not (out / "failures.csv").exists() and len(rows(out / "scores.csv")) == 3


def test_global_colour_scale_equals_the_one_over_all_maps(tmp_path):
    det = tiny_detector()
    paths = write_images(tmp_path / "in", 5, size=(33, 47))
    result = predict_files(det, paths, tmp_path / "out", batch_size=2, normalisation="global")
    assert result.scored == result.heatmaps == 5 and not result.failures
    ups = np.stack(det.score(paths, full_size=False).heatmaps)  # 28x28 maps: every value is sampled
    low = ups.min()
    high = np.quantile(ups - low, det.meta.get("quantile", 0.97))
    for i, (p, up) in enumerate(zip(paths, ups, strict=True)):
        heat = np.clip((full_heatmap(up, (33, 47)) - low) / high, 0, 1)
        expected = figs.overlay(np.asarray(to_pil(p).convert("RGB")), heat)
        got = np.asarray(Image.open(tmp_path / "out" / f"{i:04d}_{p.stem}_heatmap.png"))[:33, :47]
        assert np.abs(got.astype(int) - expected).max() <= 1  # the image part; the legend below it
    assert not list((tmp_path / "out").glob(".fcdd-maps-*"))  # the temporary maps are gone


def test_reservoir_is_a_uniform_sample():
    values = np.random.default_rng(3).standard_normal(400_000).astype(np.float32)
    r = Reservoir(size=20_000, seed=0)
    for chunk in np.array_split(values, 97):
        r.add(chunk)
    assert r.seen == len(values) and len(r.sample()) == 20_000
    for q in (0.5, 0.97):
        assert abs(np.mean(values <= np.quantile(r.sample(), q)) - q) < 0.01


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(model, tmp_path):
    """Peak RSS of a `fcdd predict` process over 3 and 12 images of 1024x1024 px. A full-resolution
    float32 heatmap is 4 MB, so keeping them all for the colour scale (the old behaviour) adds
    more than 36 MB for the 9 extra images; streaming adds ~nothing."""
    spec = importlib.util.spec_from_file_location(
        "bench_predict_memory", REPO / "benchmarks" / "bench_predict_memory.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    peaks = {}
    for n in (3, 12):
        bench.write_images(tmp_path / f"in{n}", n, 1024)
        peaks[n] = bench.peak_rss_mb(model, tmp_path / f"in{n}", tmp_path / f"out{n}")
    assert peaks[12] - peaks[3] < 15, peaks
