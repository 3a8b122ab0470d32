"""A tracking URI that cannot work is one line on stderr, exit 2, in seconds and before any work:
unreachable servers, read-only locations, unknown schemes, missing stores; and two processes
creating one new SQLite store at once both succeed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parents[2]
FCDD = [sys.executable, "-m", "fcdd.cli"]
TRAIN = ["train", "-o", "tracking.enabled=true", "-o", "train.epochs=1"]


def _run(args: list[str], cwd: Path, timeout: float = 220) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(FCDD + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _one_line_error(done: subprocess.CompletedProcess, *expected: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


CASES = {
    "unreachable server": (
        ["-o", "tracking.uri=http://127.0.0.1:9"],
        ["http://127.0.0.1:9", "does not answer"],
    ),
    "unknown scheme": (["-o", "tracking.uri=foo://bar"], ["foo://bar", "unknown scheme 'foo'"]),
    "read-only location": (
        ["-o", "tracking.uri=sqlite:////sys/mlruns.db"],
        ["sqlite:////sys/mlruns.db", "/sys"],
    ),
    "missing folder": (["-o", "tracking.uri=sqlite:///no/such/dir/m.db"], ["does not exist", "no/such/dir"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_with_an_unusable_tracking_uri_is_one_line_before_training(
    case, defect_folder, make_folder_config, tmp_path
):
    overrides, expected = CASES[case]
    data = make_folder_config(defect_folder, tmp_path).to_dict()  # real data: only tracking is wrong
    data.pop("preset")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    # MLflow's own client waits 253 s for an unreachable server, 109 s for a read-only location:
    # the limit (for a loaded CI machine) is below that, the check itself takes seconds
    done = _run([*TRAIN, "-o", f"train.output_dir={tmp_path / 'runs'}", *overrides], tmp_path)
    _one_line_error(done, "fcdd train: error: tracking URI", *expected)
    assert not (tmp_path / "runs").exists()  # said before any training: no run folder


def test_predict_from_an_unreachable_registry_fails_in_seconds(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    done = _run(
        ["predict", "a.png", "--model", "models:/fcdd-x@champion", "--tracking-uri", "http://127.0.0.1:9"],
        tmp_path,
    )
    _one_line_error(done, "fcdd predict: error:", "http://127.0.0.1:9", "does not answer")


def test_evaluate_against_a_missing_sqlite_store_does_not_create_it(tmp_path):
    store = tmp_path / "missing.db"
    done = _run(["evaluate", "models:/fcdd-x/1", "--tracking-uri", f"sqlite:///{store}"], tmp_path)
    _one_line_error(done, "fcdd evaluate: error:", f"no MLflow store at {store}")
    assert not store.exists()


CREATE = """
import sys
from fcdd.config import load_config
from pipelines import tracking
cfg = load_config(None, overrides=[f"tracking.uri=sqlite:///{sys.argv[1]}"])
client, _ = tracking._client(cfg)
tracking.ensure_experiment(client, cfg)
print("ok")
"""


def test_processes_creating_one_new_sqlite_store_at_once_all_succeed(tmp_path):
    """MLflow creates an SQLite store's tables on first use; two at once: duplicate column name."""
    store = tmp_path / "mlruns.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE, str(store)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
