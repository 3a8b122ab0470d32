"""Inference throughput of FCDD heatmaps: ``Detector.score_tensor`` on a 224-px VGG11-BN net.

Times scores + low-res maps + receptive-field-upsampled 224x224 heatmaps for preprocessed batches
of 1, 16 and 64 images (fp32; on CUDA also under bf16 autocast), and ``Detector.score`` on raw
uint8 images (preprocessing and heatmaps at each image's own size included). Random weights:
speed does not depend on them.

    python benchmarks/bench_inference.py --quick                 # CPU, < 1 minute on 2 cores
    python benchmarks/bench_inference.py --device cuda [--quick]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from fcdd.data.geometry import size_hw
from fcdd.detector import Detector
from fcdd.testing import untrained_detector as make_detector
from fcdd.testing.benchmark import header, measure, table
from fcdd.training import resolve_device

__all__ = ["Timing", "bench_images", "bench_tensor", "make_detector", "main"]


@dataclass
class Timing:
    net: str
    device: str
    mode: str  # "score_tensor fp32", "score_tensor bf16", "score(uint8 images)"
    batch: int
    calls: int
    seconds_per_call: float  # median wall clock

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds_per_call


def bench_tensor(det: Detector, batch: int, amp: bool, min_calls: int, min_seconds: float) -> Timing:
    device = det.device
    h, w = size_hw(det.preprocess["input_size"])  # an int (square) or [H, W]
    x = torch.randn(batch, det.model.in_channels, h, w, device=device)

    def call() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            det.score_tensor(x)

    t = measure(call, repeats=min_calls, min_seconds=min_seconds, device=device)
    mode = f"score_tensor {'bf16' if amp else 'fp32'}"
    return Timing(det.meta["net"]["net"], str(device), mode, batch, t.calls, t.wall_s)


def bench_images(det: Detector, batch: int, side: int, min_calls: int, min_seconds: float) -> Timing:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(batch)]
    t = measure(
        lambda: det.score(images, batch_size=batch),
        repeats=min_calls,
        min_seconds=min_seconds,
        device=det.device,
    )
    return Timing(det.meta["net"]["net"], str(det.device), f"score(uint8 {side}px)", batch, t.calls, t.wall_s)


def print_table(rows: list[Timing]) -> None:
    headers = ["net", "device", "mode", "batch", "calls", "ms / batch", "images / s"]
    cells = [
        [
            r.net,
            r.device,
            r.mode,
            r.batch,
            r.calls,
            f"{1000 * r.seconds_per_call:.1f}",
            f"{r.images_per_s:.1f}",
        ]
        for r in rows
    ]
    print(table(headers, cells), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls; on CPU batches 1 and 16 only")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument("--net", default="vgg11_bn", help="vgg11_bn | cnn32 | cnn28 (default vgg11_bn)")
    parser.add_argument("--input-size", type=int, default=None, help="default: 224 (VGG), else 28/32")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 16 64")
    parser.add_argument("--image-side", type=int, default=256, help="raw image side for score() timing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    size = args.input_size or {"vgg11_bn": 224, "cnn32": 32, "cnn28": 28}.get(args.net, 224)
    batches = args.batches or ([1, 16] if args.quick and not gpu else [1, 16, 64])
    min_calls, min_seconds = (2, 0.5) if args.quick else (5, 3.0)
    if gpu:
        min_calls, min_seconds = min_calls * 5, min_seconds
    det = make_detector(args.net, size, device)
    print(header(device, f"Detector inference, {args.net} at {size} px (medians)"))
    rows = []
    for amp in [False, True] if gpu else [False]:
        for batch in batches:
            rows.append(bench_tensor(det, batch, amp, min_calls, min_seconds))
    rows.append(bench_images(det, batches[min(1, len(batches) - 1)], args.image_side, 1, min_seconds))
    print_table(rows)


if __name__ == "__main__":
    main()
