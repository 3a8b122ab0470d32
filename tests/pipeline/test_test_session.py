"""The README's test command ends clean: a flow run in-process starts Prefect's temporary server,
and tests/conftest.py stops it while pytest still holds the streams (else its exit hook logs into a
closed stream and prints a traceback after the summary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

FLOW_TEST = """
from prefect import flow


@flow
def one():
    return 1


def test_a_flow_runs():
    assert one() == 1
"""


@pytest.mark.slow
def test_a_session_that_ran_a_flow_ends_without_a_logging_traceback(tmp_path):
    (tmp_path / "test_flow_here.py").write_text(FLOW_TEST)
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "conftest",
            "-p",
            "no:cacheprovider",
            "test_flow_here.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "1 passed" in text
    assert "Stopping temporary server" in text  # the server was started, and stopped by the hook
    assert "Logging error" not in text and "closed file" not in text, text[-3000:]
