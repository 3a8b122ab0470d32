"""The training loop: read :func:`fit` top to bottom.

One loop for one model (:func:`train`) and for K models trained as one packed model
(:func:`train_packed`, fcdd/training/packed.py): the net it is given says how batches are stacked
and how states are cut per run; everything else -- runtime, objective, data, optimiser, schedule,
checkpoints, the step -- is the same code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.data.batch_augment import device_augment
from fcdd.errors import TrainingError
from fcdd.fingerprint import fingerprint
from fcdd.training.checkpoint import (
    CHECKPOINT,
    checkpoint_state,
    pull,
    push,
    restore,
    resumable_states,
    save_checkpoint,
)
from fcdd.training.loading import make_loader
from fcdd.training.packed import PackedModel, Single
from fcdd.training.recipe import build_objective, make_optimizer, make_scheduler
from fcdd.training.runtime import Runtime, say_once, seed_everything
from fcdd.training.step import TrainStep

CUDA_CHECK_EVERY = 25  # steps between loss checks on CUDA (each check waits for the GPU)


@dataclass
class Run:
    """One run the loop trains: its data, run folder, seed, settings fingerprint and callbacks."""

    train_set: Dataset
    run_dir: Path
    seed: int
    settings: dict[str, Any]
    callbacks: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    model: nn.Module,
    train_set: Dataset,
    cfg,
    device: torch.device | str,
    run_dir: Path,
    upsampler: ReceptiveFieldUpsampler | None = None,
    callbacks: Any = None,
    seed: int | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``train_set`` (items {"image", "label", "mask", "index"}) for
    ``cfg.train.epochs`` epochs, checkpointing to ``run_dir/checkpoint.pt`` and resuming from it.
    ``seed`` defaults to ``cfg.train.seeds[0]``. Epochs are counted from 1: ``callbacks.on_epoch_end(
    epoch, logs)`` gets the number of epochs completed and logs {epoch, loss, lr, images_per_s,
    epoch_time_s}. ``settings`` is the run's :func:`fcdd.fingerprint.fingerprint` (default: from ``cfg``
    and ``seed``): stored in the checkpoint, and a checkpoint made with other settings is refused.
    Returns {"history": [logs per epoch], "loss_kind", "resumed_from_epoch", "checkpoint", "settings"}."""
    seed = cfg.train.seeds[0] if seed is None else seed
    run = Run(train_set, Path(run_dir), seed, settings or fingerprint(cfg, seed=seed), callbacks)
    return fit(Single(model), [run], cfg, device, upsampler)[0]


