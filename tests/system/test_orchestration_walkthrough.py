"""docs/orchestration.md's deployment walk-through, run as written (issue 22): after a tiny main job
(`dvc repro`) in a fresh repository, its commands start a real Prefect server and a process worker,
deploy, and trigger the fan-out twice: all classes fine (exit 0), and with a failing class (exit 1,
the reason as the flow run's state message). The main job's output stays as DVC recorded it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from net_helpers import free_port

from tests.system.test_dvc_pipeline import OE_SAMPLES, VENV_BIN, make_pipeline_repo, run
from tests.system.test_prefect_integration import _stop

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not OE_SAMPLES.is_dir(), reason="needs ../shared/data/imagenet1k_samples"),
]


def walkthrough() -> list[str]:
    """The bash block of "## Deployments" that starts with `prefect server start`: its commands,
    continuation lines joined, comment lines left out."""
    text = (REPO / "docs" / "orchestration.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if b.startswith("prefect server start")]
    commands = re.sub(r"\\\n\s*", "", block).splitlines()
    commands = [re.sub(r"\s+#.*$", "", c).strip() for c in commands]  # no '#' inside their quotes
    return [c for c in commands if c and not c.startswith("#")]


def _healthy(api: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"no Prefect server at {api} after {timeout} s")


def _flow_runs(api: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.timeout(2400)
def test_the_deployment_walkthrough_runs_as_written(tmp_path):
    repo = tmp_path / "fcdd"
    env = make_pipeline_repo(repo, tmp_path / "prefect-local", {"uri": "sqlite:///mlruns.db"})
    dvc = str(VENV_BIN / "dvc")
    run([dvc, "repro"], repo, env)  # the main job, tiny: runs/fmnist is the train stage's output
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "main job"], repo, env)
    main_results = (repo / "runs/fmnist/results.csv").read_bytes()

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api}
    env.update(
        PREFECT_SERVER_API_PORT=str(port), PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2"
    )
    commands = walkthrough()
    assert commands[0] == "prefect server start" and commands[4] == "prefect worker start --pool gpu-pool"
    triggers = [c for c in commands if c.startswith("prefect deployment run")]
    ok, failing = triggers[0], triggers[1]
    assert ok.endswith("--watch") and "no-such-class" in failing
    background, outputs = [], {}
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        for i, command in enumerate(commands):
            if command.startswith(("prefect server start", "prefect worker start")):
                log = (logs / f"{i}.log").open("w")
                background.append(
                    subprocess.Popen(shlex.split(command), cwd=repo, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                )  # fmt: skip
                if command.startswith("prefect server start"):
                    _healthy(api)
                continue
            if command.startswith("prefect deployment run") and command not in (ok, failing):
                continue  # 50 epochs, a restart, a single class run: not in this test (see the docs)
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                stdin=subprocess.DEVNULL,
            )
            outputs[command] = done
            if command not in (ok, failing):
                assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
        flow_runs = _flow_runs(api)
    finally:
        for proc in reversed(background):
            _stop(proc)
    worker_log = "".join(p.read_text() for p in sorted(logs.glob("*.log")))[-6000:]

    assert outputs[ok].returncode == 0, f"{outputs[ok].stdout}\n{outputs[ok].stderr}\n{worker_log}"
    assert "finished successfully" in outputs[ok].stdout + outputs[ok].stderr
    table = pd.read_csv(repo / "runs/deployments/fmnist/results.csv", dtype={"class": str})
    assert list(table["class"]) == ["t-shirt-top", "trouser"] and set(table["status"]) == {"completed"}

    failed = outputs[failing]
    assert failed.returncode == 1, f"{failed.stdout}\n{failed.stderr}\n{worker_log}"
    assert "Failed" in failed.stdout + failed.stderr
    partial = pd.read_csv(repo / "runs/deployments/fmnist-results-partial.csv", dtype={"class": str})
    assert list(partial["status"]) == ["completed", "failed"]
    parents = [
        fr
        for fr in flow_runs
        if fr["state"]["type"] == "FAILED" and fr["name"] != "fmnist-no-such-class-seed0"
    ]
    assert any(fr["state"]["message"].startswith("1 of 2 class runs failed; class no-such-class seed 0:")
               for fr in parents), [fr["state"] for fr in flow_runs]  # fmt: skip

    local = {k: v for k, v in env.items() if k not in ("PREFECT_API_URL", "PREFECT_SERVER_API_PORT")}
    status = run(
        [dvc, "status", "dvc.yaml"], repo, local
    )  # the pipeline (comparison/dvc.yaml is never run here)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert (repo / "runs/fmnist/results.csv").read_bytes() == main_results
    assert not (repo / "runs" / "fmnist-results-partial.csv").exists()
