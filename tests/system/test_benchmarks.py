"""Benchmarks: the pieces of bench_quality / bench_inference, and a --quick smoke run of every
benchmark script (slow) so that none of them rots."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
FMNIST = ROOT / "data" / "fashion-mnist"
BENCH = ROOT / "benchmarks"
torch.set_num_threads(1)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bq = _load("bench_quality")
bi = _load("bench_inference")


def _args(*argv: str) -> argparse.Namespace:
    args = bq.parse_args([*argv, "--params", str(ROOT / "params.yaml")])
    args.profile = args.profile or "cpu"
    return args


# ------------------------------------------------------------------ bench_quality, pieces
def test_scale_epochs_keeps_the_milestone_proportions():
    job = bq.jobs_for("cifar10", _args("--dataset", "cifar10", "--profile", "paper", "--epochs", "150"))[0]
    cfg = bq.load_job_config(job)
    assert (cfg.train.epochs, cfg.train.milestones) == (150, [100, 125])  # 400/500 of 600
    bq.scale_epochs(cfg, 3)
    assert (cfg.train.epochs, cfg.train.milestones) == (3, [2, 2])
    with pytest.raises(bq.BenchError, match="--epochs 0"):
        bq.scale_epochs(cfg, 0)


def test_jobs_use_the_presets_not_the_main_jobs_sections():
    """params.yaml's top-level sections (fmnist, 3 epochs) configure the main job, not a benchmark."""
    job = bq.jobs_for("cifar10", _args("--dataset", "cifar10", "--profile", "paper"))[0]
    cfg = bq.load_job_config(job)
    assert (cfg.data.dataset, cfg.model.net, cfg.train.epochs) == ("cifar10", "cnn32", 600)
    assert len(bq.jobs_for("cifar10", _args("--dataset", "cifar10", "--profile", "paper"))) == 10
    assert [j.cls for j in bq.jobs_for("cifar10", _args("--dataset", "cifar10"))] == [
        "airplane",
        "automobile",
    ]


def test_mvtec_jobs_settings_presets_and_paper_values():
    jobs = bq.jobs_for("mvtec", _args("--dataset", "mvtec"))
    assert [(j.cls, j.setting) for j in jobs] == [
        ("grid", "confetti"),
        ("grid", "semi"),
        ("hazelnut", "confetti"),
        ("hazelnut", "semi"),
    ]
    assert jobs[1].presets == ["mvtec", "cpu_mvtec", "mvtec_semi"]  # semi last: its real defects win
    assert (jobs[0].paper_pixel, jobs[1].paper_pixel) == (0.91, 0.95)
    assert jobs[2].paper_pixel is None and "not MVTec" in jobs[2].paper_note
    cfg = bq.load_job_config(jobs[1])
    assert (cfg.anomalies.kind, cfg.model.pretrained, cfg.data.classes) == ("semi", False, ["grid"])
    assert (
        bq.load_job_config(jobs[0]).anomalies.kind == "confetti"
    )  # as the setting says, under cpu_mvtec too
    from fcdd.experiment import run_dir_for

    run_dirs = {run_dir_for(bq.load_job_config(j), j.cls, 0) for j in jobs}
    assert len(run_dirs) == 4  # confetti and semi runs of a class do not overwrite each other


def test_magnetic_tile_is_a_folder_dataset_with_masks_beside_the_images():
    (job,) = bq.jobs_for("magnetic_tile", _args("--dataset", "magnetic_tile"))
    cfg = bq.load_job_config(job)
    assert cfg.data.dataset == "folder"
    assert cfg.data.folder.nominal == ["MT_Free/Imgs"] and len(cfg.data.folder.anomalous) == 5
    assert cfg.data.folder.masks == ["MT_*/Imgs/*.png"] and cfg.data.train_limit == 48


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(bq.BenchError, match="--weights .*no such file"):
        bq.jobs_for("mvtec", _args("--dataset", "mvtec", "--weights", str(tmp_path / "vgg.pth")))
    with pytest.raises(bq.BenchError, match="only the VGG datasets"):
        bq.jobs_for("fmnist", _args("--dataset", "fmnist", "--weights", str(tmp_path / "vgg.pth")))
    with pytest.raises(bq.BenchError, match="--classes jacket"):
        bq.jobs_for("fmnist", _args("--dataset", "fmnist", "--classes", "jacket"))
    with pytest.raises(bq.BenchError, match="--from-runs"):
        bq.rows_from_runs(str(tmp_path))


