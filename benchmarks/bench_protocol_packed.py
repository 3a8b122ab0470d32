"""A one-vs-rest protocol trained as ONE packed model, with a time cap: wall time and mean AUC.

All classes of a dataset (seed 0, the paper's presets, OE) train together on one device through
``fcdd.experiment.train_pack``; then ``run_experiment`` evaluates each run (it finds its training
complete). With ``--time-cap S`` training stops after the first epoch that ends past S seconds of
training: the table then gives the AUCs after the epochs done ("stopped at E of N"), and the full
protocol's wall time is *extrapolated* from the measured seconds per epoch (set-up + N epochs +
evaluation), labelled as such. The lambda schedule (Fashion-MNIST) depends on the epoch only, so a
stopped run is exactly the first E epochs of the full one.

    python benchmarks/bench_protocol_packed.py --device cuda --time-cap 150    # Fashion-MNIST, 400 epochs, 10 classes
    python benchmarks/bench_protocol_packed.py --quick                        # CPU smoke: 2 classes, tiny, cap hit
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

try:  # python benchmarks/bench_protocol_packed.py: its folder is on the path
    import bench_quality as bq
except ImportError:  # python -m benchmarks.bench_protocol_packed, from the repository root
    from benchmarks import bench_quality as bq

from fcdd.testing.benchmark import table_head

QUICK = ["train.epochs=3", "data.num_workers=0", "data.train_limit=128", "data.test_limit=200", "anomalies.oe_limit=50",
         "evaluation.heatmap_count=4", "train.batch_size=64"]  # fmt: skip


class TimeUp(Exception):
    """Raised by the stop callback: the time cap has passed at the end of an epoch."""


class EpochClock:
    """On the pack's last model (its checkpoint is the last of the epoch to be written): the wall
    time of each epoch end; raises TimeUp once ``cap`` seconds of training have passed."""

    def __init__(self, cap: float | None):
        self.cap, self.start, self.ends = cap, None, []
        self.images_per_s: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        now = time.perf_counter()
        if self.start is None:  # training began one epoch loop before the first epoch's end
            self.start = now - logs["epoch_time_s"]
        self.ends.append(now)
        self.images_per_s.append(logs["images_per_s"])
        if self.cap is not None and now - self.start > self.cap:
            raise TimeUp


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("fmnist", "cifar10"), default="fmnist")
    p.add_argument("--device", default="cuda", help="cuda | cpu | auto (default cuda)")
    p.add_argument("--classes", nargs="+", help="default: all ten (--quick: the first two)")
    p.add_argument("--time-cap", type=float, help="seconds of training, checked at each epoch's end")
    p.add_argument("--output-dir", default="cache/bench_protocol_packed")
    p.add_argument(
        "--fmnist-root", help="default: data/fashion-mnist, else /usr/share/datasets/fashion-mnist"
    )
    p.add_argument("--cifar-root", default=str(bq.SHARED / "cifar10_jpeg.zip"))
    p.add_argument("--oe-source", default=str(bq.SHARED / "imagenet1k_samples"))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="2 classes, 3 epochs of 128 images, cap 0 s (CPU)")
    args = p.parse_args(argv)
    if args.time_cap is not None and args.time_cap < 0:
        p.error(f"--time-cap {args.time_cap}: must be at least 0 seconds")
    return args


def protocol_config(args: argparse.Namespace):
    """(cfg, jobs): the paper-profile configuration of bench_quality and its (class, seed) jobs."""
    argv = ["--dataset", args.dataset, "--profile", "paper", "--device", args.device, "--params", args.params,
            "--output-dir", args.output_dir, "--cifar-root", args.cifar_root, "--oe-source", args.oe_source]  # fmt: skip
    argv += ["--fmnist-root", args.fmnist_root] if args.fmnist_root else []
    argv += ["--classes", *args.classes] if args.classes else []
    for o in (QUICK if args.quick else []) + ["train.progress=false", *args.override]:
        argv += ["-o", o]
    qargs = bq.parse_args(argv)
    jobs = bq.jobs_for(args.dataset, qargs)
    if args.quick and not args.classes:
        jobs = jobs[:2]
    cfg = bq.load_job_config(jobs[0])  # the jobs differ in their class only
    return cfg, [(job.cls, cfg.train.seeds[0]) for job in jobs], jobs


def run(args: argparse.Namespace) -> dict:
    from fcdd.experiment import run_dir_for, run_experiment, train_pack

    cfg, pack, jobs = protocol_config(args)
    for cls, seed in pack:  # a benchmark times a run from scratch
        shutil.rmtree(run_dir_for(cfg, cls, seed), ignore_errors=True)
    epochs = cfg.train.epochs
    clock = EpochClock(args.time_cap)
    callbacks = [None] * (len(pack) - 1) + [clock]
    start = time.perf_counter()
    stopped = False
    try:
        train_pack(cfg, pack, callbacks=callbacks)
    except TimeUp:
        stopped = True
    trained = time.perf_counter()
    done = len(clock.ends)
    if done == 0:
        raise RuntimeError("no epoch finished")
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.train.epochs = done  # a stopped pack: each run is complete at the epochs done
    rows = []
    for (cls, seed), job in zip(pack, jobs, strict=True):
        m = run_experiment(eval_cfg, cls, seed).metrics
        rows.append(
            {
                "class": cls,
                "image_auc": m.get("image_auc"),
                "paper": job.paper_image,
                "n_test": m.get("n_test"),
            }
        )
    end = time.perf_counter()

    first_end = clock.ends[0]
    per_epoch = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]
    epoch_s = statistics.median(per_epoch) if per_epoch else first_end - clock.start
    setup_s = clock.start - start  # train_pack's data and models, before the first epoch
    eval_s = end - trained
    aucs = [r["image_auc"] for r in rows if r["image_auc"] is not None]
    return {
        "dataset": cfg.data.dataset,
        "device": cfg.train.device,
        "classes": len(pack),
        "epochs": epochs,
        "epochs_done": done,
        "stopped": stopped,
        "setup_s": setup_s,
        "first_epoch_s": first_end - clock.start,
        "epoch_s": epoch_s,
        "train_s": trained - clock.start,
        "eval_s": eval_s,
        "wall_s": end - start,
        "aggregate_images_per_s": len(pack) * statistics.median(clock.images_per_s[1:] or clock.images_per_s),
        # the full protocol: set-up, the first (warm-up) epoch, the rest at the measured pace, evaluation
        "protocol_wall_s": setup_s + (first_end - clock.start) + (epochs - 1) * epoch_s + eval_s,
        "mean_image_auc": sum(aucs) / len(aucs) if aucs else None,
        "paper_mean": statistics.mean(r["paper"] for r in rows),
        "rows": rows,
    }


def format_result(r: dict) -> str:
    trained = f"{r['epochs_done']} of {r['epochs']} epochs" + (
        " (stopped at the time cap)" if r["stopped"] else ""
    )
    lines = [
        f"packed {r['dataset']}: {r['classes']} classes as one model on {r['device']}, {trained}",
        "",
        table_head(["class", "image AUC", "paper", "n test"]),
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['class']} | {bq._f(row['image_auc'])} | {bq._f(row['paper'])} | {row['n_test']} |"
        )
    lines.append(
        f"| **mean of {r['classes']}** | **{bq._f(r['mean_image_auc'])}** | {bq._f(r['paper_mean'])} | |"
    )
    lines += [
        "",
        f"measured: set-up {r['setup_s']:.1f} s, first epoch {r['first_epoch_s']:.2f} s, then "
        f"{r['epoch_s']:.3f} s/epoch ({1 / r['epoch_s']:.2f} epochs/s, {r['aggregate_images_per_s']:.0f} "
        f"training images/s over all models), evaluation {r['eval_s']:.1f} s, wall {r['wall_s']:.1f} s",
    ]
    full = f"full protocol ({r['epochs']} epochs): {r['protocol_wall_s']:.0f} s = {r['protocol_wall_s'] / 60:.1f} min"
    if r["stopped"] or r["epochs_done"] < r["epochs"]:
        lines.append(
            f"EXTRAPOLATED {full} (from the measured s/epoch; AUCs above are after {r['epochs_done']} epochs)"
        )
    else:
        lines.append(f"measured {full}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick and args.time_cap is None:
        args.time_cap = 0.0  # stops after epoch 1: the capped path, end to end
    if args.quick and args.device == "cuda":
        args.device = "auto"
    from fcdd.config import ConfigError
    from fcdd.testing.benchmark import header
    from fcdd.training import resolve_device

    try:
        device = resolve_device(args.device)
        result = run(args)
        result["device"] = str(device)
    except (bq.BenchError, ConfigError) as e:
        print(f"bench_protocol_packed: error: {e}", file=sys.stderr)
        return 2
    text = f"{header(device, 'a one-vs-rest protocol as one packed model')}\n{format_result(result)}"
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
