"""``fcdd train``: one model per class and seed, evaluated on its test set (tracked when a plugin is)."""

from __future__ import annotations

import argparse
import json
import sys

from fcdd import plugins
from fcdd.cli.common import CLIError, add_config_args, config_from_args, fmt_metrics


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train and evaluate one model per class and seed",
        description="Train FCDD one-vs-rest for each class and seed, evaluate it on the test set and write "
        "runs/<dataset>/<class>/seed<k>/ (model.pt, metrics.json, scores.csv, figures/). "
        "A run folder with a checkpoint of the same settings resumes where it stopped; one of other "
        "settings is an error (--restart discards it).",
    )
    add_config_args(p)
    p.add_argument(
        "--dataset", help="fmnist | cifar10 | imagenet30 | mvtec | folder (overrides data.dataset)"
    )
    p.add_argument("--root", help="raw data folder or zip (overrides data.root)")
    p.add_argument("--classes", nargs="+", help="classes to train (default: data.classes, else all)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: train.seeds; sets train.seeds)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard what earlier runs left in the run folders (checkpoint, model, metrics) and train "
        "from scratch; without it a checkpoint resumes only when it was made with the same settings",
    )
    p.set_defaults(func=run)


class EpochLine:
    """One stderr line per finished epoch: the progress bar shows only on a terminal, and a
    redirected `fcdd train` should still say how far it is."""

    def __init__(self, run: str, epochs: int):
        self.run, self.epochs = run, epochs

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        print(
            f"{self.run}: epoch {epoch}/{self.epochs} loss {logs['loss']:.4g}, lr {logs['lr']:.3g}, "
            f"{logs['images_per_s']:.0f} images/s",
            file=sys.stderr,
            flush=True,
        )


def tracker_or_none(cfg):
    """The plugin's tracker when ``tracking.enabled``; None when tracking is off."""
    if not cfg.tracking.enabled:
        return None
    try:
        return plugins.tracker(cfg)
    except plugins.PluginMissing as e:
        raise CLIError(
            f"tracking.enabled is true but MLflow tracking is not installed ({e.reason}); "
            "pip install fcdd[pipelines], or train with -o tracking.enabled=false"
        ) from e


def run(args: argparse.Namespace) -> int:
    from fcdd.data import class_names
    from fcdd.engine import resolve_device
    from fcdd.experiment import class_slug, known_class
    from fcdd.runs import check_data_root, check_output_folders, run_one, write_summary
    from fcdd.stage_outputs import check_output_owner

    extra = []
    if args.dataset:
        extra.append(f"data.dataset={args.dataset}")
    if args.root:
        extra.append(f"data.root={json.dumps(args.root)}")
    if args.seeds:
        extra.append(f"train.seeds={json.dumps(args.seeds)}")  # checked as the key is (>= 0, distinct)
    cfg = config_from_args(args, extra)
    classes = args.classes or cfg.data.classes or class_names(cfg)
    for cls in classes:
        known_class(cfg, cls)  # an unknown class fails here, before any tracking run is opened
    seeds = cfg.train.seeds
    tracker = tracker_or_none(cfg)
    resolve_device(cfg.train.device)  # cuda without CUDA: said before anything is opened or loaded
    check_data_root(cfg)  # a missing root too: before tracking creates its store (mlruns.db)
    check_output_owner(cfg)  # a DVC stage's output (runs/fmnist of dvc repro) is the stage's alone
    check_output_folders(cfg, classes, seeds)  # a file in the way, no permission: before any work
    rows = []
    for cls in classes:
        for seed in seeds:
            callbacks = EpochLine(f"{cls} seed {seed}", cfg.train.epochs)
            row = run_one(cfg, cls, seed, tracker=tracker, callbacks=callbacks, restart=args.restart)
            note = tracker.describe(row) if tracker is not None else ""
            rows.append(row | {"class": cls})  # the summary's classes as the user named them
            print(f"{cls} seed {seed}: " + fmt_metrics(row) + f"  -> {row['run_dir']}{note}", flush=True)
    summary, path = write_summary(cfg, rows)
    print(f"mean over {len(classes)} classes: " + fmt_metrics(summary["mean"]))
    print(f"per-class table: {path}  (class folders: {', '.join(map(class_slug, classes))})")
    return 0