def test_weights_freeze_the_first_layers_as_the_paper(tmp_path):
    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"x")
    (job,) = bq.jobs_for("mvtec", _args("--dataset", "mvtec", "--classes", "grid", "--setting", "confetti",
                                        "--weights", str(weights)))  # fmt: skip
    cfg = bq.load_job_config(job)
    assert (cfg.model.weights_path, cfg.model.freeze) == (str(weights), 15)


def test_fmnist_classes_by_name_slug_or_index():
    jobs = bq.jobs_for("fmnist", _args("--dataset", "fmnist", "--classes", "T-shirt/top", "7", "ankle-boot"))
    assert [(j.cls, j.paper_image) for j in jobs] == [
        ("t-shirt-top", 0.82),
        ("sneaker", 0.99),
        ("ankle-boot", 0.94),
    ]


def test_epochs_for_budget_from_the_slowest_job():
    probe = [
        bq.Row("cifar10", "a", "oe", wall_s=30.0, train_s=4.0, last_epoch_s=1.5),
        bq.Row("cifar10", "b", "oe", wall_s=20.0, train_s=4.0, last_epoch_s=2.0),
        bq.Row("cifar10", "c", "oe", error="exit status 1"),
    ]
    # fixed = 30 - 4 + 5 = 31 s; (0.9 * 200 - 31) / 2.0 = 74.5
    assert bq.epochs_for_budget(probe, 200.0) == 74
    assert bq.epochs_for_budget(probe, 20.0) == 0
    with pytest.raises(bq.BenchError, match="probe failed"):
        bq.epochs_for_budget(probe[2:], 200.0)


def test_rows_from_runs_and_table(tmp_path):
    for cls, auc in (("t-shirt-top", 0.80), ("trouser", 0.96)):
        d = tmp_path / cls / "seed0"
        d.mkdir(parents=True)
        metrics = {
            "image_auc": auc,
            "pixel_auc": None,
            "dataset": "fmnist",
            "class": cls,
            "seed": 0,
            "epochs": 3,
        }
        (d / "metrics.json").write_text(json.dumps(metrics))
    rows = bq.rows_from_runs(str(tmp_path))
    assert [(r.cls, r.image_auc, r.paper_image) for r in rows] == [
        ("t-shirt-top", 0.8, 0.82),
        ("trouser", 0.96, 0.98),
    ]
    table = bq.format_table(rows + [bq.Row("fmnist", "bag", "seed 0", error="timed out")])
    assert "| fmnist | trouser | seed 0 | 0.960 | 0.980 |" in table
    assert "**mean of 2**" in table and "**0.880**" in table and "0.900" in table  # failed row left out
    assert "failed: timed out" in table


@pytest.mark.slow  # a child process imports torch: ~5 s
def test_run_children_reports_a_failing_job_without_stopping(tmp_path):
    bad = bq.Job(
        "fmnist", "sneaker", "oe", ["fmnist"], ["data.root=/nonexistent"], params=str(ROOT / "params.yaml")
    )
    (row,) = bq.run_children([bad], tmp_path, parallel=1, timeout=60)
    assert row.error.startswith("exit status") and row.image_auc is None
    assert "nonexistent" in next((tmp_path / "logs").glob("*.log")).read_text()


# ------------------------------------------------------------------ bench_inference, pieces
def test_inference_timing_counts_images_per_second():
    det = bi.make_detector("cnn28", 28, torch.device("cpu"))
    t = bi.bench_tensor(det, batch=4, amp=False, min_calls=3, min_seconds=0.0)
    assert t.calls == 3 and t.seconds_per_call > 0
    assert t.images_per_s == pytest.approx(4 / t.seconds_per_call)
    s = bi.bench_images(det, batch=2, side=40, min_calls=1, min_seconds=0.0)
    assert s.mode == "score(uint8 40px)" and s.images_per_s > 0


