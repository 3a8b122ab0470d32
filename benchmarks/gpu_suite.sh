#!/usr/bin/env bash
# Every GPU measurement of issue 17, one part after another, each under its own `timeout`
# (expected about 5 + 2.5 minutes on an H200; the limits below are hard stops):
#   overhead   engine vs bare training step, CNN28 (batch 128), CNN32, VGG11-BN (batch 16)      60 s
#   compiled   CNN28 and VGG11-BN (15 frozen) with train.compile=reduce-overhead (CUDA graphs)
#              next to the eager engine and the bare step: on vs off                             120 s
#   packed     packed K=10 CNN28 training steps vs ten separate models, aggregate images/s        40 s
#   fmnist     the paper's Fashion-MNIST protocol (400 epochs, 10 classes, seed 0, OE) as ONE
#              packed model: training capped at GPU_SUITE_FMNIST_CAP s (60), the rest
#              extrapolated from the measured s/epoch and labelled so; mean image AUC            180 s
#   inference  heatmap inference (Detector.score_tensor) fp32 and bf16                            45 s
#   cifar10    CIFAR-10 full protocol, 10 classes side by side (one process each), epochs from a
#              2-epoch probe to fit GPU_SUITE_CIFAR_S (120); per-class AUC next to the paper's   130 s
# GPU_SUITE_PARTS chooses parts (default: all); a part whose data are not here is skipped with a
# line saying what is missing. The device tool carries at most 64 MiB, and Fashion-MNIST (29.5 MiB)
# and CIFAR-10 (59.3 MiB) do not fit together, so the suite runs as two calls of this script
# (benchmarks/README.md): the first carries .device/fmnist and .device/oe_pool.zip (cifar10 is
# skipped), the second, at once after it, GPU_SUITE_PARTS=cifar10 with .device/cifar10_jpeg.zip
# and .device/oe_pool.zip.
# $OUT gets four files (the device returns at most 8): summary.txt (machine, each part's exit
# status and seconds), tables.md (every part's table), suite.log (all output), details.tar.gz (logs
# and result JSONs of the runs; no checkpoints).
#
#   OUT=<dir> bash benchmarks/gpu_suite.sh                       # on the device machine
#   GPU_SUITE_QUICK=1 bash benchmarks/gpu_suite.sh               # logic check on any machine (CPU), tiny
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_suite_out}
QUICK=${GPU_SUITE_QUICK:-0}
PARTS=${GPU_SUITE_PARTS:-overhead compiled packed fmnist inference cifar10}
RUNS=${GPU_SUITE_RUNS:-$PWD/cache/gpu_suite}
OE=.device/oe_pool.zip
CIFAR=.device/cifar10_jpeg.zip
FMNIST=${GPU_SUITE_FMNIST:-.device/fmnist}
mkdir -p "$OUT" "$RUNS"
rm -rf "$RUNS/logs" "$RUNS/cifar10" "$RUNS/fmnist" # stale tables must not pass for this run's
mkdir -p "$RUNS/logs"
start=$SECONDS

if [ "$QUICK" = 1 ]; then
    DEVICE=${GPU_SUITE_DEVICE:-auto}
    [ -d "$FMNIST" ] || FMNIST=$(ls -d data/fashion-mnist /usr/share/datasets/fashion-mnist 2>/dev/null | head -1)
    # Generous hard stops: the 2-core CPUs here are shared, and under load every part runs 5x slower.
    T_OVERHEAD=8 T_COMPILED=8 T_PACKED=150 T_FMNIST=240 T_INFERENCE=120
    OVERHEAD_ARGS=(--quick) COMPILED_ARGS=(--quick --nets cnn28) PACKED_ARGS=(--k 1 2 --steps 1 --rounds 1)
    INFERENCE_ARGS=(--quick --net cnn28 --batches 1 4)
    FMNIST_ARGS=(--quick)
    CIFAR_ARGS=(--classes airplane automobile --max-epochs 3 -o data.train_limit=100 -o data.test_limit=200
        -o anomalies.oe_limit=50 -o evaluation.heatmap_count=4)
    CIFAR_S=${GPU_SUITE_CIFAR_S:-300} # two processes reading the zip and starting torch on a shared CPU
