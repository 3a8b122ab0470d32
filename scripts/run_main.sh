#!/usr/bin/env bash
# The pipeline on a fresh machine: set up (scripts/setup.sh), then the DVC pipeline on params.yaml:
# Fashion-MNIST one-vs-rest, all ten classes, the CPU profile; MLflow on SQLite (mlruns.db), Prefect's
# local ephemeral server. Extra arguments go to `dvc repro` (e.g. --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PATH="$PWD/.venv/bin:$PATH"  # the stages run `python`: it must be the venv's
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 PREFECT_SERVER_ANALYTICS_ENABLED=false

# Outlier Exposure images: params.yaml points at this workplace's pool (../shared/data). Elsewhere,
# use the paper's OE set for Fashion-MNIST, CIFAR-100, downloaded by torchvision (an experiment).
oe_source=$(python -c "from fcdd.config import load_config; print(load_config('params.yaml').anomalies.oe_source)")
if [[ "$oe_source" != *:* && ! -e "$oe_source" ]]; then
  echo "run_main: OE source $oe_source is not here; using CIFAR-100 (download) instead"
  dvc exp run -S anomalies.oe_source=cifar100:data/cifar100 -S ++data.download=true "$@"
else
  dvc repro "$@"
fi
dvc metrics show
echo "run_main: report outputs/report.md; plots: dvc plots show; runs: mlflow ui --backend-store-uri sqlite:///mlruns.db"