# ------------------------------------------------------------------ smoke: every script's --quick
def _run(cmd: list[str], timeout: int, env: dict | None = None) -> str:
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_bench_inference_quick_prints_its_table():
    out = _run([sys.executable, "benchmarks/bench_inference.py", "--quick", "--threads", "2"], 180)
    rows = _table_rows(out, "| net | device |")
    assert [(r[0], r[3]) for r in rows] == [("vgg11_bn", "1"), ("vgg11_bn", "16"), ("vgg11_bn", "16")]
    assert all(float(r[6]) > 0 for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_bench_quality_quick_prints_its_table(tmp_path):
    datasets = ["cifar10", "mvtec", "magnetic_tile"]
    if Path("/usr/share/datasets/fashion-mnist").is_dir() or (ROOT / "data" / "fashion-mnist").is_dir():
        datasets.insert(0, "fmnist")
    out = _run(
        [sys.executable, "benchmarks/bench_quality.py", "--quick", "--dataset", *datasets,
         "--output-dir", str(tmp_path), "-o", f"data.cache_dir={ROOT / 'cache'}"],
        300,
    )  # fmt: skip
    rows = _table_rows(out, "| dataset | class |")
    assert [r[0] for r in rows] == datasets
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(0.0 <= r["image_auc"] <= 1.0 and not r["error"] for r in results)
    pixel = {r["dataset"]: r["pixel_auc"] for r in results}
    assert 0 <= pixel["mvtec"] <= 1 and 0 <= pixel["magnetic_tile"] <= 1 and pixel["cifar10"] is None


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "mvtec_ad_subset").is_dir(), reason="../shared/data is absent")
def test_bench_quality_trains_from_a_local_weights_file(tmp_path):
    """--weights: the pretrained path of the MVTec benchmark, with a torchvision-format VGG11-BN
    file this test writes (no real ImageNet weights exist here): the first 15 modules keep the
    file's values through training, the rest train."""
    from fcdd.detector import Detector
    from fcdd.models.vgg import vgg11_bn_features

    torch.manual_seed(3)
    features = vgg11_bn_features()
    for p in features.parameters():
        p.data.normal_(0, 0.05)  # values a fresh init would never produce
    weights = tmp_path / "vgg11_bn.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, weights)
    _run(
        [sys.executable, "benchmarks/bench_quality.py", "--quick", "--dataset", "mvtec", "--classes", "grid",
         "--setting", "confetti", "--weights", str(weights), "--output-dir", str(tmp_path / "out"),
         "-o", f"data.cache_dir={ROOT / 'cache'}"],
        240,
    )  # fmt: skip
    (model_file,) = (tmp_path / "out").rglob("model.pt")
    trained = list(Detector.load(model_file).model.features.children())
    loaded = list(features.children())
    for i in range(15):  # frozen: weights and BatchNorm statistics exactly as in the file
        for k, v in loaded[i].state_dict().items():
            assert torch.equal(trained[i].state_dict()[k], v), f"module {i} {k} changed"
    assert not torch.equal(trained[15].weight, loaded[15].weight)  # the 4th conv block trained


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cifar10_jpeg.zip").is_file(), reason="../shared/data is absent")
def test_gpu_suite_quick_runs_every_part(tmp_path):
    """The device run's script, on this machine: same commands, tiny settings, 2 classes."""
    device_dir = ROOT / ".device"
    if not (device_dir / "cifar10_jpeg.zip").is_file() or not (device_dir / "oe_pool.zip").is_file():
        pytest.skip(
            ".device/cifar10_jpeg.zip and .device/oe_pool.zip are made by hand (benchmarks/README.md)"
        )
    if not any(
        p.is_dir() for p in (device_dir / "fmnist", FMNIST, Path("/usr/share/datasets/fashion-mnist"))
    ):
        pytest.skip("no Fashion-MNIST (.device/fmnist, data/fashion-mnist or Debian's package)")
    out = tmp_path / "out"
    env = {"GPU_SUITE_QUICK": "1", "OUT": str(out), "GPU_SUITE_RUNS": str(tmp_path / "runs"),
           "PYTHON": sys.executable}  # fmt: skip
    _run(["bash", "benchmarks/gpu_suite.sh"], 1200, env)  # ~2.5 min on an idle 2-core CPU, 6 when shared
    assert sorted(p.name for p in out.iterdir()) == [
        "details.tar.gz",
        "suite.log",
        "summary.txt",
        "tables.md",
    ]
    summary = (out / "summary.txt").read_text()
    for name in ("packed", "fmnist_packed", "inference", "cifar10"):
        assert f"{name}: exit 0" in summary, summary
    # quick mode only checks that these start (8 s each); on a GPU they run in full
    assert "train_overhead: exit" in summary and "train_compiled: exit" in summary
    tables = (out / "tables.md").read_text()
    assert "EXTRAPOLATED full protocol (3 epochs)" in tables  # the packed protocol hit its cap
    assert [r[1] for r in _table_rows(tables, "| dataset | class |")][:2] == ["airplane", "automobile"]
    assert [r[0] for r in _table_rows(tables, "| class | image AUC |")][:2] == ["t-shirt-top", "trouser"]
    with tarfile.open(out / "details.tar.gz") as tar:
        names = tar.getnames()
    assert sum(n.startswith("./cifar10/probe/logs/") and n.endswith(".log") for n in names) == 2
    assert "./fmnist/results.json" in names

    (out / "summary.txt").unlink()  # a part whose data are missing is skipped, and says why
    env.update(GPU_SUITE_QUICK="0", GPU_SUITE_PARTS="fmnist", GPU_SUITE_FMNIST=str(tmp_path / "nowhere"))
    _run(["bash", "benchmarks/gpu_suite.sh"], 120, env)
    assert f"fmnist: skipped, missing {tmp_path / 'nowhere'}" in (out / "summary.txt").read_text()


