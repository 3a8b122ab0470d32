"""The DVC pipeline: data.dvc's pinned hash, the stages' outputs, and `dvc repro` end to end."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import report as report_stage

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
FMNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
OE_SAMPLES = REPO.parent / "shared" / "data" / "imagenet1k_samples"


def setup_checksums() -> dict[str, str]:
    text = (REPO / "scripts" / "setup_data.sh").read_text()
    return dict(re.findall(r"\[([\w.-]+\.gz)\]=([0-9a-f]{32})", text))


def test_setup_checksums_reproduce_the_hash_data_dvc_records():
    """DVC's directory hash is the md5 of the sorted (md5, relpath) listing: recompute it."""
    md5 = setup_checksums()
    assert sorted(md5) == sorted(FMNIST_FILES)
    listing = [{"md5": md5[name], "relpath": name} for name in sorted(md5)]
    dir_hash = hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest()
    (out,) = yaml.safe_load((REPO / "data.dvc").read_text())["outs"]
    assert out["path"] == "data/fashion-mnist" and out["nfiles"] == 4
    assert out["md5"] == f"{dir_hash}.dir"


def run_setup_data(tmp_path: Path, mirror: Path) -> subprocess.CompletedProcess:
    """scripts/setup_data.sh in a scratch checkout, from a given mirror, without apt or DVC."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy2(REPO / "scripts" / "setup_data.sh", tmp_path / "scripts" / "setup_data.sh")
    env = {**os.environ, "FCDD_FMNIST_MIRROR": str(mirror), "FCDD_NO_APT": "1", "DVC": "/nonexistent"}
    return subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup_data.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_setup_data_copies_a_mirror_and_rejects_other_bytes(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(fmnist_source(), mirror)
    done = run_setup_data(tmp_path, mirror)
    assert done.returncode == 0, done.stderr
    copied = tmp_path / "data" / "fashion-mnist"
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in copied.iterdir()} == setup_checksums()

    (copied / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    failed = run_setup_data(tmp_path, mirror)
    assert failed.returncode == 1
    assert "data/fashion-mnist/t10k-labels-idx1-ubyte.gz has md5" in failed.stderr
    assert "expects 0d30e22e447f3c33dab9ed536400ac01" in failed.stderr

    shutil.rmtree(copied)
    failed = run_setup_data(tmp_path, tmp_path / "no-mirror")
    assert failed.returncode == 1 and re.search(r"fashion-mnist/[\w-]+\.gz is missing", failed.stderr)
    assert "FCDD_FMNIST_MIRROR" in failed.stderr


def test_top_metrics_keep_numbers_and_drop_missing_metrics():
    summary = {
        "per_class": {
            "0": {
                "image_auc": {"mean": 0.8, "std": 0.1, "n": 2},
                "pixel_auc": {"mean": None, "std": None, "n": 0},
            }
        },
        "mean": {"image_auc": 0.8, "pixel_auc": None},
    }
    top = evaluate_stage.top_metrics("fmnist", summary)
    assert top == {
        "dataset": "fmnist",
        "mean": {"image_auc": 0.8},
        "per_class": {"0": {"image_auc": 0.8, "image_auc_std": 0.1, "runs": 2}},
    }


def test_report_lists_classes_mean_and_the_paper_figure():
    summary = {
        "dataset": "fmnist",
        "quantile": 0.85,
        "metrics": {
            "per_class": {"6": {"image_auc": 0.7, "image_auc_std": 0.02, "runs": 2}},
            "mean": {"image_auc": 0.7},
        },
        "figures": ["shirt.png"],
        "config": {"train.epochs": 3},
    }
    text = report_stage.render(summary)
    assert "| 6 | 0.7000 ± 0.0200 | – | – | 2 | 0.7500 |" in text  # class 6 = shirt: paper 0.75
    assert "**0.7000**" in text and "`train.epochs`: 3" in text
    assert "![shirt](evaluate/heatmaps/shirt.png)" in text
    assert report_stage.paper_auc("fmnist", "ankle boot") == 0.94
    assert report_stage.paper_auc("fmnist", "t-shirt-top") == 0.82  # fcdd.data's class slug
    assert report_stage.paper_auc("mvtec", "grid") is None
    assert "No calibrated decisions" in text  # rows without calibration_n


def test_report_shows_the_calibrated_decision_table():
    row = {"class": "trouser", "seed": 0, "calibration_n": 600, "a0.05_far": 0.048,
           "a0.05_far_ci_low": 0.0357, "a0.05_far_ci_high": 0.0632, "a0.05_far_expected_low": 0.03,
           "a0.05_far_expected_high": 0.074, "a0.05_detection_rate": 0.9,
           "a0.05_f1": 0.5, "oracle_f1": 0.7}  # fmt: skip
    summary = {"dataset": "fmnist", "metrics": {"per_class": {}, "mean": {}}, "rows": [row]}
    text = report_stage.render(summary)
    assert "target alpha 0.05" in text
    assert (
        "| trouser | 0 | 600 | 0.05 | 0.0480 [0.0357, 0.0632] | [0.0300, 0.0740] | 0.9000 | 0.5000 | 0.7000 | – | – |"
        in text
    )


# ---------------------------------------------------------------- dvc repro, end to end


def run(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def fmnist_source() -> Path:
    for folder in (REPO / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")):
        if all((folder / f).is_file() for f in FMNIST_FILES):
            return folder
    pytest.skip("Fashion-MNIST is not here: run scripts/setup_data.sh")


def tiny_params(path: Path, classes: list[str], tracking: dict | None = None, main_job: bool = False) -> None:
    """The repository's params.yaml, cut down to seconds: few images, one epoch; MLflow off, or on
    with the given ``tracking`` settings (no ONNX export: it adds nothing the test looks at).
    ``main_job``: keep what the main job runs with (data loader workers, the cpu preset's threads,
    registration) and train two epochs, so that a checkpoint is written and read mid-run."""
    params = yaml.safe_load(path.read_text())
    params["data"].update(classes=classes, train_limit=128, test_limit=128)
    params["train"].update(epochs=2 if main_job else 1, device="cpu", progress=False, batch_size=64)
    if not main_job:
        params["data"]["num_workers"] = 0
        params["train"]["threads"] = 1
    params["evaluation"].update(heatmap_count=4, batch_size=128)
    params["tracking"].update(
        enabled=tracking is not None, **({"onnx": False, **tracking} if tracking else {})
    )
    if OE_SAMPLES.is_dir():
        params["anomalies"].update(oe_source=str(OE_SAMPLES), oe_limit=32)
    else:  # a user's machine: no OE pool at hand; one-class training alone still trains and scores
        params["anomalies"]["kind"] = "none"
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_pipeline_repo(
    repo: Path, prefect_home: Path, tracking: dict | None = None, main_job: bool = False
) -> dict:
    """A fresh git + DVC repository at ``repo`` holding this checkout's files and the raw data;
    returns the environment the stages run in."""
    source = fmnist_source()
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in listed:
        if rel.startswith(".dvc/") or not (REPO / rel).is_file():
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    shutil.copytree(source, repo / "data" / "fashion-mnist")
    tiny_params(repo / "params.yaml", ["0", "1", "2"] if main_job else ["0", "1"], tracking, main_job)

    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # the stages' `python` is this venv's
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DVC_NO_ANALYTICS="1",
        MPLBACKEND="Agg",
        **({} if main_job else {"OMP_NUM_THREADS": "1"}),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    env.pop("MLFLOW_TRACKING_URI", None)  # params.yaml names the store
    dvc = str(VENV_BIN / "dvc")
    run(["git", "init", "-q"], repo, env)
    run([dvc, "init", "-q"], repo, env)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copy2(REPO / ".dvcignore", repo / ".dvcignore")
    run([dvc, "commit", "-f", "-q", "data.dvc"], repo, env)  # the copied files match data.dvc
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], repo, env)
    return env


@pytest.fixture
def pipeline_repo(tmp_path: Path) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    return repo, make_pipeline_repo(repo, tmp_path / "prefect")


def locked_outs(repo: Path) -> dict[str, str]:
    """'stage: path' -> md5 of every output dvc.lock records."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        f"{stage}: {out['path']}": out["md5"]
        for stage, entry in lock["stages"].items()
        for out in entry.get("outs", [])
    }


