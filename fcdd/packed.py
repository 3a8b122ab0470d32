"""Packed training: K models of one architecture (classes x seeds) trained as one batched model.

A one-vs-rest protocol is many small runs, each of which leaves a GPU mostly idle: the cost of a
step is kernel launches and host work, not arithmetic. Packing stacks the K models' parameters
(``torch.func.stack_module_state``) and runs them with ``vmap(functional_call)``, so one launch
does the work of K (a batched convolution becomes one grouped convolution).

Each model keeps everything of its own: its data stream (the engine's seeded loader with its own
seed), its loss, its optimiser state (SGD and Adam are elementwise, so one optimiser over the
stacked parameters equals K separate ones), its checkpoint in its own run folder in the engine's
format, and its history. A packed run therefore equals K separate ``engine.train`` runs up to
float rounding, and a packed checkpoint resumes as a separate run and vice versa.
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fcdd import checkpoint_store
from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.compiled_step import TrainStep
from fcdd.config import Config
from fcdd.data.batch_augment import device_augment
from fcdd.engine import (
    CHECKPOINT,
    CUDA_CHECK_EVERY,
    TrainingError,
    _first_nonfinite,
    _rng_state,
    _say_once,
    _set_rng_state,
    autocast_bf16,
    check_resumable,
    checkpoint_state,
    choose_loss,
    load_checkpoint,
    make_loader,
    make_optimizer,
    make_scheduler,
    save_checkpoint,
    seed_everything,
)
from fcdd.fingerprint import fingerprint
from fcdd.loss import fcdd_loss, pixel_loss, pseudo_huber
from fcdd.runlock import run_folder_lock


class PackedModel:
    """The stacked parameters and buffers of K identical nets, and a forward over all of them."""

    def __init__(self, models: list[nn.Module]):
        if not models:
            raise ValueError("packed training needs at least one model")
        kinds = {type(m) for m in models}
        if len(kinds) != 1:
            raise ValueError(
                f"packed models must share one architecture, got {sorted(k.__name__ for k in kinds)}"
            )
        self.k = len(models)
        self.params, self.buffers = stack_module_state(models)
        # stack_module_state makes every stacked parameter trainable: keep frozen ones frozen.
        for name, p in models[0].named_parameters():
            self.params[name].requires_grad_(p.requires_grad)
        self.names = list(models[0].state_dict().keys())
        self.base = copy.deepcopy(models[0]).to("meta")  # structure and train/eval flags only

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self._forward = vmap(one, in_dims=(0, 0, 0), randomness="different")

    def trainable(self) -> list[torch.Tensor]:
        """In the order of ``model.parameters()``: an optimiser's state lines up with a single model's."""
        return [p for name, p in self.params.items() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)  # frozen BN layers stay in eval mode (FCDDNet.train)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, B, C, H, W] -> raw outputs [K, B, 1, u, v]."""
        return self._forward(self.params, self.buffers, x)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's state dict, keys in the order of the original module's."""
        merged = {**self.params, **self.buffers}
        return {name: merged[name][k].detach().clone() for name in self.names}

    def load_state_dicts(self, states: list[dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for store in (self.params, self.buffers):
                for name, t in store.items():
                    t.copy_(torch.stack([s[name] for s in states]).to(t.device, t.dtype))


def _optimizer_slice(state: dict, k: int, shapes: list[torch.Size]) -> dict:
    """Model k's optimiser state dict from the packed one: per-parameter tensors of the stacked
    shape are cut; scalars (Adam's step) are shared."""
    out = {"param_groups": copy.deepcopy(state["param_groups"]), "state": {}}
    for i, per_param in state["state"].items():
        out["state"][i] = {
            key: (v[k].clone() if torch.is_tensor(v) and v.shape == shapes[i] else copy.deepcopy(v))
            for key, v in per_param.items()
        }
    return out


def _optimizer_stack(states: list[dict], shapes: list[torch.Size]) -> dict:
    out = {"param_groups": copy.deepcopy(states[0]["param_groups"]), "state": {}}
    for i, per_param in states[0]["state"].items():
        out["state"][i] = {
            key: (
                torch.stack([s["state"][i][key] for s in states])
                if torch.is_tensor(v) and (len(shapes[i]) > 0 and v.shape == shapes[i][1:])
                else copy.deepcopy(v)
            )
            for key, v in per_param.items()
        }
    return out


def train_packed(
    models: list[nn.Module],
    train_sets: list[Any],
    cfg: Config,
    device: torch.device | str,
    run_dirs: list[Path],
    seeds: list[int],
    upsampler: ReceptiveFieldUpsampler | None = None,
    callbacks: list[Any] | None = None,
    settings: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train K models as one: model k on ``train_sets[k]`` with ``seeds[k]``, checkpointing to
    ``run_dirs[k]``. Returns one ``engine.train``-style result per model and leaves the trained
    weights in ``models``. The training sets must give the same number of batches per epoch."""
    t = cfg.train
    k_models = len(models)
    if not (len(train_sets) == len(run_dirs) == len(seeds) == k_models):
        raise ValueError("train_packed: models, train_sets, run_dirs and seeds must have one entry per model")
    device = torch.device(device) if isinstance(device, str) else device
    # Each model's fingerprint, as engine.train computes it: a packed checkpoint resumes alone too.
    settings = settings or [fingerprint(cfg, seed=s) for s in seeds]
    run_dirs = [Path(d) for d in run_dirs]
    for d in run_dirs:
        d.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    loss_kind = choose_loss(cfg)
    if loss_kind == "pixel" and upsampler is None:
        raise TrainingError("train.loss 'pixel' needs the receptive-field upsampler; pass upsampler=")
    use_amp = autocast_bf16(device, t.amp)
    keys = ("image", "label", "mask") if loss_kind == "pixel" else ("image", "label")

    loaders = []
    for train_set, seed in zip(train_sets, seeds, strict=True):
        seed_everything(seed)
        loaders.append(make_loader(train_set, cfg, device, seed, keys))
    on_device = [device_augment(s, cfg.data.augment_on, device) for s in train_sets]  # one generator each
    steps = len(loaders[0])
    sizes = [len(s) for s in train_sets]
    if any(len(loader) != steps for loader in loaders):
        raise TrainingError(
            f"packed training needs training sets with the same number of batches; sizes {sizes} give "
            f"{[len(loader) for loader in loaders]} (set orchestration.pack: 1 to train them one by one)"
        )

    for m in models:
        m.to(device)
    if upsampler is not None:
        upsampler.to(device)
    packed = PackedModel(models)
    trainable = packed.trainable()
    shapes = [p.shape for p in trainable]
    optimizer = make_optimizer(SimpleNamespace(parameters=lambda: trainable), cfg)  # type: ignore[arg-type]
    scheduler = make_scheduler(optimizer, cfg)
    histories: list[list[dict]] = [[] for _ in models]
    run_cfgs = [_run_cfg(cfg, s) for s in seeds]  # each checkpoint records its own run's settings
    for run_cfg, d in zip(run_cfgs, run_dirs, strict=True):
        checkpoint_store.pull(run_cfg, d, d / CHECKPOINT)  # later epochs another worker left, if any
    start_epoch, resumed_from = _resume(
        run_dirs, packed, optimizer, scheduler, loaders, shapes, t.epochs, settings
    )
    if resumed_from is not None:
        histories = [list(load_checkpoint(d / CHECKPOINT)["history"]) for d in run_dirs]

    def forward_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """x [K, B, ...], targets [K, B, ...] -> the K models' losses [K]."""
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = packed(x)
        if loss_kind == "pixel":
            a_up = upsampler(pseudo_huber(out.float()).flatten(0, 1)).unflatten(0, out.shape[:2])  # type: ignore[misc]
            return torch.stack([pixel_loss(a_up[k], target[k]) for k in range(k_models)])
        return torch.stack([fcdd_loss(out[k], target[k]) for k in range(k_models)])

    # The models share no parameter: backward of the summed losses gives K separate gradients.
    step_fn = TrainStep(
        forward_loss,
        t.compile,
        device,
        list(packed.params.values()),
        list(packed.buffers.values()),
        _say_once,
    )
    target_key = "mask" if loss_kind == "pixel" else "label"
    check_every = 1 if device.type == "cpu" else CUDA_CHECK_EVERY
    for epoch in range(start_epoch, t.epochs):
        packed.train()
        lr = optimizer.param_groups[0]["lr"]
        losses: list[torch.Tensor] = []  # [K] per step
        images = 0
        started = time.perf_counter()
        for step, batches in enumerate(zip(*[iter(loader) for loader in loaders], strict=True)):
            batches = [b if aug is None else aug(b) for aug, b in zip(on_device, batches, strict=True)]
            x = torch.stack([b["image"] for b in batches]).to(device, non_blocking=True)
            target = torch.stack([b[target_key] for b in batches]).to(device, non_blocking=True)
            group_start = step - step % t.accumulate
            group_size = min(t.accumulate, steps - group_start)
            per_model = step_fn(x, target, group_size)  # forward, losses [K], backward of their sum
            if step + 1 == group_start + group_size:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            losses.append(per_model)
            images += x.shape[1]
            if (step + 1) % check_every == 0 or step + 1 == steps:
                bad = _first_nonfinite([loss.sum() for loss in losses])
                if bad is not None:
                    which = [
                        k for k, v in enumerate(losses[bad].tolist()) if v != v or abs(v) == float("inf")
                    ]
                    raise TrainingError(
                        f"epoch {epoch + 1}, step {bad + 1}: loss of packed model(s) {which} is not finite; "
                        f"try a lower train.lr (now {lr:g})"
                    )
        epoch_time = time.perf_counter() - started
        scheduler.step()

        per_epoch = torch.stack(losses).mean(0).tolist()
        for k in range(k_models):
            logs = {
                "epoch": epoch + 1,
                "loss": per_epoch[k],
                "lr": lr,
                "images_per_s": images / epoch_time,  # this model's images; the pack did K times as many
                "epoch_time_s": epoch_time,
                "packed": k_models,
            }
            histories[k].append(logs)
            save_checkpoint(
                run_dirs[k] / CHECKPOINT,
                checkpoint_state(
                    epoch + 1,
                    packed.state_dict(k),
                    _optimizer_slice(optimizer.state_dict(), k, shapes),
                    scheduler.state_dict(),
                    loaders[k],
                    histories[k],
                    loss_kind,
                    run_cfgs[k],
                    settings[k],
                ),
            )
            checkpoint_store.push(run_cfgs[k], run_dirs[k], run_dirs[k] / CHECKPOINT, epoch + 1)
            cb = callbacks[k] if callbacks else None
            if cb is not None and callable(getattr(cb, "on_epoch_end", None)):
                cb.on_epoch_end(epoch + 1, dict(logs))

    for k, m in enumerate(models):
        m.load_state_dict(packed.state_dict(k))
        m.eval()
    return [
        {
            "history": histories[k],
            "loss_kind": loss_kind,
            "resumed_from_epoch": resumed_from,
            "checkpoint": str(run_dirs[k] / CHECKPOINT),
        }
        for k in range(k_models)
    ]


def _run_cfg(cfg: Config, seed: int) -> Config:
    """The configuration of one run of the pack, as run_experiment makes it (its seed only)."""
    run = copy.deepcopy(cfg)
    run.train.seeds = [seed]
    return run


def train_pack(cfg: Config, jobs: list[tuple[str, int]], callbacks: list[Any] | None = None) -> list[Path]:
    """The training half of ``fcdd.experiment.run_experiment`` for K (class, seed) runs at once.

    Each run's data and initial weights are built exactly as run_experiment builds them; the pack
    trains them together and leaves every run folder's checkpoint at the last epoch, so that
    run_experiment on each job afterwards finds its training complete and only evaluates and saves
    (with its own tracking, registry version and metrics). Returns the run folders."""
    from fcdd.anomaly_map import ReceptiveFieldUpsampler
    from fcdd.data import build_datasets
    from fcdd.engine import resolve_device
    from fcdd.experiment import run_dir_for
    from fcdd.models import build_model

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    models, train_sets, run_dirs, seeds, classes, upsampler = [], [], [], [], [], None
    for cls, seed in jobs:
        run_cfg = _run_cfg(cfg, seed)
        data = build_datasets(run_cfg, cls, seed)
        cls = str(data.summary.get("class", cls))
        seed_everything(seed)  # the same initial weights as a run of its own
        model = build_model(run_cfg, data.preprocess["channels"], data.preprocess["input_size"]).to(device)
        if upsampler is None:
            upsampler = ReceptiveFieldUpsampler(model.receptive_field, cfg.sigma, model.input_size).to(device)
        elif models and model.input_size != models[0].input_size:  # data.resize keep_aspect, per split
            raise ValueError(
                f"orchestration.pack: class {cls} seed {seed} has inputs of {model.input_size}, the pack's "
                f"first run {models[0].input_size}; one pack trains one input size (set model.input_size: [H, W])"
            )
        models.append(model)
        train_sets.append(data.train)
        run_dirs.append(run_dir_for(run_cfg, cls, seed))
        seeds.append(seed)
        classes.append(cls)
    settings = [fingerprint(_run_cfg(cfg, seed), cls, seed) for cls, seed in zip(classes, seeds, strict=True)]
    with contextlib.ExitStack() as locks:  # each run folder locked, as run_experiment locks it
        for d in run_dirs:
            locks.enter_context(run_folder_lock(d))
        train_packed(
            models, train_sets, cfg, device, run_dirs, seeds, upsampler=upsampler, callbacks=callbacks,
            settings=settings,
        )  # fmt: skip
    return run_dirs


def _resume(
    run_dirs, packed, optimizer, scheduler, loaders, shapes, epochs, settings
) -> tuple[int, int | None]:
    """Resume all K models from their checkpoints, which must stand at one epoch (they are written
    together); no checkpoint at all starts afresh."""
    paths = [d / CHECKPOINT for d in run_dirs]
    present = [p.exists() for p in paths]
    if not any(present):
        return 0, None
    if not all(present):
        missing = [str(p) for p, ok in zip(paths, present, strict=True) if not ok]
        raise TrainingError(
            f"packed resume: {len(missing)} of {len(paths)} runs have no checkpoint ({missing[0]}, ...); "
            "train them with orchestration.pack: 1, or delete the others' run folders"
        )
    states = [load_checkpoint(p) for p in paths]
    for path, state, expected in zip(paths, states, settings, strict=True):
        check_resumable(path, state, expected, epochs)
    epochs_found = {int(s["epoch"]) for s in states}
    if len(epochs_found) != 1:
        raise TrainingError(
            f"packed resume: the checkpoints stand at different epochs {sorted(epochs_found)} "
            f"({paths[0].parent}, ...); train them with orchestration.pack: 1"
        )
    epoch = epochs_found.pop()
    if epoch > epochs:
        raise TrainingError(
            f"{paths[0]}: holds {epoch} epochs but train.epochs is {epochs}; "
            "delete the run folders to start over, or raise train.epochs"
        )
    try:
        packed.load_state_dicts([s["model"] for s in states])
        optimizer.load_state_dict(_optimizer_stack([s["optimizer"] for s in states], shapes))
    except (RuntimeError, ValueError, KeyError) as e:
        raise TrainingError(f"{paths[0]}: does not fit this packed model/optimiser ({e})") from e
    scheduler.load_state_dict(states[0]["scheduler"])
    for loader, state in zip(loaders, states, strict=True):
        loader.batch_sampler.generator.set_state(state["sampler_rng"])
        loader.generator.set_state(state["loader_rng"])
    _set_rng_state(states[-1]["rng"])
    return epoch, epoch


__all__ = ["PackedModel", "train_packed", "_rng_state"]
