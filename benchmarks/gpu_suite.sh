#!/usr/bin/env bash
# GPU benchmark suite for the device machine, at most ~290 s wall in total (each part under `timeout`):
#   1. training overhead (engine vs bare step) and heatmap inference throughput on CUDA;
#   2. CIFAR-10 one-vs-rest, all 10 classes side by side on the one GPU (one process per class, one
#      DataLoader worker each), epochs chosen from a 2-epoch probe to fit the time left, the paper's
#      milestones (400/500 of 600) scaled with them; per-class image AUC next to the paper's.
# Needs .device/cifar10_jpeg.zip and .device/oe_pool.zip (benchmarks/README.md says how to make them).
# Writes logs and tables under $OUT (default ./gpu_suite_out).
#
#   bash benchmarks/gpu_suite.sh                       # on the device machine
#   GPU_SUITE_QUICK=1 bash benchmarks/gpu_suite.sh     # logic check on any machine (CPU): 2 classes, tiny
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_suite_out}
QUICK=${GPU_SUITE_QUICK:-0}
TOTAL=${GPU_SUITE_SECONDS:-285}
RUNS=${GPU_SUITE_RUNS:-$PWD/cache/gpu_suite}
mkdir -p "$OUT" "$RUNS"
rm -rf "$RUNS/logs" "$RUNS/probe" "$RUNS"/results.* # stale tables must not pass for this run's
start=$SECONDS
left() { echo $((TOTAL - (SECONDS - start))); }

for f in .device/cifar10_jpeg.zip .device/oe_pool.zip; do
    [ -f "$f" ] || { echo "gpu_suite: missing $f (see benchmarks/README.md)" | tee "$OUT/summary.txt"; exit 2; }
done

if [ "$QUICK" = 1 ]; then
    DEVICE=${GPU_SUITE_DEVICE:-auto}
    OVERHEAD_S=8 INFERENCE_ARGS="--net cnn28 --batches 1 4" INFERENCE_S=30
    CIFAR_ARGS=(--classes airplane automobile --max-epochs 3 -o data.train_limit=200 -o data.test_limit=300
        -o anomalies.oe_limit=100 -o evaluation.heatmap_count=4)
    CIFAR_BUDGET=${GPU_SUITE_CIFAR_S:-60}
else
    DEVICE=${GPU_SUITE_DEVICE:-cuda}
    OVERHEAD_S=60 INFERENCE_ARGS="" INFERENCE_S=45
    CIFAR_ARGS=()
    CIFAR_BUDGET=""
fi

status() { echo "$1: exit $2 after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"; }
: >"$OUT/summary.txt"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    echo "cpus $(nproc)"
    $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. Speed.
timeout "$OVERHEAD_S" $PY benchmarks/bench_train_overhead.py --device "$DEVICE" --quick 2>&1 | tee "$OUT/train_overhead.txt"
status train_overhead "${PIPESTATUS[0]}"
# shellcheck disable=SC2086  # INFERENCE_ARGS is a list of words
timeout "$INFERENCE_S" $PY benchmarks/bench_inference.py --device "$DEVICE" --quick $INFERENCE_ARGS 2>&1 | tee "$OUT/inference.txt"
status inference "${PIPESTATUS[0]}"

# 2. CIFAR-10, 10 (quick: 2) classes side by side; bench_quality stops its jobs at the budget itself,
# `timeout` is the hard stop behind it.
budget=${CIFAR_BUDGET:-$(($(left) - 15))}
echo "CIFAR-10: ${budget} s for the probe and the runs"
timeout $((budget + 10)) $PY benchmarks/bench_quality.py --dataset cifar10 --profile paper --device "$DEVICE" \
    --parallel 10 --workers 1 --time-budget "$budget" --output-dir "$RUNS" \
    --cifar-root .device/cifar10_jpeg.zip --oe-source .device/oe_pool.zip \
    -o train.threads=1 -o train.progress=false "${CIFAR_ARGS[@]}" 2>&1 | tee "$OUT/cifar10.txt"
status cifar10 "${PIPESTATUS[0]}"

# Tables, logs and metrics of the probe and the runs (no checkpoints or models: they would not fit).
# The device returns at most 8 files from $OUT: the details travel as one archive.
cp "$RUNS"/results.md "$RUNS"/results.json "$OUT/" 2>/dev/null
(cd "$RUNS" && find . \( -name '*.log' -o -name '*.json' -o -name '*.md' \) -not -name checkpoint.pt -print0 |
    tar --null -czf "$OUT/cifar10_details.tar.gz" -T -) 2>/dev/null
echo "gpu_suite: done in $((SECONDS - start)) s; tables in $OUT" | tee -a "$OUT/summary.txt"