def differing_files(a: Path, b: Path) -> list[str]:
    """Files under two output paths (file or folder) whose bytes differ, or that only one has."""

    def digests(root: Path) -> dict[str, str]:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        return {str(p.relative_to(root.parent)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}

    da, db = digests(a), digests(b)
    return sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)  # two whole pipelines; ~11 min on a busy 2-core machine
def test_dvc_repro_in_two_folders_locks_the_same_outputs(tmp_path):
    """Two clones in different folders, each `dvc repro --force` with MLflow tracking into one SQLite
    store (so run ids and registry versions differ between the two; artifacts in each clone's own
    folder): dvc.lock records the same hash for every output. Run-specific metadata (ids, versions,
    attempts, durations, absolute paths, tracking settings) stays out of the outputs. The main job's
    path (issue 28.7): the Prefect flow with tracking and registration on, the loader workers and
    threads of the cpu preset, three classes of two epochs (checkpoints written and resumed)."""
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    repos = [tmp_path / "first" / "repo", tmp_path / "second-clone" / "fcdd"]
    dvc = str(VENV_BIN / "dvc")
    for repo in repos:
        tracking = {"uri": store, "artifact_location": str(repo.parent / "mlartifacts")}
        env = make_pipeline_repo(repo, repo.parent / "prefect", tracking, main_job=True)
        done = run([dvc, "repro", "--force"], repo, env)
        assert ran_stages(done.stdout) == {"prepare", "train", "evaluate", "report"}
        assert "fcdd-train" in done.stdout + done.stderr  # through the Prefect parent flow
    first, second = (locked_outs(repo) for repo in repos)
    assert set(first) == set(second) and len(first) >= 5
    differ = {
        key: differing_files(repos[0] / key.split(": ", 1)[1], repos[1] / key.split(": ", 1)[1])
        for key in first
        if first[key] != second[key]
    }
    assert not differ, f"outputs hash differently in two folders: {differ}"
    results = (repos[0] / "runs/fmnist/results.csv").read_text()
    assert "mlflow_run_id" not in results and "model_version" not in results
    ids = [
        (repo / "runs/fmnist-tracking.csv").read_text().splitlines() for repo in repos
    ]  # beside the output
    assert ids[0][0].startswith("class,seed,mlflow_run_id,") and len(ids[0]) == 4
    assert ids[0][1] != ids[1][1] and ",2," in ids[1][1]  # other MLflow runs; registry version 2


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_tiny_pipeline(pipeline_repo):
    repo, env = pipeline_repo
    dvc = str(VENV_BIN / "dvc")

    first = run([dvc, "repro"], repo, env)
    assert ran_stages(first.stdout) == {"prepare", "train", "evaluate", "report"}
    assert first.stdout.count("as the train stage evaluated it") == 2  # same settings: not scored twice

    shown = json.loads(run([dvc, "metrics", "show", "--json"], repo, env).stdout)
    shown = next(iter(shown.values()))["data"]
    assert set(shown) == {"metrics.json"}  # the per-class detail is not a declared metrics file
    compact = shown["metrics.json"]["data"]  # one short row: the means and the weakest class
    metrics = json.loads((repo / "outputs/evaluate/metrics_detail.json").read_text())
    assert set(metrics["per_class"]) == {"t-shirt-top", "trouser"}
    aucs = {cls: entry["image_auc"] for cls, entry in metrics["per_class"].items()}
    assert compact["dataset"] == "fmnist" and compact["classes"] == 2 and "pixel_auc" not in compact
    assert compact["image_auc"] == pytest.approx(sum(aucs.values()) / 2)
    assert compact["min_image_auc"] == min(aucs.values()) and aucs[compact["weakest_class"]] == min(
        aucs.values()
    )
    assert all(entry["runs"] == 1 for entry in metrics["per_class"].values())
    table = run([dvc, "metrics", "show"], repo, env).stdout
    assert max(len(line) for line in table.splitlines()) <= 100, table  # fits a terminal
    summary = json.loads((repo / "outputs/prepare/summary.json").read_text())
    assert summary["raw"]["md5"] == dict(sorted(setup_checksums().items()))
    assert set(summary["classes"]) == {"t-shirt-top", "trouser"}  # classes 0 and 1, by name
    roc = (repo / "outputs/evaluate/roc_image.csv").read_text().splitlines()
    assert roc[0] == "class,seed,auc,fpr,tpr" and {r.split(",")[0] for r in roc[1:]} == {
        "t-shirt-top",
        "trouser",
    }
    assert sorted(p.name for p in (repo / "outputs/evaluate/heatmaps").iterdir()) == [
        "t-shirt-top.png",
        "trouser.png",
    ]
    report = (repo / "outputs/report.md").read_text()
    assert "# FCDD on fmnist" in report and "| trouser | 0 | 20 | 0.05 |" in report  # cpu preset: calibrated
    assert 0.0 <= metrics["per_class"]["trouser"]["a0.05_far"] <= 1.0
    plots = json.loads(run([dvc, "plots", "show", "--json"], repo, env).stdout)["data"]
    (bars,) = plots["outputs/evaluate/auc_per_class.csv"]
    assert [row["class"] for row in bars["content"]["data"]["values"]] == ["t-shirt-top", "trouser"]
    assert set(plots) == {
        "outputs/evaluate/auc_per_class.csv",
        "outputs/evaluate/roc_image.csv",
        "outputs/evaluate/heatmaps/t-shirt-top.png",
        "outputs/evaluate/heatmaps/trouser.png",
    }

    model = repo / "runs/fmnist/t-shirt-top/seed0/model.pt"
    trained_at = model.stat().st_mtime_ns
    second = run([dvc, "repro"], repo, env)
    assert ran_stages(second.stdout) == set()
    assert "Data and pipelines are up to date" in run([dvc, "status", "dvc.yaml"], repo, env).stdout

    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "first results"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluation"]["quantile"] = 0.9
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    diff = json.loads(run([dvc, "params", "diff", "--json"], repo, env).stdout)
    assert diff["params.yaml"]["evaluation.quantile"] == {"old": None, "new": 0.9}
    third = run([dvc, "repro"], repo, env)
    assert ran_stages(third.stdout) == {"evaluate", "report"}  # no retraining for a heatmap setting
    assert third.stdout.count("scored again") == 2
    assert model.stat().st_mtime_ns == trained_at
    assert "heatmap quantile q: 0.9" in (repo / "outputs/report.md").read_text()

    params["train"]["epochs"] = 2  # training changes; the data preparation does not
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(run([dvc, "status", "--json"], repo, env).stdout)
    assert "train" in status and "prepare" not in status