@pytest.mark.slow
def test_bench_train_overhead_quick_prints_its_table():
    out = _run([sys.executable, "benchmarks/bench_train_overhead.py", "--quick", "--threads", "2"], 240)
    assert "CPU: " in out and "device: cpu" in out  # the machine header
    rows = _table_rows(out, "| net | freeze |")
    assert [(r[0], r[1]) for r in rows] == [
        ("cnn28", "0"),
        ("cnn32", "0"),
        ("vgg11_bn", "15"),
        ("vgg11_bn", "0"),
    ]
    assert all(0.2 < float(r[7]) < 5 for r in rows)  # plain engine/bare wall ratio: same work, same order
    for r in rows:  # images/s = batch / (s/step); s/step is printed to 4 decimals only
        for s_col, img_col in ((4, 10), (5, 11), (6, 12)):
            assert float(r[img_col]) == pytest.approx(int(r[2]) / float(r[s_col]), rel=0.02)
        assert float(r[8]) == pytest.approx(float(r[4]) / float(r[6]), rel=0.02)


@pytest.mark.slow
def test_bench_pixel_auc_quick_prints_its_tables():
    out = _run([sys.executable, "benchmarks/bench_pixel_auc.py", "--quick"], 180)
    (row,) = _table_rows(out, "| pixels | update s |")
    assert float(row[0]) == 1e7 and 0.5 < float(row[6]) <= 1.0
    (err,) = _table_rows(out, "| pixels | PixelAUC (float32) |")
    assert float(err[3]) < 1e-6  # streamed AUC equals sklearn's


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED / "mvtec_ad_subset").is_dir() or not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="needs ../shared/data and Debian's Fashion-MNIST",
)
def test_bench_data_loading_quick_prints_its_table():
    out = _run([sys.executable, "benchmarks/bench_data_loading.py", "--quick", "--device", "cpu"], 240)
    rows = _table_rows(out, "| case |")
    assert [r[0] for r in rows] == ["fmnist/cnn28", "mvtec-grid/vgg11_bn"]
    assert all(float(r[-1]) > 0 and float(r[-2]) > 0 for r in rows)  # train and loader images/s


