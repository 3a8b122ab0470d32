"""fcdd.training.train against the bare eager training step of the same net, in one run.

For CNN28, CNN32 and VGG11-BN (15 frozen modules, the paper's MVTec setting, and 0 frozen, the
random-init CPU profile): training throughput (images/s) through the training loop (the engine) on its fast path
(train.amp: bf16 autocast where the hardware has native bf16; train.channels_last) and on the plain
fp32 path (both off: the previous code path), next to the bare eager fp32 step. Targets: fast
engine >= 1.3x the bare step on the CPU; the plain engine within a few % of it (overhead).

For each net, times a training step through ``fcdd.training.train`` (an in-memory dict dataset,
num_workers=0 unless --workers; the fastest epoch after the first, checkpoint included) against the
bare forward + backward + optimiser step of the same net on tensors already on the device.

    python benchmarks/bench_train_overhead.py --quick            # < 2 minutes on a 2-core CPU
    python benchmarks/bench_train_overhead.py --device cuda [--workers 4]
    python benchmarks/bench_train_overhead.py --device cuda --nets cnn28 vgg11_bn --compile reduce-overhead

``--compile MODE`` adds a run of the fast engine with ``train.compile=MODE`` (three more columns:
compiled s/step, compiled/bare, compiled img/s; compilation falls in the untimed first epoch).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from fcdd.config import COMPILE_MODES, Config
from fcdd.models import build_net
from fcdd.objectives import fcdd_loss
from fcdd.testing.benchmark import Clock, header, table_head, table_row
from fcdd.training import autocast_bf16, make_optimizer, resolve_device, seed_everything, train


@dataclass
class Case:
    net: str
    input_size: int
    batch: int
    steps: int
    rounds: int = 1  # timed epochs; the fastest counts (the CPU may be shared)
    workers: int = 0  # DataLoader workers of the engine run
    freeze: int = 0  # frozen VGG feature modules


class InMemory(Dataset):
    """Items {"image", "label", "mask", "index"} from tensors in memory (half labelled anomalous)."""

    def __init__(self, n: int, channels: int, size: int):
        self.images = torch.randn(n, channels, size, size)
        self.labels = torch.arange(n) % 2
        self.masks = torch.zeros(n, 1, size, size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "mask": self.masks[i], "index": i}


def config_for(case: Case, device: torch.device, fast: bool = True, compile: str = "off") -> Config:
    cfg = Config()
    cfg.train.compile = compile
    cfg.model.net, cfg.model.input_size, cfg.model.freeze = case.net, case.input_size, case.freeze
    cfg.train.amp = cfg.train.channels_last = fast
    cfg.data.num_workers = case.workers
    t = cfg.train
    t.epochs, t.batch_size, t.optimizer, t.lr = 1 + case.rounds, case.batch, "sgd", 1e-3
    t.progress, t.device = False, str(device)
    return cfg


def _net(case: Case):
    return build_net(case.net, case.input_size, freeze=case.freeze)


def time_engine(
    case: Case, device: torch.device, fast: bool = True, compile: str = "off"
) -> tuple[float, float, float]:
    """(wall, cpu, loop wall) seconds per step through fcdd.training.train: the fastest epoch after
    the first, measured between epoch ends (so the per-epoch checkpoint is included), and the loop
    alone (the loop's own epoch_time_s, without the checkpoint). Wall and CPU (process) time: CPU
    time is the fairer measure on a shared machine."""
    cfg = config_for(case, device, fast, compile)
    seed_everything(0)
    model = _net(case)
    data = InMemory(case.batch * case.steps, model.in_channels, case.input_size)
    clock = Clock(device)
    with tempfile.TemporaryDirectory() as run_dir:
        history = train(model, data, cfg, device, Path(run_dir), callbacks=clock)["history"]
    loop = min(h["epoch_time_s"] for h in history[1:]) / case.steps
    return (*clock.fastest(per=case.steps), loop)


def time_bare(case: Case, device: torch.device) -> tuple[float, float]:
    """(wall, cpu) seconds per bare step on tensors already on the device."""
    cfg = config_for(case, device)
    seed_everything(0)
    model = _net(case).to(device).train()
    optimizer = make_optimizer(model, cfg)
    x = torch.randn(case.batch, model.in_channels, case.input_size, case.input_size, device=device)
    labels = (torch.arange(case.batch) % 2).to(device)
    amp = device.type == "cuda" and cfg.train.amp

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        fcdd_loss(out, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    clock = Clock(device)
    clock.mark()
    for _ in range(case.rounds):
        for _ in range(case.steps):
            step()
        clock.mark()
    return clock.fastest(per=case.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps and VGG at batch 4 (< 2 min on a CPU)"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers for the engine (default 0)"
    )
    parser.add_argument("--bare-first", action="store_true", help="time the bare loop before the engine")
    parser.add_argument(
        "--nets", nargs="+", help="only these cases: NET or NET:FROZEN (cnn28 cnn32 vgg11_bn vgg11_bn:15)"
    )
    parser.add_argument(
        "--compile", choices=COMPILE_MODES[1:], help="also time the fast engine with train.compile=MODE"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    if args.quick:
        # one timed epoch each
        cases = [
            Case("cnn28", 28, 128, 3),
            Case("cnn32", 32, 200, 2),
            Case("vgg11_bn", 224, 4, 2, freeze=15),
            Case("vgg11_bn", 224, 4, 2),
        ]
    else:
        cases = [
            Case("cnn28", 28, 128, 20 if gpu else 6, 2),
            Case("cnn32", 32, 200, 20 if gpu else 4, 2),
            Case("vgg11_bn", 224, 16, 20 if gpu else 3, 2, freeze=15),
            Case("vgg11_bn", 224, 16, 20 if gpu else 3, 2),
        ]

    if args.nets:
        cases = [case for case in cases if case.net in args.nets or f"{case.net}:{case.freeze}" in args.nets]
        if not cases:
            parser.error(
                f"--nets {' '.join(args.nets)}: none of cnn28, cnn32, vgg11_bn, vgg11_bn:15, vgg11_bn:0"
            )
    cases = [replace(case, workers=args.workers) for case in cases]
    print(header(device, "training step through fcdd.training.train vs the bare step (fastest epoch)"))
    print(
        f"DataLoader workers {args.workers}; fast path: bf16 autocast "
        f"{'on' if autocast_bf16(device, True) else 'off (no native bf16)'}, channels-last"
    )
    columns = (
        "net",
        "freeze",
        "batch",
        "steps",
        "bare s/step",
        "plain s/step",
        "fast s/step",
        "plain/bare",
        "bare/fast",
        "fast cpu/bare",
        "bare img/s",
        "plain img/s",
        "fast img/s",
    )
    if args.compile:
        columns += ("compiled s/step", "compiled/bare", "compiled img/s")
        print(f"compiled: the fast engine with train.compile={args.compile}")
    print(table_head(columns))
    for case in cases:
        if args.bare_first:
            bare = time_bare(case, device)
        plain = time_engine(case, device, fast=False)
        fast = time_engine(case, device, fast=True)
        if not args.bare_first:
            bare = time_bare(case, device)
        row = [case.net, case.freeze, case.batch, case.steps, bare[0], plain[0], fast[0]]
        row += [plain[0] / bare[0], bare[0] / fast[0], bare[1] / fast[1]]
        row += [case.batch / bare[0], case.batch / plain[0], case.batch / fast[0]]  # wall-clock throughput
        if args.compile:
            compiled = time_engine(case, device, fast=True, compile=args.compile)
            row += [compiled[0], compiled[0] / bare[0], case.batch / compiled[0]]
        print(table_row([f"{v:.4f}" if isinstance(v, float) else v for v in row], len(columns)), flush=True)


if __name__ == "__main__":
    main()
