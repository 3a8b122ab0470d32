"""Is training waiting for data? Time one epoch per case with the engine's own DataLoader.

    python benchmarks/bench_data_loading.py            # full epochs: Fashion-MNIST class 'bag' (6000
                                                       # images, CNN28) and MVTec grid (VGG11-BN, 10x)
    python benchmarks/bench_data_loading.py --quick    # 2048 F-MNIST images, 1 pass of 8 grid images

Per case: the epoch's wall time, the time the loop spent blocked on ``next(loader)`` (data wait),
its share (target < 10%), and the loader's throughput alone (no model). The first batch (worker
start-up) is reported apart. Anomalies as in training: OE (Fashion-MNIST), confetti (grid).
Run from the repository root; ``--workers`` overrides cfg.data.num_workers (default 2).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fcdd.config import load_config
from fcdd.data import build_datasets
from fcdd.engine import make_loader, make_optimizer, resolve_device
from fcdd.hardware import machine_line
from fcdd.loss import fcdd_loss
from fcdd.models import build_model

SHARED = Path("../shared/data")


def cases(args: argparse.Namespace, cache: str) -> list[tuple[str, list[str], list[str], str]]:
    common = [f"data.cache_dir={cache}", "tracking.enabled=false", "evaluation.calibration=0"]  # loading only
    fmnist = [
        "data.dataset=fmnist",
        f"data.root={args.fmnist_root}",
        f"anomalies.oe_source={args.oe_source}",
        "anomalies.oe_limit=1000",
    ]
    grid = ["data.dataset=mvtec", f"data.root={args.mvtec_root}", "model.pretrained=false"]
    if args.quick:
        fmnist += ["data.train_limit=2048"]
        grid += ["data.train_limit=8", "train.epoch_repeats=1", "train.batch_size=8"]
    if args.workers is not None:
        common += [f"data.num_workers={args.workers}"]
    return [
        ("fmnist/cnn28", ["fmnist"], fmnist + common, "bag"),
        ("mvtec-grid/vgg11_bn", ["mvtec"], grid + common, "grid"),
    ]


def time_epoch(name: str, presets: list[str], overrides: list[str], cls: str, device_name: str) -> dict:
    cfg = load_config("params.yaml", overrides, preset=presets)
    device = resolve_device(device_name)
    bundle = build_datasets(cfg, cls, seed=0)
    model = build_model(cfg, in_channels=bundle.preprocess["channels"]).to(device)
    optimizer = make_optimizer(model, cfg)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # The loader alone: images/s the data pipeline can deliver.
    start, images = time.perf_counter(), 0
    for batch in make_loader(bundle.train, cfg, device, seed=0):
        images += len(batch["label"])
    loader_rate = images / (time.perf_counter() - start)

    wait = compute = first = 0.0
    batches = images = 0
    loader = make_loader(bundle.train, cfg, device, seed=1)
    epoch_start = tick = time.perf_counter()
    for batch in loader:
        got = time.perf_counter()
        if batches == 0:
            first = got - tick
        else:
            wait += got - tick
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = fcdd_loss(model(x), y)
        loss.backward()
        optimizer.step()
        sync()
        tick = time.perf_counter()
        compute += tick - got
        batches += 1
        images += len(y)
    total = time.perf_counter() - epoch_start - first
    return {
        "case": name,
        "device": str(device),
        "workers": cfg.data.num_workers,
        "images": images,
        "batches": batches,
        "epoch_s": total,
        "first_batch_s": first,
        "wait_s": wait,
        "wait_pct": 100 * wait / max(total, 1e-9),
        "train_img_s": images / max(total, 1e-9),
        "loader_img_s": loader_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small epochs (CPU-friendly)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: config's)")
    parser.add_argument("--fmnist-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--mvtec-root", default=str(SHARED / "mvtec_ad_subset"))
    parser.add_argument("--oe-source", default=str(SHARED / "imagenet1k_samples"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for name, presets, overrides, cls in cases(args, cache):
            rows.append(time_epoch(name, presets, overrides, cls, args.device))
    head = f"{'case':<22}{'device':<8}{'workers':>8}{'images':>8}{'epoch s':>9}{'1st s':>7}{'wait s':>8}{'wait %':>8}{'train img/s':>12}{'loader img/s':>13}"
    print(machine_line(resolve_device(args.device)))
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['case']:<22}{r['device']:<8}{r['workers']:>8}{r['images']:>8}{r['epoch_s']:>9.2f}{r['first_batch_s']:>7.2f}"
            f"{r['wait_s']:>8.2f}{r['wait_pct']:>7.1f}%{r['train_img_s']:>12.0f}{r['loader_img_s']:>13.0f}"
        )
    print("target: wait % < 10 (time blocked on the loader, first batch excluded)")


if __name__ == "__main__":
    main()
