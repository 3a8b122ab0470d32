"""What a worker needs before training, failing its run with one line in the UI and in results.csv:
the deployment pull steps of prefect.cluster.yaml (clone, ``dvc pull``) and the tracking server.

When a stock pull step fails, the worker marks the flow run Crashed with a generic "exited with
non-zero status" message; the step's own error is only in the worker log, and the fan-out parent
cannot tell it from a lost worker. These steps first set the run Failed with a one-line reason that
starts with ``SETUP_FAILED`` and names the worker host, then raise. The parent resubmits such a run
up to ``orchestration.retries`` times (another worker may reach the servers) and then reports it.

They run in the worker's Python environment before the clone exists, so that environment must have
this package installed (``pip install '.[pipelines]'``, as a worker image does).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from typing import Any
from urllib.parse import urlparse

SETUP_FAILED = "worker setup failed"
# A reachable server accepts a TCP connection in milliseconds; MLflow's own client retries an
# unreachable one with backoff for minutes, and only after the training.
CONNECT_TIMEOUT_S = 5.0


class WorkerSetupError(RuntimeError):
    """A worker could not prepare a run (clone, data, tracking server): its message is one line."""


def setup_failure(reason: str) -> str:
    """The one-line state message of a run its worker could not prepare."""
    flat = " ".join(f"{SETUP_FAILED} on {socket.gethostname()}: {reason}".split())
    return flat if len(flat) <= 300 else flat[:297] + "..."


def is_setup_failure(message: str | None) -> bool:
    return bool(message) and SETUP_FAILED in message


def fail_run(reason: str) -> None:
    """Set this worker's flow run (PREFECT__FLOW_RUN_ID) Failed with the reason, then raise it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    message = setup_failure(reason)
    flow_run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run_id:  # absent when the steps run outside a worker (tests, `prefect deploy`)
        # force: the run is Pending (its worker took it); a terminal state then refuses the
        # worker's own generic Crashed verdict when this process exits non-zero.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Failed(message=message), force=True)
    raise WorkerSetupError(message)


def check_tracking_server(uri: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise WorkerSetupError (one line naming the URI) when an http(s) tracking server does not
    accept a connection; local stores (SQLite, a folder) are not checked."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise WorkerSetupError(
            setup_failure(f"tracking server {uri} unreachable ({reason} after {timeout_s:g} s)")
        ) from None


def clone(repository: str, commit_sha: str | None = None, **options: Any) -> dict[str, str]:
    """prefect.deployments.steps.git_clone; a failure fails the run with git's reason."""
    from prefect.deployments.steps import git_clone

    try:
        return git_clone(repository=repository, commit_sha=commit_sha or None, _sync=True, **options)
    except Exception as e:  # noqa: BLE001 (any failure to clone is reported the same way)
        at = f" at {commit_sha[:12]}" if commit_sha else ""
        # Prefect's message repeats the URL: keep git's part of it.
        reason = re.sub(r"^Failed to clone repository '[^']*' with ", "", str(e))
        fail_run(f"cannot clone {repository}{at}: {reason}")
        raise  # unreachable: fail_run raises


def dvc_pull(remote: str, targets: str = "data.dvc", remote_name: str = "team") -> dict[str, str]:
    """``dvc pull`` the targets from the team's remote (registered --local: the clone stays clean)."""
    if not remote:
        fail_run(f"no DVC remote to pull {targets} from (FCDD_DVC_REMOTE was empty at deploy time)")
    for args in (
        ["dvc", "remote", "add", "--local", "--force", remote_name, remote],
        ["dvc", "pull", "--remote", remote_name, *targets.split()],
    ):
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            fail_run(f"dvc pull of {targets} from {remote} failed: {_last_error_line(done)}")
    return {"remote": remote}


def _last_error_line(done: subprocess.CompletedProcess) -> str:
    """DVC's reason: its last ERROR line with the lines after it (the targets, a hint), else its
    last line."""
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("ERROR")]
    if errors:
        return " ".join(lines[errors[-1] :])
    return lines[-1] if lines else f"exit status {done.returncode}"
