"""The multi-host rehearsal (issue 14): a server host and two worker hosts as network namespaces.

Server host (tests/netns_hosts.py, bridge address 10.213.0.1): PostgreSQL 15 (as ``nobody``: it
refuses root), the MLflow server on it with proxied artifacts, the Prefect server, ``git daemon``
serving a bare copy of this repository, an HTTP DVC remote (a static file server over a remote that
``dvc push`` filled), and a ``control`` worker that runs only the ``fcdd-train`` parent (queue
``control``: a lost worker host never takes the parent with it). Worker hosts 10.213.0.11/.12:
``prefect worker start`` in an empty folder each (queue ``default``); every flow run clones the
deployed commit over git:// and ``dvc pull``s the data over HTTP (prefect.cluster.yaml). Checkpoints
go to a shared folder (``train.checkpoint_uri``, the stand-in for NFS); nothing else is shared.

One run of the fcdd-train deployment, 4 Fashion-MNIST classes x 3 epochs, and two losses in it:
case 1 SIGKILLs one class's flow-run process right after its first shared checkpoint (the worker
reports it Crashed); case 2 then SIGKILLs every process of the worker host running another class
(no report: its heartbeats stop and the zombie automation marks it Crashed). Settings shortened
for the test: flow-run heartbeats every 30 s (Prefect's minimum), zombie window 60 s (90 s in
prefect.automations.yaml), workers poll every 2 s. The timeline is printed (run with -s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from netns_hosts import Hosts, flow_run_pid, netns_available

REPO = Path(__file__).resolve().parents[2]
FMNIST = REPO / "data" / "fashion-mnist"
BIN = Path(sys.executable).parent
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
CLASSES = ["0", "1", "2", "3"]
EPOCHS = 3
HEARTBEAT_S, ZOMBIE_WITHIN_S, PENDING_WITHIN_S = 30, 60, 150
PORTS = {"pg": 5432, "mlflow": 5000, "prefect": 4200, "dvc": 8765}


def _missing() -> str | None:
    if not list(FMNIST.glob("*ubyte*")):
        return "needs data/fashion-mnist (bash scripts/setup_data.sh)"
    if not PG_BINS:
        return "needs PostgreSQL (apt-get install -y postgresql)"
    for tool in ("git", "curl", "runuser"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not (BIN / "dvc").exists():
        return "needs dvc in the Python environment"
    if subprocess.run([sys.executable, "-c", "import psycopg"], capture_output=True).returncode:
        return "needs psycopg for the MLflow server on PostgreSQL: pip install -e '.[cluster]'"
    return netns_available()


pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(**extra: str) -> dict[str, str]:
    """A clean environment: this Python first on PATH, no PYTHONPATH (a worker imports its clone)."""
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "GIT_TERMINAL_PROMPT": "0",
    }
    return {**env, **extra}


def _sh(cwd: Path, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} in {cwd}: {done.stdout}\n{done.stderr}")
    return done.stdout.strip()


class Cluster:
    """The started hosts, their URLs and folders; ``api`` and ``python`` run on the server host."""

    def __init__(self, hosts: Hosts, root: Path):
        self.hosts, self.root = hosts, root
        server = hosts.addr("server")
        self.prefect_api = f"http://{server}:{PORTS['prefect']}/api"
        self.mlflow = f"http://{server}:{PORTS['mlflow']}"
        self.checkpoints = root / "shared-checkpoints"
        self.control = root / "control"
        self.logs = root / "logs"
        self.workers = {h: root / h for h in hosts.names[1:]}

    def api(self, path: str, body: dict | None = None) -> list | dict:
        args = ["curl", "-sf", "-m", "30", "-H", "Content-Type: application/json"]
        if body is not None:
            args += ["-X", "POST", "-d", json.dumps(body)]
        return json.loads(self.hosts.run("server", [*args, f"{self.prefect_api}{path}"]))

    def python(self, code: str, timeout: float = 300) -> str:
        env = _env(PREFECT_API_URL=self.prefect_api, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
        return self.hosts.run("server", [sys.executable, "-c", code], timeout=timeout, env=env, cwd=REPO)


def _wait(what: str, check, log: Path | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not ready after {timeout:.0f} s\n{tail}")


def _team_remotes(root: Path) -> tuple[Path, Path]:
    """The team's git server content (a bare copy of this repository) and a DVC remote holding the
    Fashion-MNIST files that data.dvc names, filled with ``dvc push`` from a scratch clone."""
    bare, scratch, remote = root / "git" / "fcdd.git", root / "scratch", root / "dvc-remote"
    _sh(root, "git", "clone", "-q", "--bare", str(REPO), str(bare))
    _sh(bare, "git", "config", "uploadpack.allowAnySHA1InWant", "true")  # git_clone fetches by commit
    _sh(root, "git", "clone", "-q", str(REPO), str(scratch))
    _sh(scratch, "git", "checkout", "-q", _sh(REPO, "git", "rev-parse", "HEAD"))
    shutil.copytree(FMNIST, scratch / "data" / "fashion-mnist")
    env = _env()
    _sh(scratch, "dvc", "commit", "-f", "-q", "data.dvc", env=env)
    if _sh(scratch, "git", "status", "--porcelain", "data.dvc"):
        pytest.skip(f"{FMNIST} differs from what data.dvc names (dvc status data.dvc)")
    _sh(scratch, "dvc", "remote", "add", "--local", "team", str(remote), env=env)
    _sh(scratch, "dvc", "push", "-q", "--remote", "team", "data.dvc", env=env)
    shutil.rmtree(scratch)
    return bare, remote


@pytest.fixture
def cluster(tmp_path: Path):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    bare, remote = _team_remotes(tmp_path)
    hosts = Hosts(f"fcdd{os.getpid()}", workers=2)
    c = Cluster(hosts, tmp_path)
    for folder in (c.logs, c.checkpoints, c.control, *c.workers.values()):
        folder.mkdir()
    # PostgreSQL runs as nobody: its folders outside pytest's root-only tmp tree.
    pg_root = Path(tempfile.mkdtemp(prefix="fcdd-rehearsal-pg-"))
    try:
        hosts.up()
        server = hosts.addr("server")
        pg_bin = PG_BINS[-1].parent
        shutil.chown(pg_root, "nobody")
        subprocess.run(
            ["runuser", "-u", "nobody", "--", str(pg_bin / "initdb"), "-D", str(pg_root / "data"),
             "-U", "fcdd", "--auth=trust"],
            cwd=pg_root, check=True, capture_output=True,
        )  # fmt: skip
        with (pg_root / "data" / "pg_hba.conf").open("a") as hba:  # the hosts' subnet, no password
            hba.write(f"host all fcdd {server.rsplit('.', 1)[0]}.0/24 trust\n")
        hosts.start(
            "server",
            [str(pg_bin / "postgres"), "-D", str(pg_root / "data"), "-k", str(pg_root),
             "-c", f"listen_addresses={server}", "-p", str(PORTS["pg"])],
            c.logs / "postgres.log", _env(), pg_root, user="nobody",
        )  # fmt: skip
        _wait(
            "PostgreSQL",
            lambda: (
                hosts.run("server", [str(pg_bin / "pg_isready"), "-q", "-h", server, "-p", str(PORTS["pg"])])
                == ""
            ),
            c.logs / "postgres.log",
        )
        hosts.run(
            "server", [str(pg_bin / "createdb"), "-h", server, "-p", str(PORTS["pg"]), "-U", "fcdd", "mlflow"]
        )

        server_env = _env(PYTHONPATH=os.environ.get("PYTHONPATH", ""))  # psycopg may live there
        hosts.start(
            "server",
            [str(BIN / "mlflow"), "server", "--host", server, "--port", str(PORTS["mlflow"]), "--workers", "1",
             "--backend-store-uri", f"postgresql+psycopg://fcdd@{server}:{PORTS['pg']}/mlflow",
             "--artifacts-destination", str(tmp_path / "mlartifacts")],
            c.logs / "mlflow.log", server_env, tmp_path,
        )  # fmt: skip
        hosts.start(
            "server",
            [str(BIN / "prefect"), "server", "start", "--host", server, "--port", str(PORTS["prefect"])],
            c.logs / "prefect.log", _env(PREFECT_HOME=str(tmp_path / "prefect-home")), tmp_path,
        )  # fmt: skip
        hosts.start(
            "server",
            ["git", "daemon", "--export-all", "--reuseaddr", f"--listen={server}",
             f"--base-path={bare.parent}", str(bare.parent)],
            c.logs / "git-daemon.log", _env(), tmp_path,
        )  # fmt: skip
        hosts.start(
            "server",
            [sys.executable, "-m", "http.server", "--bind", server, "--directory", str(remote), str(PORTS["dvc"])],
            c.logs / "dvc-http.log", _env(), tmp_path,
        )  # fmt: skip
        _wait("Prefect server", lambda: c.api("/health") is True, c.logs / "prefect.log")
        _wait(
            "MLflow server",
            lambda: hosts.run("server", ["curl", "-sf", f"{c.mlflow}/health"]) is not None,
            c.logs / "mlflow.log",
        )

        # Pool + gpu limit (2 slots, one per worker host), the zombie automation, the queues, deploy.
        c.python("from pipelines.deploy import main; main(['--gpus', '2'])")
        automations = yaml.safe_load((REPO / "prefect.automations.yaml").read_text())
        automations["automations"][0]["trigger"]["within"] = ZOMBIE_WITHIN_S
        automations["automations"][1]["trigger"]["within"] = PENDING_WITHIN_S  # a host lost mid-start
        (tmp_path / "automations.yaml").write_text(yaml.safe_dump(automations))
        prefect_env = _env(PREFECT_API_URL=c.prefect_api, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
        cli = [str(BIN / "prefect")]
        hosts.run(
            "server",
            [*cli, "automation", "create", "--from-file", str(tmp_path / "automations.yaml")],
            env=prefect_env,
        )
        hosts.run("server", [*cli, "work-queue", "create", "control", "--pool", "gpu-pool"], env=prefect_env)
        hosts.run(
            "server",
            [*cli, "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.cluster.yaml"],
            env={**prefect_env, "FCDD_GIT_URL": f"git://{server}/fcdd.git",
                 "FCDD_DVC_REMOTE": f"http://{server}:{PORTS['dvc']}"},
            cwd=REPO,
        )  # fmt: skip
        for host, queue, folder in [
            ("server", "control", c.control),
            *((h, "default", f) for h, f in c.workers.items()),
        ]:
            # TMPDIR: each flow run's clone lands in a temporary folder inside the worker's folder.
            worker_env = _env(
                PREFECT_API_URL=c.prefect_api, PREFECT_HOME=str(folder / ".prefect"), TMPDIR=str(folder),
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S), PREFECT_WORKER_QUERY_SECONDS="2",
            )  # fmt: skip
            name = "control" if host == "server" else host
            hosts.start(
                host,
                [*cli, "worker", "start", "--pool", "gpu-pool", "--work-queue", queue, "--name", name],
                c.logs / f"{name}.log", worker_env, folder,
            )  # fmt: skip
        yield c
    finally:
        left = hosts.close()
        shutil.rmtree(pg_root, ignore_errors=True)
        assert not left, f"left over after the rehearsal: {left}"


def _overrides(c: Cluster) -> list[str]:
    return [
        "orchestration.mode=deployments",
        "orchestration.retries=2",
        "orchestration.retry_delay_s=1",
        f"tracking.uri={c.mlflow}",
        "tracking.onnx=false",
        f"train.checkpoint_uri={c.checkpoints}",
        f"train.epochs={EPOCHS}",
        "train.batch_size=32",
        "data.train_limit=480",  # a few seconds an epoch: the kill lands mid-training
        "data.test_limit=64",
        "anomalies.kind=confetti",  # no outlier-exposure images to ship to the workers
        "train.threads=1",
        "data.num_workers=0",
        "train.device=cpu",
        "evaluation.heatmap_count=2",
        "train.progress=false",
        # A few hundred images for a few epochs may not reach the champion gate's AUC; the gate has
        # its own tests, here every version must become champion.
        "registry.min_image_auc=0",
        "registry.min_pixel_auc=0",
    ]


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _epochs_shared(c: Cluster) -> dict[str, int]:
    """Newest epoch in the shared checkpoint folder, by class folder name."""
    newest: dict[str, int] = {}
    for path in c.checkpoints.glob("fmnist/*/seed0/checkpoint-*.pt"):
        epoch = int(path.stem.split("-")[1])
        newest[path.parts[-3]] = max(epoch, newest.get(path.parts[-3], 0))
    return newest


def _class_of(run: dict) -> str:
    return run["name"].removeprefix("fmnist-").split("-seed0")[0]


def _since(stamp: str | None, t: float) -> str:
    return f"+{_ts(stamp) - t:.1f} s" if stamp else "never"


@pytest.mark.timeout(2400)
def test_lost_class_runs_and_a_lost_worker_host_resume_from_the_shared_checkpoint(cluster):
    c = cluster
    trigger = f"""
