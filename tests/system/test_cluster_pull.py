"""prefect.cluster.yaml: its build steps pin the deployed commit and URLs; its pull steps, run the
way a worker runs them, clone that commit from a git server and `dvc pull` the data from a remote."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prefect.deployments.steps.core import run_steps

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "prefect.cluster.yaml").read_text())

DVC = shutil.which("dvc") or str(Path(os.sys.executable).parent / "dvc")
pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not Path(DVC).exists(), reason="needs git and dvc"
)


def _sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_cluster_deployments_match_the_local_ones():
    local = yaml.safe_load((REPO / "prefect.yaml").read_text())
    strip = lambda d: {k: v for k, v in d.items() if k != "description"}  # noqa: E731
    assert [strip(d) for d in SPEC["deployments"]] == [strip(d) for d in local["deployments"]]


@pytest.mark.slow
def test_pull_steps_clone_the_deployed_commit_and_pull_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(DVC).parent}:{os.environ['PATH']}")
    # The team's repository: data tracked by DVC, pushed to the team's remote, code to a bare repo.
    src, remote, bare = tmp_path / "src", tmp_path / "dvc-remote", tmp_path / "fcdd.git"
    src.mkdir()
    _sh(src, "git", "init", "-q", "-b", "main")
    _sh(src, "git", "config", "user.email", "t@example.com")
    _sh(src, "git", "config", "user.name", "t")
    _sh(src, "dvc", "init", "-q")
    (src / "data" / "fashion-mnist").mkdir(parents=True)
    (src / "data" / "fashion-mnist" / "t10k-labels.bin").write_bytes(bytes(range(256)))
    _sh(src, "dvc", "add", "-q", "data/fashion-mnist")
    (src / "data.dvc").write_text(
        (src / "data" / "fashion-mnist.dvc")
        .read_text()
        .replace("path: fashion-mnist", "path: data/fashion-mnist")
    )
    (src / "data" / "fashion-mnist.dvc").unlink()
    _sh(src, "git", "add", "-A")
    _sh(src, "git", "commit", "-q", "-m", "data")
    _sh(src, "dvc", "remote", "add", "--local", "push-here", str(remote))
    _sh(src, "dvc", "push", "-q", "--remote", "push-here", "data.dvc")
    (src / "later.txt").write_text("a commit after the deployed one\n")
    deployed = _sh(src, "git", "rev-parse", "HEAD")
    _sh(src, "git", "clone", "-q", "--bare", str(src), str(bare))
    _sh(src, "git", "add", "later.txt")
    _sh(src, "git", "commit", "-q", "-m", "later")
    _sh(src, "git", "push", "-q", str(bare), "main")

    # `prefect deploy` on the deploying machine: the build steps.
    monkeypatch.chdir(src)
    _sh(src, "git", "checkout", "-q", deployed)
    monkeypatch.setenv("FCDD_GIT_URL", f"file://{bare}")
    monkeypatch.setenv("FCDD_DVC_REMOTE", str(remote))
    outputs = asyncio.run(run_steps(SPEC["build"], print_function=lambda *_: None))
    assert outputs["commit"]["stdout"] == deployed

    # A fresh worker folder: the pull steps, with nothing prepared.
    worker = tmp_path / "worker"
    worker.mkdir()
    monkeypatch.chdir(worker)
    monkeypatch.delenv("FCDD_GIT_URL")
    monkeypatch.delenv("FCDD_DVC_REMOTE")
    asyncio.run(run_steps(SPEC["pull"], upstream_outputs=outputs, print_function=lambda *_: None))
    clone = Path.cwd()
    assert clone != worker and clone.parent == worker
    assert _sh(clone, "git", "rev-parse", "HEAD") == deployed  # the deployed commit, not the newest
    assert not (clone / "later.txt").exists()
    assert (clone / "data" / "fashion-mnist" / "t10k-labels.bin").read_bytes() == bytes(range(256))