@pytest.mark.slow
def test_bench_cpu_levers_prints_every_lever_with_its_ratio():
    out = _run(
        [sys.executable, "benchmarks/bench_cpu_levers.py", "--net", "cnn28", "--steps", "1", "--rounds", "1"],
        240,
    )
    assert "CPU: " in out
    rows = _table_rows(out, "| net | lever")
    assert [r[1] for r in rows] == [
        "fp32 eager",
        "channels-last",
        "bf16 autocast",
        "bf16 + channels-last",
        "bf16 + cl, oneDNN off",
        "fp32, oneDNN off",
    ]
    assert float(rows[0][3]) == 1.0 and all(float(r[2]) > 0 for r in rows)


def test_folding_frozen_batchnorm_is_exact_in_eval_mode():
    from fcdd.models import build_net

    fold_frozen_batchnorm = _load("bench_cpu_levers").fold_frozen_batchnorm

    torch.manual_seed(0)
    net = build_net("vgg11_bn", 32, 3, freeze=15).train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics far from the identity
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    folded = copy.deepcopy(net)
    assert fold_frozen_batchnorm(folded) == 4  # the BatchNorms of the four frozen convolutions
    folded.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
    trainable = [n for n, p in folded.named_parameters() if p.requires_grad]
    assert trainable == [n for n, p in net.named_parameters() if p.requires_grad]


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED / "imagenet1k_samples").is_dir() or not FMNIST.is_dir(),
    reason="needs ../shared/data and data/fashion-mnist",
)
def test_bench_thread_split_prints_every_split():
    out = _run([sys.executable, "benchmarks/bench_thread_split.py", "--rounds", "1", "--limit", "256"], 300)
    assert "CPU: " in out
    rows = _table_rows(out, "| torch threads")
    assert [(r[0], r[1]) for r in rows] == [("2", "2"), ("2", "0"), ("2", "1"), ("1", "1"), ("1", "2")]
    assert float(rows[0][3]) == 1.0 and all(float(r[2]) > 0 for r in rows)


@pytest.mark.slow
def test_bench_packed_quick_compares_packed_and_separate():
    out = _run([sys.executable, "benchmarks/bench_packed.py", "--quick"], 240)
    rows = _table_rows(out, "| net | K")
    assert [(r[0], r[1]) for r in rows] == [("cnn28", "1"), ("cnn28", "3")]
    for r in rows:  # the ratio column is packed img/s over separate img/s
        assert float(r[5]) == pytest.approx(float(r[4]) / float(r[3]), rel=0.02)


def test_bench_mask_iou_reports_masks_at_any_alpha(defect_folder, make_folder_config, tmp_path, capsys):
    """The script rebuilds the run's own test split: at the reported alphas it gives the run's
    metrics.json numbers; below 1/(n+1) nothing is flagged; above it the threshold is the conformal one."""
    from fcdd.calibration import pixel_threshold
    from fcdd.experiment import run_experiment

    bm = _load("bench_mask_iou")
    cfg = make_folder_config(defect_folder, tmp_path, "train.epochs=2")
    run = run_experiment(cfg, "tiles", seed=0)
    calib = torch.load(run.model_path, weights_only=True)["meta"]["calibration"]
    assert calib["n"] == 15  # min alpha 1/16: alpha 0.05 flags nothing, 0.5 does
    result = bm.mask_table(str(run.model_path), [0.05, 0.5], [])
    at = {r["alpha"]: r for r in result["rows"]}
    assert at[0.05]["iou"] == pytest.approx(run.metrics["a0.05_mask_iou"])
    assert result["oracle_mask_iou"] == pytest.approx(run.metrics["oracle_mask_iou"])
    assert at[0.05]["pixel_threshold"] == float("inf") and at[0.05]["good_images_flagged"] == 0
    assert at[0.5]["pixel_threshold"] == pytest.approx(sorted(calib["pixel_max"])[7])  # ceil(16 * 0.5)-th
    assert at[0.5]["pixel_threshold"] == pytest.approx(pixel_threshold(calib, 0.5))
    assert at[0.5]["iou"] > 0 and at[0.5]["recall"] > 0
    assert bm.main([str(run.model_path), "--alpha", "0.5"]) == 0
    assert "| 0.5 |" in capsys.readouterr().out
    # An uncalibrated model and a bad alpha: one line each, exit status 2.
    state = torch.load(run.model_path, weights_only=True)
    state["meta"].pop("calibration")
    torch.save(state, tmp_path / "uncalibrated.pt")
    assert bm.main([str(tmp_path / "uncalibrated.pt")]) == 2
    assert bm.main([str(run.model_path), "--alpha", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no calibration" in err[0] and "--alpha" in err[1]


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED / "imagenet1k_samples").is_dir() or not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="needs ../shared/data (the OE pool) and Debian's Fashion-MNIST",
)
def test_bench_end_to_end_quick_compares_the_three_paths():
    out = _run([sys.executable, "benchmarks/bench_end_to_end.py", "--quick"], 240)
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("| case"))
    assert [c.strip() for c in header.strip("|").split("|")][2:5] == ["previous", "fast step", "fast"]
    row = next(line for line in lines if line.startswith("| Fashion-MNIST"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[1]) == 256  # images per epoch: the quick limit
    rates = [float(c) for c in cells[2:]]
    assert all(r > 0 for r in rates)
    assert rates[4] == pytest.approx(rates[2] / rates[0], abs=0.01)  # fast / previous, from its columns


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="no Chromium at /usr/bin/chromium to drive"
)
def test_bench_app_quick_prints_its_table():
    out = _run([sys.executable, "benchmarks/bench_app.py", "--quick"], 600)
    assert "| 1-megapixel JPEG: open page, upload, heatmap painted |" in out
    assert "| 40 images scored through the page |" in out and "progress lines seen" in out


