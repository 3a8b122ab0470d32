#!/usr/bin/env bash
# Set up a fresh clone: .venv with every dependency pinned by constraints.txt, then the pipeline's
# data (scripts/setup_data.sh). A complete .venv is reused as it is (the fast path).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

venv_complete() {
  [[ -x .venv/bin/python ]] || return 1
  .venv/bin/python - <<'PY' >/dev/null 2>&1
import importlib
import pathlib

for name in ("torch", "torchvision", "sklearn", "pandas", "matplotlib", "yaml", "tqdm", "PIL",
             "prefect", "mlflow", "dvc", "pytest", "pytest_timeout", "ruff",
             "onnx", "onnxruntime", "openvino", "psycopg", "fastapi", "uvicorn", "playwright",
             "js_lib_vega_embed"):
    importlib.import_module(name)
import fcdd  # installed editable from this checkout, not from somewhere else
assert pathlib.Path(fcdd.__file__).resolve().parent == pathlib.Path("fcdd").resolve()
from importlib.metadata import entry_points  # the installed metadata knows this checkout's plugins
assert "mlflow" in {e.name for e in entry_points(group="fcdd.plugins")}
PY
}

if venv_complete; then
  echo "setup: .venv is complete (fast path)"
else
  echo "setup: building .venv (a few minutes)"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -c constraints.txt torch==2.14.1 torchvision==0.29.1 -e ".[pipelines,dev,export,cluster,app]"
  venv_complete || { echo "setup: .venv is still incomplete after pip install" >&2; exit 1; }
fi
bash scripts/setup_data.sh