from prefect.deployments import run_deployment
run = run_deployment("fcdd-train/fcdd-train", timeout=0, work_queue_name="control",
    job_variables={{"working_dir": {str(c.control)!r}}},
    parameters={{"params": "params.yaml", "classes": {CLASSES!r}, "overrides": {_overrides(c)!r}}})
print(run.id)
"""
    parent_id = c.python(trigger).strip().splitlines()[-1]
    t0 = time.time()
    parent, cases, where = _watch(c, parent_id, t0)
    assert parent["state"]["type"] == "COMPLETED", (
        f"fcdd-train ended {parent['state']}; logs in {c.logs}\n"
        + (c.logs / "control.log").read_text()[-4000:]
    )
    assert set(cases) == {"process", "host"}, f"the kills did not happen: {cases}"

    # results.csv: every class completed; the killed ones resumed after epoch 1 on a live worker.
    [csv] = c.control.glob("*/runs/deployments/fmnist/results.csv")
    table = pd.read_csv(csv, dtype={"class": str})
    ids = pd.read_csv(csv.parent.parent / "fmnist-tracking.csv", dtype={"class": str})  # run ids, attempts
    table = table.merge(ids, on=["class", "seed"], how="left")
    names = ["t-shirt-top", "trouser", "pullover", "dress"]
    rows = table.set_index("class")
    runs = {r["id"]: r for r in c.api("/flow_runs/filter", {})}
    for name, case in cases.items():
        resumed = runs.get(rows.loc[case["cls"], "flow_run_id"]) or {}
        lost = runs[case["run"]]
        print(
            f"case {name} ({case['cls']} on {case['host']}, lost after epoch {case['epoch']}): "
            f"Crashed {_since(lost['state']['timestamp'], case['t'])}, resubmitted run created "
            f"{_since(resumed.get('created'), case['t'])}, running {_since(resumed.get('start_time'), case['t'])} "
            f"on {where.get(resumed.get('id'))}, next epoch in the shared folder "
            f"{'+%.1f s' % (case['resumed_t'] - case['t']) if 'resumed_t' in case else 'never'}, completed {_since(resumed.get('end_time'), case['t'])}; "
            f"parent completed {_since(parent.get('end_time'), case['t'])}"
        )
    assert list(table["class"]) == names and set(table["status"]) == {"completed"}, table.to_string()
    assert table[["image_auc", "mlflow_run_id", "flow_run_id", "first_epoch"]].notna().all().all(), table
    live = [h for h in c.workers if h != cases["host"]["host"]]
    for case in cases.values():
        row = rows.loc[case["cls"]]
        assert row["first_epoch"] > 1 and row["resubmissions"] >= 1, row.to_dict()
        assert runs[case["run"]]["state"]["type"] == "CRASHED", runs[case["run"]]["state"]
        assert row["flow_run_id"] != case["run"] and where.get(row["flow_run_id"]) in live, (row, where)

    # MLflow on the server: one finished run per class (the lost run continued, not orphaned), a
    # finished parent; one registry version per class, challenger and champion on it.
    report = json.loads(
        c.python(
            f"""
