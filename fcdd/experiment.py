"""One experiment: train FCDD on one (dataset, class, seed), evaluate it, write its run folder.

This is the unit the CLI, the DVC stages and the Prefect flows all run. ``train_pack`` trains K
runs at once as one packed model; ``run_experiment`` on each afterwards finds its training complete
and only evaluates. Run identity and folder: fcdd/run_folder.py; evaluation: fcdd/evaluation.py.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fcdd import calibration as conformal
from fcdd import checkpoint_store
from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.batchnorm import recalibrate_batchnorm
from fcdd.config import Config
from fcdd.data import DataBundle, build_datasets
from fcdd.detector import Detector
from fcdd.evaluation import evaluate, score_heatmaps
from fcdd.fingerprint import fingerprint
from fcdd.image_scores import DEFAULT_IMAGE_SCORE
from fcdd.models import build_model
from fcdd.objectives import DEFAULT as DEFAULT_OBJECTIVE
from fcdd.objectives import net_variant, objective_name, training_config
from fcdd.run_folder import (
    RunResult,
    canonical_class,
    class_slug,
    clear_run_folder,
    known_class,
    run_dir_for,
    write_calibration,
    write_data_files,
)
from fcdd.runlock import run_folder_lock
from fcdd.separation import write_separation
from fcdd.stored_config import config_to_store, root_from_model
from fcdd.training import Runtime, seed_everything, train, train_packed

__all__ = [
    "RunResult",
    "canonical_class",
    "class_slug",
    "evaluate",
    "known_class",
    "run_dir_for",
    "run_experiment",
    "score_heatmaps",
    "train_pack",
]


@dataclass
class _Run:
    """One run's identity: its own configuration (its class and seed), folder and fingerprint."""

    cfg: Config
    cls: str
    seed: int
    run_dir: Path
    settings: dict[str, Any]


@dataclass
class _Built:
    """What a run trains: its data, and the net with its initial weights."""

    data: DataBundle
    model: torch.nn.Module
    upsampler: ReceptiveFieldUpsampler


def _identify(cfg: Config, cls: str, seed: int) -> _Run:
    """The run's own configuration: logged parameters show its class and seed."""
    cfg = copy.deepcopy(cfg)
    cls = known_class(cfg, cls)  # a folder's one class: checked before data.classes names it
    cfg.train.seeds, cfg.data.classes = [seed], [cls]
    return _Run(cfg, cls, seed, run_dir_for(cfg, cls, seed), fingerprint(cfg, cls, seed))


def _build(run: _Run, device: torch.device) -> _Built:
    """The same for a run alone and in a pack, so that a pack's checkpoints resume alone."""
    data = build_datasets(training_config(run.cfg), run.cls, run.seed)  # ae: nominal images only
    seed_everything(run.seed)  # the network's initial weights repeat with the seed
    input_size = data.preprocess["input_size"]  # model.input_size as resolved for this data (keep_aspect)
    model = build_model(run.cfg, data.preprocess["channels"], input_size, net_variant(run.cfg)).to(device)
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, run.cfg.sigma, input_size).to(device)
    return _Built(data, model, upsampler)


def run_experiment(
    cfg: Config, cls: str, seed: int, callbacks: Any = None, restart: bool = False
) -> RunResult:
    """Train (resuming from the run folder's checkpoint when its settings match), save model.pt,
    evaluate, save again with the metrics. The run folder is locked throughout; ``restart`` first
    removes what an earlier run left in it (checkpoint, model, metrics, figures)."""
    device = Runtime.from_config(cfg).device
    run = _identify(cfg, cls, seed)
    with run_folder_lock(run.run_dir):
        if restart:
            clear_run_folder(run.run_dir)
            checkpoint_store.discard(run.cfg, run.run_dir)
        return _run_locked(run, _build(run, device), device, callbacks)


