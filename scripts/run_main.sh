#!/usr/bin/env bash
# The pipeline on a fresh machine: set up (scripts/setup.sh), then the DVC pipeline on params.yaml:
# Fashion-MNIST one-vs-rest, all ten classes, the CPU profile; MLflow on SQLite (mlruns.db), Prefect's
# local ephemeral server. Extra arguments go to `dvc repro` (e.g. --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PATH="$PWD/.venv/bin:$PATH"  # the stages run `python`: it must be the venv's
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 PREFECT_SERVER_ANALYTICS_ENABLED=false

# Outlier Exposure images: anomalies.oe_source auto (fcdd/data/oe_pool.py) takes a local ImageNet-1k
# sample pool where there is one, else CIFAR-100 (downloaded); the loading lines say which.
dvc repro "$@"
dvc metrics show
echo "run_main: report outputs/report.md; plots: dvc plots show; runs: mlflow ui --backend-store-uri sqlite:///mlruns.db"