import json
from mlflow import MlflowClient
client = MlflowClient({c.mlflow!r})
runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
models = {{}}
for m in client.search_registered_models():
    models[m.name] = {{"aliases": dict(m.aliases),
        "versions": [(v.version, v.run_id) for v in client.search_model_versions(f"name='{{m.name}}'")]}}
print(json.dumps({{"runs": [(r.info.run_id, r.info.status, r.data.tags) for r in runs], "models": models}}))
"""
        )
        .strip()
        .splitlines()[-1]
    )
    statuses = [status for _, status, _ in report["runs"]]
    assert set(statuses) == {"FINISHED"}, statuses
    class_runs = {}
    for run_id, _, tags in report["runs"]:
        if "fcdd.run_key" in tags:
            assert tags["fcdd.class"] not in class_runs, f"two MLflow runs for {tags['fcdd.class']}"
            class_runs[tags["fcdd.class"]] = (run_id, tags)
    assert sorted(class_runs) == sorted(names) and len(report["runs"]) == len(names) + 1  # + the parent
    for case in cases.values():
        run_id, tags = class_runs[case["cls"]]
        assert run_id == rows.loc[case["cls"]]["mlflow_run_id"]
        assert int(tags["fcdd.first_epoch"]) > 1 and int(tags["fcdd.attempts"]) >= 2, tags
    for cls in names:
        model = report["models"][f"fcdd-fmnist-{cls}"]
        assert model["versions"] == [["1", class_runs[cls][0]]], model  # JSON: lists
        assert model["aliases"] == {"champion": "1", "challenger": "1"}, model


def _watch(c: Cluster, parent_id: str, t0: float, timeout: float = 2100) -> tuple[dict, dict, dict]:
    """Follow the parent to its end; kill as the cases say. Returns the parent flow run, the cases
    (what was killed: class, flow run, host, time, epoch) and on which host each class run ran."""
    cases: dict[str, dict] = {}
    where: dict[str, str] = {}  # flow run id -> worker host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parent = c.api(f"/flow_runs/{parent_id}")
        if parent["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return parent, cases, where
        running = [r for r in c.api("/flow_runs/filter", {}) if r["state"]["type"] == "RUNNING"]
        for run in running:
            for host in c.workers:
                if run["id"] not in where and flow_run_pid(c.hosts.pids(host), run["id"]):
                    where[run["id"]] = host
        shared = _epochs_shared(c)
        for case in cases.values():  # the lost class trained on: its next epoch in the shared folder
            if "resumed_t" not in case and shared.get(case["cls"], 0) > case["epoch"]:
                case["resumed_t"] = time.time()
        for run in running:
            cls, host = _class_of(run), where.get(run["id"])
            if host is None or not 0 < shared.get(cls, 0) < EPOCHS:
                continue
            if "process" not in cases:  # case 1: a class run's process, after its first checkpoint
                pid = flow_run_pid(c.hosts.pids(host), run["id"])
                if pid is None:
                    continue
                os.kill(pid, 9)
                what = f"case 1: SIGKILL {run['name']} (pid {pid} on {host}) after epoch {shared[cls]}"
            elif "host" not in cases and cls != cases["process"]["cls"]:  # case 2: a whole host
                pids = c.hosts.kill_host(host)
                what = f"case 2: SIGKILL all {len(pids)} processes of {host} ({run['name']} after epoch {shared[cls]})"
            else:
                continue
            cases["process" if "process" not in cases else "host"] = dict(
                cls=cls, run=run["id"], host=host, t=time.time(), epoch=shared[cls]
            )
            print(f"{time.time() - t0:7.1f} s  {what}", flush=True)
            break
        time.sleep(0.3)
    raise AssertionError(f"fcdd-train not finished after {timeout} s; cases {cases}; logs in {c.logs}")