def _run_locked(run: _Run, built: _Built, device: torch.device, callbacks: Any) -> RunResult:
    cfg, run_dir, data, model = run.cfg, run.run_dir, built.data, built.model
    write_data_files(run_dir, data)
    fit = train(
        model, data.train, cfg, device, run_dir, upsampler=built.upsampler, callbacks=callbacks,
        seed=run.seed, settings=run.settings,
    )  # fmt: skip
    history = fit["history"]
    bn_images = recalibrate_batchnorm(
        model, data.train, device, cfg.train.batch_size, cfg.train.bn_recalibration, run.seed
    )
    meta = _model_meta(run, data.preprocess["input_size"], len(history), bn_images)
    detector = Detector(model, built.upsampler, data.preprocess, meta)
    # The trained model is on disk before calibration and evaluation: a failure there never loses
    # it, and no metrics of an earlier model stay beside it.
    (run_dir / "metrics.json").unlink(missing_ok=True)
    model_path = detector.save(run_dir / "model.pt")
    # scoring a large test set takes a while: say so, one line per run
    held_out = f"{len(data.calibration)} calibration and " if data.calibration is not None else ""
    print(
        f"{run.cls} seed {run.seed}: evaluating: scoring {held_out}{len(data.test)} test images, heatmaps",
        file=sys.stderr,
        flush=True,
    )
    detector.meta["calibration"] = conformal.score_calibration(
        detector, data.calibration, cfg.evaluation.batch_size
    )
    metrics, artifacts = evaluate(
        detector, data.test, cfg, run_dir, title=f"{cfg.data.dataset} · {run.cls} · seed {run.seed}"
    )
    metrics.update({"dataset": cfg.data.dataset, "class": run.cls, "seed": run.seed, "epochs": len(history)})
    artifacts.update(write_separation(data, detector, cfg, run.cls, run.seed, history, run_dir))
    # n, score quantiles, thresholds (strict JSON: a threshold that does not exist is null)
    artifacts["calibration"] = write_calibration(
        run_dir / "calibration.json", conformal.summary(detector.meta["calibration"])
    )
    detector.meta["metrics"] = {
        k: v for k, v in metrics.items() if isinstance(v, (int, float, str, type(None)))
    }
    detector.save(model_path)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return RunResult(cfg.data.dataset, run.cls, run.seed, run_dir, metrics, history, model_path, artifacts)


def _model_meta(run: _Run, input_size: Any, epochs: int, bn_images: int) -> dict[str, Any]:
    """model.pt's meta: what Detector.load rebuilds the net from, and where the result came from."""
    cfg = run.cfg
    meta = {
        # image_score beside the net (below), so that the mean's files keep their bytes
        "net": {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "image_score"}
        | {"input_size": input_size},
        "dataset": cfg.data.dataset,
        "class": run.cls,
        "seed": run.seed,
        "quantile": cfg.quantile,
        "input_size": input_size,
        "config": {k: _plain(v) for k, v in config_to_store(cfg.flat()).items()},
        **root_from_model(cfg.data.root, run.run_dir),  # evaluate finds the data from any folder
        "settings": run.settings,
        "epochs": epochs,
        "bn_recalibration": {"mode": cfg.train.bn_recalibration, "images": bn_images},
    }
    if objective_name(cfg) != DEFAULT_OBJECTIVE:  # FCDD's files name none: their bytes as before
        meta["objective"] = objective_name(cfg)
    if cfg.model.image_score != DEFAULT_IMAGE_SCORE:  # likewise: the mean's files as before
        meta["image_score"] = cfg.model.image_score
    return meta


def _plain(v):
    """Config values as plain types torch.load(weights_only=True) accepts."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)


def train_pack(
    cfg: Config, jobs: list[tuple[str, int]], callbacks: list[Any] | None = None, restart: bool = False
) -> list[Path]:
    """The training half of :func:`run_experiment` for K (class, seed) runs at once.

    Each run's data and initial weights are built exactly as run_experiment builds them; the pack
    trains them together (fcdd/training: one loop, a K-wide model) and leaves every run folder's
    checkpoint at the last epoch, so that run_experiment on each job afterwards finds its training
    complete and only evaluates and saves (with its own tracking, registry version and metrics).
    ``restart`` clears each run folder first, as run_experiment's. Returns the run folders."""
    device = Runtime.from_config(cfg).device
    runs = [_identify(cfg, cls, seed) for cls, seed in jobs]
    with contextlib.ExitStack() as locks:  # each run folder locked, as run_experiment locks it
        for run in runs:
            locks.enter_context(run_folder_lock(run.run_dir))
            if restart:
                clear_run_folder(run.run_dir)
                checkpoint_store.discard(run.cfg, run.run_dir)
        built = [_build(run, device) for run in runs]
        for run, b in zip(runs, built, strict=True):
            if b.model.input_size != built[0].model.input_size:  # data.resize keep_aspect, per split
                raise ValueError(
                    f"orchestration.pack: class {run.cls} seed {run.seed} has inputs of {b.model.input_size}, "
                    f"the pack's first run {built[0].model.input_size}; one pack trains one input size "
                    "(set model.input_size: [H, W])"
                )
        train_packed(
            [b.model for b in built], [b.data.train for b in built], cfg, device,
            [run.run_dir for run in runs], [run.seed for run in runs], upsampler=built[0].upsampler,
            callbacks=callbacks, settings=[run.settings for run in runs],
        )  # fmt: skip
    return [run.run_dir for run in runs]