def train_packed(
    models: list[nn.Module],
    train_sets: list[Any],
    cfg,
    device: torch.device | str,
    run_dirs: list[Path],
    seeds: list[int],
    upsampler: ReceptiveFieldUpsampler | None = None,
    callbacks: list[Any] | None = None,
    settings: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train K models as one: model k on ``train_sets[k]`` with ``seeds[k]``, checkpointing to
    ``run_dirs[k]``. Returns one :func:`train`-style result per model and leaves the trained
    weights in ``models``. The training sets must give the same number of batches per epoch."""
    if not (len(train_sets) == len(run_dirs) == len(seeds) == len(models)):
        raise ValueError("train_packed: models, train_sets, run_dirs and seeds must have one entry per model")
    # Each model's fingerprint, as train computes it: a packed checkpoint resumes alone too.
    settings = settings or [fingerprint(cfg, seed=s) for s in seeds]
    callbacks = callbacks or [None] * len(models)
    runs = [
        Run(s, Path(d), seed, fp, cb)
        for s, d, seed, fp, cb in zip(train_sets, run_dirs, seeds, settings, callbacks, strict=True)
    ]
    net = PackedModel([m.to(torch.device(device)) for m in models])
    return fit(net, runs, cfg, device, upsampler)


def fit(
    net: Single | PackedModel,
    runs: list[Run],
    cfg,
    device: torch.device | str,
    upsampler: ReceptiveFieldUpsampler | None = None,
) -> list[dict[str, Any]]:
    """Train ``net`` (one model, or K packed: one per run) for ``cfg.train.epochs`` epochs."""
    t = cfg.train
    # runtime: device, bf16 or fp32, threads (decided in one place)
    rt = Runtime.from_config(cfg, device)
    # recipe, part 1: the objective; it names the batch keys the loader collates
    objective = build_objective(cfg, upsampler).to(rt.device)
    net.place(rt.device, rt.channels_last)
    # data: one seeded loader per run, augmented on the device where data.augment_on puts it
    loaders = _loaders(runs, cfg, rt.device, ("image", *objective.keys))
    augments = [device_augment(run.train_set, cfg.data.augment_on, rt.device) for run in runs]
    # recipe, part 2: optimiser and learning-rate schedule
    optimizer = make_optimizer(net.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    # checkpoint: resume where the run folders stand (after a later epoch from the shared store)
    start_epoch = _resume(net, runs, cfg, optimizer, scheduler, loaders)

    # the step: forward (autocast), the objective's loss, backward; eager or compiled (train.compile)
    def forward_loss(x: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with rt.autocast():
            out = net(x)
        return net.loss(objective, out, batch)

    step = TrainStep(forward_loss, t.compile, rt.device, *net.step_tensors(), say_once)

    for epoch in range(start_epoch, t.epochs):
        lr = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        losses, images = _train_epoch(net, loaders, augments, step, optimizer, rt, objective.keys, cfg, epoch)
        epoch_time = time.perf_counter() - started
        scheduler.step()
        for k, run in enumerate(runs):
            logs = {
                "epoch": epoch + 1,
                "loss": losses[k],
                "lr": lr,
                "images_per_s": images / epoch_time,  # this run's images (a pack did K times as many)
                "epoch_time_s": epoch_time,
                **({"packed": net.k} if net.k > 1 else {}),
            }
            run.history.append(logs)
            state = checkpoint_state(
                epoch + 1,
                net.state_dict(k),
                net.optimizer_state(optimizer.state_dict(), k),
                scheduler.state_dict(),
                loaders[k],
                run.history,
                objective.loss_kind,
                run.settings,
            )
            save_checkpoint(run.run_dir / CHECKPOINT, state)
            push(cfg, run.run_dir, epoch + 1)
            if callable(getattr(run.callbacks, "on_epoch_end", None)):
                run.callbacks.on_epoch_end(epoch + 1, dict(logs))

    net.finish()
    resumed_from = start_epoch if start_epoch else None
    return [
        {
            "history": run.history,
            "loss_kind": objective.loss_kind,
            "resumed_from_epoch": resumed_from,
            "checkpoint": str(run.run_dir / CHECKPOINT),
            "settings": run.settings,
        }
        for run in runs
    ]


def _loaders(runs: list[Run], cfg, device: torch.device, keys: tuple[str, ...]) -> list[DataLoader]:
    loaders = []
    for run in runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(run.seed)  # the last run's seed leaves torch's generator as a run of its own would
        loaders.append(make_loader(run.train_set, cfg, device, run.seed, keys))
    steps = [len(loader) for loader in loaders]
    if len(set(steps)) > 1:
        sizes = [len(run.train_set) for run in runs]  # type: ignore[arg-type]
        raise TrainingError(
            f"packed training needs training sets with the same number of batches; sizes {sizes} give "
            f"{steps} (set orchestration.pack: 1 to train them one by one)"
        )
    return loaders


def _resume(net, runs: list[Run], cfg, optimizer, scheduler, loaders: list[DataLoader]) -> int:
    """The epoch to start from: 0, or where the runs' checkpoints stand (restored into everything)."""
    run_dirs = [run.run_dir for run in runs]
    pull(cfg, run_dirs)  # a later epoch another worker left in the shared store, if any
    states = resumable_states(run_dirs, [run.settings for run in runs], cfg.train.epochs)
    if states is None:
        return 0
    restore(run_dirs[0] / CHECKPOINT, states, net, optimizer, scheduler, loaders)
    for run, state in zip(runs, states, strict=True):
        run.history = list(state["history"])
    return int(states[0]["epoch"])


def _train_epoch(
    net, loaders, augments, step: TrainStep, optimizer, rt: Runtime, keys, cfg, epoch: int
) -> tuple[list[float], int]:
    """One pass of every loader; returns each run's mean loss and the images one run saw."""
    t = cfg.train
    net.train()
    steps = len(loaders[0])
    check_every = 1 if rt.device.type == "cpu" else CUDA_CHECK_EVERY
    losses: list[torch.Tensor] = []  # a scalar per step (K packed: [K])
    images, checked, started = 0, 0, time.perf_counter()
    # One iter() per epoch and loader: each advances the sampler's generator (tqdm.asyncio would call it twice).
    bar = tqdm(
        zip(*[iter(loader) for loader in loaders], strict=True),
        total=steps,
        desc=f"epoch {epoch + 1}/{t.epochs}",
        # None: only on a terminal; in logs (DVC, Prefect workers, CI) the per-epoch line says it all.
        disable=None if t.progress else True,
        leave=False,
    )
    for i, batches in enumerate(bar):
        batches = [b if augment is None else augment(b) for augment, b in zip(augments, batches, strict=True)]
        x, batch = net.inputs(batches, keys, rt.device, rt.channels_last)
        # Gradient accumulation; the last group of an epoch may be shorter, so scale by its size
        # (and never carry gradients into the next epoch: checkpoints do not hold them).
        group_start = i - i % t.accumulate
        group_size = min(t.accumulate, steps - group_start)
        losses.append(step(x, batch, group_size))  # forward, loss, backward of loss / group_size
        if i + 1 == group_start + group_size:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        images += x.shape[-4]  # [B, C, H, W], packed [K, B, C, H, W]: one run's images
        if (i + 1) % check_every == 0 or i + 1 == steps:
            _check_finite(losses, checked, epoch, optimizer.param_groups[0]["lr"], net.k)
            checked = len(losses)
            if not bar.disable:
                rate = images / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{losses[-1].mean().item():.4g}", img_s=f"{rate:.0f}")
    bar.close()
    return net.epoch_losses(losses), images


def _check_finite(losses: list[torch.Tensor], start: int, epoch: int, lr: float, k: int) -> None:
    """Raise on the first non-finite loss since ``start`` (earlier ones were checked already)."""
    new = torch.stack(losses[start:])
    finite = torch.isfinite(new).reshape(len(new), -1).all(1).tolist()
    bad = next((start + i for i, ok in enumerate(finite) if not ok), None)
    if bad is None:
        return
    if k == 1:
        what = f"loss is {losses[bad].item()} (not finite)"
    else:
        which = [m for m, v in enumerate(losses[bad].tolist()) if not math.isfinite(v)]
        what = f"loss of packed model(s) {which} is not finite"
    raise TrainingError(f"epoch {epoch + 1}, step {bad + 1}: {what}; try a lower train.lr (now {lr:g})")