else
    DEVICE=${GPU_SUITE_DEVICE:-cuda}
    T_OVERHEAD=60 T_COMPILED=120 T_PACKED=40 T_FMNIST=180 T_INFERENCE=45
    OVERHEAD_ARGS=(--nets cnn28 cnn32 vgg11_bn) COMPILED_ARGS=(--nets cnn28 vgg11_bn:15)
    PACKED_ARGS=(--k 1 10 --net cnn28 --rounds 3)
    INFERENCE_ARGS=() FMNIST_ARGS=(--time-cap "${GPU_SUITE_FMNIST_CAP:-60}")
    CIFAR_ARGS=()
    CIFAR_S=${GPU_SUITE_CIFAR_S:-120}
fi

: >"$OUT/summary.txt"
: >"$OUT/tables.md"
suite() {
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    echo "cpus $(nproc), device $DEVICE, parts: $PARTS"
    $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} 2>&1 | tee -a "$OUT/summary.txt"

wanted() { [[ " $PARTS " == *" $1 "* ]]; }
missing() { # part, files...: say which data a part lacks
    local part=$1 f
    shift
    for f in "$@"; do
        if [ -z "$f" ] || [ ! -e "$f" ]; then
            echo "$part: skipped, missing ${f:-the Fashion-MNIST folder} (benchmarks/README.md)" | tee -a "$OUT/summary.txt"
            return 0
        fi
    done
    return 1
}
# part, seconds, command...: run it under `timeout`, its output in $RUNS/logs/<part>.txt
part() {
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "== $name (at most $limit s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$RUNS/logs/$name.txt"
    rc=${PIPESTATUS[0]}
    echo "$name: exit $rc after $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$OUT/summary.txt"
    if grep -q "train.compile=.*training eager" "$RUNS/logs/$name.txt"; then
        grep -m1 "train.compile=.*training eager" "$RUNS/logs/$name.txt" | tee -a "$OUT/summary.txt"
    fi
    { echo "## $name"; echo; echo '```'; grep -v '^loaded \|^  test \|^  train ' "$RUNS/logs/$name.txt"; echo '```'; echo; } >>"$OUT/tables.md"
}

if wanted overhead; then
    part train_overhead "$T_OVERHEAD" $PY benchmarks/bench_train_overhead.py --device "$DEVICE" "${OVERHEAD_ARGS[@]}"
fi
if wanted compiled; then
    part train_compiled "$T_COMPILED" $PY benchmarks/bench_train_overhead.py --device "$DEVICE" \
        --compile reduce-overhead "${COMPILED_ARGS[@]}"
fi
if wanted packed; then
    part packed "$T_PACKED" $PY benchmarks/bench_packed.py --device "$DEVICE" "${PACKED_ARGS[@]}"
fi
if wanted fmnist && ! missing fmnist "$FMNIST" "$OE"; then
    part fmnist_packed "$T_FMNIST" $PY benchmarks/bench_protocol_packed.py --dataset fmnist --device "$DEVICE" \
        --fmnist-root "$FMNIST" --oe-source "$OE" --output-dir "$RUNS/fmnist" "${FMNIST_ARGS[@]}"
fi
if wanted inference; then
    part inference "$T_INFERENCE" $PY benchmarks/bench_inference.py --device "$DEVICE" "${INFERENCE_ARGS[@]}"
fi
if wanted cifar10 && ! missing cifar10 "$CIFAR" "$OE"; then
    # bench_quality stops its jobs at the budget itself; `timeout` is the hard stop behind it.
    part cifar10 $((CIFAR_S + 10)) $PY benchmarks/bench_quality.py --dataset cifar10 --profile paper \
        --device "$DEVICE" --parallel 10 --workers 1 --time-budget "$CIFAR_S" --output-dir "$RUNS/cifar10" \
        --cifar-root "$CIFAR" --oe-source "$OE" -o train.threads=1 -o train.progress=false "${CIFAR_ARGS[@]}"
    [ -f "$RUNS/cifar10/results.md" ] && { echo "## cifar10 table"; echo; cat "$RUNS/cifar10/results.md"; echo; } >>"$OUT/tables.md"
fi

# Logs and result JSONs of every run (no checkpoints or models: they would not fit) as one archive.
(cd "$RUNS" && find . \( -name '*.log' -o -name '*.json' -o -name '*.md' -o -name '*.txt' \) -print0 |
    tar --null -czf "$OUT/details.tar.gz" -T -) 2>/dev/null
echo "gpu_suite: done in $((SECONDS - start)) s; summary, tables, log and details in $OUT" | tee -a "$OUT/summary.txt"
}
suite 2>&1 | tee "$OUT/suite.log"