# ------------------------------------------------------------------ bench_checkouts
def test_bench_checkouts_ratios_are_new_over_old_per_round():
    bc = _load("bench_checkouts")

    def row(r, tree, mode, result):
        return {"round": r, "tree": tree, "mode": mode, "result": result}

    rows = [
        row(0, "old", "packed", {"cpu_s": 2.0, "epoch_s": 1.0}),
        row(0, "new", "packed", {"cpu_s": 2.2, "epoch_s": 0.5}),
        row(1, "new", "packed", {"cpu_s": 1.8, "epoch_s": 1.0}),
        row(1, "old", "packed", {"cpu_s": 2.0, "epoch_s": 1.0}),
        row(2, "old", "packed", {"cpu_s": 9.0, "epoch_s": 9.0}),  # a round without its new half: left out
        row(0, "old", "overhead", {"image": 0.010, "pixel": 0.020}),
        row(0, "new", "overhead", {"image": 0.011, "pixel": 0.020}),
    ]
    found = {(label, clock): vals for label, clock, vals in bc.ratios(rows)}
    assert found[("packed K=2, tiny nets", "CPU")] == pytest.approx([1.1, 0.9])
    assert found[("packed K=2, tiny nets", "wall")] == pytest.approx([0.5, 1.0])
    assert found[("loop overhead, tiny net, image loss", "CPU")] == pytest.approx([1.1])
    text = bc.summary(rows)
    assert "| packed K=2, tiny nets | CPU | 1.000 | 1.10 0.90 | 0.90-1.10 |" in text
    assert "noise" not in text  # no bare step measured: no noise line
    with pytest.raises(SystemExit):
        bc.main([str(ROOT), str(ROOT / "docs")])  # not a checkout: refused before any work


@pytest.mark.slow
def test_bench_checkouts_quick_compares_a_checkout_with_itself(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    out = _run(
        [sys.executable, "benchmarks/bench_checkouts.py", ".", ".", "--quick", "--jsonl", str(jsonl)], 600
    )
    assert "CPU: " in out and "device: cpu" in out
    rows = _table_rows(out, "| measure | clock |")
    assert [(r[0], r[1]) for r in rows] == [
        ("loop overhead, tiny net, image loss", "CPU"),
        ("loop overhead, tiny net, pixel loss", "CPU"),
        ("packed K=2, tiny nets", "CPU"),
        ("packed K=2, tiny nets", "wall"),
    ]
    assert all(float(r[2]) > 0 for r in rows)
    measured = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted((m["tree"], m["mode"]) for m in measured) == [
        ("new", "overhead"), ("new", "packed"), ("old", "overhead"), ("old", "packed"),
    ]  # fmt: skip
