"""Training end to end on real data: the previous code path against the fast one, in ONE run.

    python benchmarks/bench_end_to_end.py                       # all four cases, ~15 min on 2 cores
    python benchmarks/bench_end_to_end.py --cases fmnist grid --rounds 3
    python benchmarks/bench_end_to_end.py --quick               # a smoke test: 256 F-MNIST images

Each case trains through ``fcdd.training.train`` with the real loader (workers, anomaly injection,
augmentation) on real data, three paths:

- ``previous``: ``train.amp=false train.channels_last=false data.batch_augment=false``, the code
  path before issue 16 (as fast as the original FCDD code on the same CPU);
- ``fast step``: the defaults except ``data.batch_augment=false`` (bf16 + channels-last only);
- ``fast``: bf16 autocast where the CPU has native bf16, channels-last, batched augmentation (the
  defaults, except that the ``cpu_mvtec`` profile keeps per-sample augmentation: see its comment).

Rounds alternate the paths (ABC, CBA, ...); each round trains ``--epochs`` epochs and the first of
them (DataLoader worker start-up, first-touch allocations) is not counted: the figure is the median
images/s over the other epochs of all rounds (the engine's own epoch clock: data wait included,
per-epoch checkpoint excluded). Single-epoch timings had put the MVTec batched path at 0.87x in the
4th session; these medians put it at 0.96-0.97x, hence the ``cpu_mvtec`` setting (docs/benchmarks.md).

Cases: Fashion-MNIST ``bag`` (CNN28, batch 128, OE), CIFAR-10 ``airplane`` (CNN32, batch 200, OE),
the MVTec grid subset (VGG11-BN at 224, confetti) with the ``cpu_mvtec`` profile (random init, 0
frozen, batch 8) and with the paper's setting (15 frozen modules, batch 16; random weights, the same
arithmetic as the pretrained ones). Run from the repository root.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import load_config
from fcdd.data import build_datasets
from fcdd.models import build_model
from fcdd.testing.benchmark import header, table_head, table_row
from fcdd.training import resolve_device, train

SHARED = Path("../shared/data")
# The main job's copy (scripts/setup_data.sh), else Debian's dataset-fashion-mnist package.
FMNIST = next(
    (p for p in ("data/fashion-mnist", "/usr/share/datasets/fashion-mnist") if Path(p).is_dir()),
    "data/fashion-mnist",
)
PATHS = {
    "previous": ["train.amp=false", "train.channels_last=false", "data.batch_augment=false"],
    "fast step": ["data.batch_augment=false"],
    "fast": ["data.batch_augment=true"],  # explicit: the cpu_mvtec preset turns it off
}
# name: (class, presets, overrides). params.yaml's own sections (the main job's Fashion-MNIST) win
# over presets, hence data.dataset where it is not fmnist; limits keep an epoch at seconds on 2 cores.
CASES = {
    "fmnist": (
        "bag",
        ["fmnist", "cpu"],
        [f"data.root={FMNIST}", "data.train_limit=2048", "anomalies.oe_limit=1000"],
    ),
    "cifar10": (
        "airplane",
        ["cifar10"],
        [
            "data.dataset=cifar10",
            f"data.root={SHARED / 'cifar10_jpeg.zip'}",
            "data.train_limit=1000",
            "anomalies.oe_limit=1000",
        ],
    ),
    "grid": (
        "grid",
        ["mvtec", "cpu_mvtec"],
        # confetti as labelled (cpu_mvtec now recommends other anomalies)
        ["data.dataset=mvtec", f"data.root={SHARED / 'mvtec_ad_subset'}", "anomalies.kind=confetti"],
    ),
    "grid:15": (
        "grid",
        ["mvtec"],
        [
            "data.dataset=mvtec",
            f"data.root={SHARED / 'mvtec_ad_subset'}",
            "model.pretrained=false",
            "train.epoch_repeats=2",
        ],
    ),
}
LABELS = {
    "fmnist": "Fashion-MNIST bag, CNN28 b128, OE",
    "cifar10": "CIFAR-10 airplane, CNN32 b200, OE",
    "grid": "MVTec grid, VGG11-BN 0 frozen b8, confetti",
    "grid:15": "MVTec grid, VGG11-BN 15 frozen b16, confetti",
}


QUICK = ["data.train_limit=256", "anomalies.oe_limit=100"]


def configs(case: str, args: argparse.Namespace, tmp: Path):
    cls, presets, overrides = CASES[case]
    base = [
        *overrides,
        *(QUICK if args.quick else []),
        f"data.cache_dir={tmp / 'cache'}",
        f"data.num_workers={args.workers}",
        f"train.threads={args.threads}",
        f"train.epochs={args.epochs}",
        "train.progress=false",
        "tracking.enabled=false",
        "evaluation.calibration=0",
    ]
    return cls, {p: load_config(args.params, [*base, *o], preset=presets) for p, o in PATHS.items()}


def epoch_rates(cfg, bundle, device: torch.device, run_dir: Path) -> list[float]:
    size = bundle.preprocess["input_size"]
    model = build_model(cfg, bundle.preprocess["channels"], size)
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, cfg.sigma, size)  # as fcdd.experiment
    history = train(model, bundle.train, cfg, device, run_dir, upsampler=upsampler)["history"]
    return [h["images_per_s"] for h in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per case (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round, the first not counted")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (train.threads)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (data.num_workers)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--quick", action="store_true", help="fmnist, 256 images, 1 round of 2 epochs, 0 workers"
    )
    args = parser.parse_args()
    if args.quick:
        args.cases, args.rounds, args.epochs, args.workers = ["fmnist"], 1, 2, 0
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch of a round is not counted")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    title = (
        f"training end to end: {args.rounds} alternating rounds x {args.epochs} epochs (first not counted), "
        f"{args.workers} DataLoader workers; median training images/s"
    )
    print(header(device, title))
    names = list(PATHS)
    ratios = ["fast step / previous", "fast / previous", "fast / fast step"]
    print(table_head(["case", "images/epoch", *names, *ratios]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            cls, cfgs = configs(case, args, Path(tmp))
            bundles = {p: build_datasets(c, cls, seed=0) for p, c in cfgs.items()}
            rates: dict[str, list[float]] = {p: [] for p in names}
            for r in range(args.rounds):
                for p in names if r % 2 == 0 else names[::-1]:
                    run_dir = Path(tmp) / f"{case}-{p}-{r}".replace(" ", "_").replace(":", "_")
                    rates[p] += epoch_rates(cfgs[p], bundles[p], device, run_dir)[1:]
            med = {p: statistics.median(v) for p, v in rates.items()}
            per_epoch = len(bundles["fast"].train) * cfgs["fast"].train.epoch_repeats
            pairs = [("fast step", "previous"), ("fast", "previous"), ("fast", "fast step")]
            cells = [LABELS[case], per_epoch, *(f"{med[p]:.1f}" for p in names)]
            print(table_row([*cells, *(f"{med[a] / med[b]:.2f}" for a, b in pairs)]), flush=True)


if __name__ == "__main__":
    main()
