"""Results bit for bit: tiny runs' checkpoints, models, scores and heatmaps hash as recorded.

tests/golden_runs.py trains and evaluates three tiny cases (folder/confetti/pixel-wise loss with
calibration; Fashion-MNIST with OE on the fast path; a pack of two classes) in a fresh process and
hashes every output. The digests depend on torch and the CPU's instruction sets (oneDNN picks its
kernels; bf16 only where native), so they are recorded per machine signature. A change that moves
code must reproduce them; a change that means to alter results re-records them
(``FCDD_RECORD_GOLDEN=1 pytest tests/system/test_golden.py``) and says why in its commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
RECORD = HERE / "golden_digests.json"

pytestmark = pytest.mark.slow


def _run(workdir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HERE / "golden_runs.py"), str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_tiny_runs_reproduce_the_recorded_digests(tmp_path):
    if not (HERE.parent / "data" / "fashion-mnist").exists():
        pytest.skip("data/fashion-mnist is absent (scripts/setup_data.sh)")
    got = _run(tmp_path)
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if os.environ.get("FCDD_RECORD_GOLDEN") == "1":
        recorded[got["signature"]] = got["digests"]
        RECORD.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    if got["signature"] not in recorded:
        pytest.skip(
            f"no digests recorded for this machine ({got['signature']}); FCDD_RECORD_GOLDEN=1 records them"
        )
    expected = recorded[got["signature"]]
    differs = {
        f"{case}/{name}": (expected[case].get(name), value)
        for case, files in got["digests"].items()
        for name, value in files.items()
        if expected.get(case, {}).get(name) != value
    }
    missing = sorted(
        f"{c}/{n}" for c, files in expected.items() for n in files if n not in got["digests"].get(c, {})
    )
    assert not differs and not missing, f"differs: {differs}; missing: {missing}"
