"""Heatmap inference on the CPU: PyTorch eager vs the exported graph in onnxruntime, OpenVINO and
TorchScript, side by side in one run.

Each backend maps the same preprocessed batch to scores and receptive-field-upsampled heatmaps
[B, 1, H, W] (fp32 everywhere: OpenVINO with INFERENCE_PRECISION_HINT f32, as `fcdd predict` runs
it). Reports images/s (batch / mean call time) and the p50 / p99 latency of one batch call, and
each backend's speed-up over eager. Random weights: speed does not depend on them.

    python benchmarks/bench_export.py                       # VGG11-BN at 224 and CNN28 at 28, batches 1 and 16
    python benchmarks/bench_export.py --quick --nets cnn28  # seconds (the test)
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fcdd.backends import BACKENDS
from fcdd.export import MODEL_FILES, export_detector
from fcdd.testing import untrained_detector
from fcdd.testing.benchmark import header, measure, table

SIZES = {"vgg11_bn": 224, "cnn32": 32, "cnn28": 28}
BACKEND_ORDER = ("eager", "onnx", "openvino", "torchscript")


@dataclass
class Row:
    net: str
    size: int
    backend: str
    batch: int
    latencies: list[float]  # seconds per batch call

    @property
    def images_per_s(self) -> float:
        return self.batch / float(np.mean(self.latencies))

    def ms(self, q: float) -> float:
        return 1000 * float(np.quantile(self.latencies, q))


def time_calls(call, min_calls: int, min_seconds: float) -> list[float]:
    """Seconds per call; two warm-up calls first (allocation, graph compilation, TorchScript's profiling runs)."""
    return measure(call, warmup=2, repeats=min_calls, min_seconds=min_seconds).wall


def bench_net(net: str, batches: list[int], backends: list[str], threads: int, min_calls: int, min_s: float):
    size = SIZES[net]
    det = untrained_detector(net, size, torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fcdd-bench-export-") as tmp:
        runners = {}
        for name in backends:
            if name == "eager":
                runners[name] = lambda x: det.score_tensor(torch.from_numpy(x))
                continue
            export_detector(det, name, Path(tmp) / name)
            runners[name] = BACKENDS[name](Path(tmp) / name / MODEL_FILES[name][0], threads)
        x_all = np.random.default_rng(0).standard_normal((max(batches), det.model.in_channels, size, size))
        for batch in batches:
            x = np.ascontiguousarray(x_all[:batch], dtype=np.float32)
            for name in backends:  # interleaved per batch, so a burst of other load hits all alike
                lat = time_calls(lambda run=runners[name], x=x: run(x), min_calls, min_s)
                rows.append(Row(net, size, name, batch, lat))
                print(f"  {net} {name} batch {batch}: {rows[-1].images_per_s:.1f} images/s", flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    eager = {(r.net, r.batch): r.images_per_s for r in rows if r.backend == "eager"}
    headers = ["net", "input", "backend", "batch", "calls", "images / s", "p50 ms", "p99 ms", "vs eager"]
    cells = []
    for r in rows:
        ratio = r.images_per_s / eager[(r.net, r.batch)] if (r.net, r.batch) in eager else float("nan")
        cells.append(
            [r.net, r.size, r.backend, r.batch, len(r.latencies), f"{r.images_per_s:.1f}",
             f"{r.ms(0.5):.1f}", f"{r.ms(0.99):.1f}", f"{ratio:.2f}x"]
        )  # fmt: skip
    print(table(headers, cells), flush=True)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["vgg11_bn", "cnn28"], choices=sorted(SIZES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--backends", nargs="+", default=list(BACKEND_ORDER), choices=BACKEND_ORDER)
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="threads of every backend"
    )
    parser.add_argument("--min-calls", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=5.0, help="per (net, backend, batch)")
    parser.add_argument("--quick", action="store_true", help="2 calls, 0 s minimum: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    min_calls, min_s = (2, 0.0) if args.quick else (args.min_calls, args.min_seconds)
    print(header("cpu"))
    print(f"{args.threads} threads per backend; torch {torch.__version__}; {_versions()}")
    rows = []
    for net in args.nets:
        rows += bench_net(net, args.batches, args.backends, args.threads, min_calls, min_s)
    print_table(rows)
    return rows


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{n} {version(n)}" for n in ("onnxruntime", "openvino"))


if __name__ == "__main__":
    main()
