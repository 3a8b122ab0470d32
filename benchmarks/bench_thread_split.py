"""Intra-op threads vs DataLoader workers on a small CPU: the real training path, side by side.

Trains Fashion-MNIST class 'bag' (CNN28 + OE, the main job's settings: bf16/channels-last where the
CPU has them, batched augmentation) for one short epoch per case through ``fcdd.training.train``, in
alternating rounds, and reports the median images/s of each (torch threads, workers) split with the
ratio to the default split (``train.threads`` 2, ``data.num_workers`` 2 of the cpu preset).

    python benchmarks/bench_thread_split.py                   # 3 rounds, 3000 training images
    python benchmarks/bench_thread_split.py --rounds 1 --limit 512
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from fcdd.config import load_config
from fcdd.data import build_datasets
from fcdd.models import build_model
from fcdd.testing.benchmark import header, table
from fcdd.training import resolve_device, train

SPLITS = [(2, 2), (2, 0), (2, 1), (1, 1), (1, 2)]  # (torch threads, DataLoader workers); first = default


class Rate:
    def __init__(self) -> None:
        self.images_per_s = 0.0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.images_per_s = float(logs["images_per_s"])


def one_epoch(bundle, threads: int, workers: int, args: argparse.Namespace, tmp: Path) -> float:
    overrides = [
        f"data.root={args.fmnist_root}",
        f"anomalies.oe_source={args.oe_source}",
        f"train.threads={threads}",
        f"data.num_workers={workers}",
        "train.epochs=1",
        "tracking.enabled=false",
        "evaluation.calibration=0",
    ]
    cfg = load_config("params.yaml", overrides, preset=["fmnist", "cpu"])
    model = build_model(cfg, in_channels=bundle.preprocess["channels"])
    rate = Rate()
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    train(model, bundle.train, cfg, resolve_device("cpu"), run_dir, callbacks=rate, seed=0)
    return rate.images_per_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--limit", type=int, default=3000, help="nominal training images (data.train_limit)")
    p.add_argument("--fmnist-root", default="data/fashion-mnist")
    p.add_argument("--oe-source", default="../shared/data/imagenet1k_samples")
    args = p.parse_args()
    print(header("cpu", f"torch threads vs DataLoader workers, {args.rounds} alternating rounds"))
    base = [
        f"data.root={args.fmnist_root}",
        f"anomalies.oe_source={args.oe_source}",
        f"data.train_limit={args.limit}",
        "evaluation.calibration=0",
        "tracking.enabled=false",
    ]
    bundle = build_datasets(load_config("params.yaml", base, preset=["fmnist", "cpu"]), "bag", seed=0)
    rates: dict[tuple[int, int], list[float]] = {s: [] for s in SPLITS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for threads, workers in SPLITS:
                rates[(threads, workers)].append(one_epoch(bundle, threads, workers, args, Path(tmp)))
    ref = statistics.median(rates[SPLITS[0]])
    headers = [
        "torch threads",
        "DataLoader workers",
        "training images/s (median)",
        "ratio to 2 threads + 2 workers",
    ]
    medians = {split: statistics.median(rates[split]) for split in SPLITS}
    print(table(headers, [[t, w, f"{medians[t, w]:.0f}", f"{medians[t, w] / ref:.2f}"] for t, w in SPLITS]))


if __name__ == "__main__":
    main()
