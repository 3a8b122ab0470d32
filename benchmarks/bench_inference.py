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
import time
from dataclasses import dataclass

import numpy as np
import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.data.geometry import size_hw
from fcdd.detector import Detector
from fcdd.hardware import machine_line
from fcdd.models import build_net
from fcdd.training import resolve_device, seed_everything

IMAGENET_NORM = {"kind": "meanstd", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass
class Timing:
    net: str
    device: str
    mode: str  # "score_tensor fp32", "score_tensor bf16", "score(uint8 images)"
    batch: int
    calls: int
    seconds_per_call: float

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds_per_call


def make_detector(net: str, input_size: int, device: torch.device) -> Detector:
    seed_everything(0)
    model = build_net(net, input_size)
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, None, input_size)
    preprocess = {
        "input_size": input_size,
        "channels": model.in_channels,
        "resize": None,
        "crop": None,
        "normalisation": IMAGENET_NORM
        if model.in_channels == 3
        else {"kind": "meanstd", "mean": [0.5], "std": [0.5]},
    }
    meta = {"net": {"net": net, "input_size": input_size}, "dataset": "bench", "class": "bench"}
    return Detector(model, upsampler, preprocess, meta).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call, device: torch.device, min_calls: int, min_seconds: float) -> tuple[int, float]:
    """(calls, seconds per call) after one warm-up call; at least min_calls and min_seconds."""
    call()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        call()
        _sync(device)
        calls += 1
    return calls, (time.perf_counter() - start) / calls


def bench_tensor(det: Detector, batch: int, amp: bool, min_calls: int, min_seconds: float) -> Timing:
    device = det.device
    h, w = size_hw(det.preprocess["input_size"])  # an int (square) or [H, W]
    x = torch.randn(batch, det.model.in_channels, h, w, device=device)

    def call() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            det.score_tensor(x)

    calls, per_call = time_calls(call, device, min_calls, min_seconds)
    mode = f"score_tensor {'bf16' if amp else 'fp32'}"
    return Timing(det.meta["net"]["net"], str(device), mode, batch, calls, per_call)


def bench_images(det: Detector, batch: int, side: int, min_calls: int, min_seconds: float) -> Timing:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(batch)]
    calls, per_call = time_calls(
        lambda: det.score(images, batch_size=batch), det.device, min_calls, min_seconds
    )
    return Timing(det.meta["net"]["net"], str(det.device), f"score(uint8 {side}px)", batch, calls, per_call)


def print_table(rows: list[Timing]) -> None:
    print("| net | device | mode | batch | calls | ms / batch | images / s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.net} | {r.device} | {r.mode} | {r.batch} | {r.calls} | "
            f"{1000 * r.seconds_per_call:.1f} | {r.images_per_s:.1f} |",
            flush=True,
        )


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
    name = torch.cuda.get_device_name(device) if gpu else f"{torch.get_num_threads()} torch threads"
    print(machine_line(device))
    print(f"Detector inference, {args.net} at {size} px, device {device} ({name}), torch {torch.__version__}")
    rows = []
    for amp in [False, True] if gpu else [False]:
        for batch in batches:
            rows.append(bench_tensor(det, batch, amp, min_calls, min_seconds))
    rows.append(bench_images(det, batches[min(1, len(batches) - 1)], args.image_side, 1, min_seconds))
    print_table(rows)


if __name__ == "__main__":
    main()
