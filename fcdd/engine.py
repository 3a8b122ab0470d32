"""The FCDD training loop: read ``train`` top to bottom.

Repeatability: every batch of indices is drawn together with its own seed from one seeded generator,
and the RNGs (torch, numpy, random) are re-seeded with it right before the batch's items are loaded
(once per batch: seeding costs ~25 us, too much per sample). A batch's augmentation and anomaly
injection therefore depend only on that generator, whatever ``num_workers`` is, and a resumed run
(generator state restored from the checkpoint) reproduces an uninterrupted one exactly on the CPU.
Datasets should draw their randomness from those global RNGs.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm.auto import tqdm

from fcdd import checkpoint_store
from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.compiled_step import TrainStep
from fcdd.config import Config, ConfigError
from fcdd.data.batch_augment import augments_on_device, device_augment
from fcdd.data.datasets import dataset_spec
from fcdd.errors import TrainingError
from fcdd.fingerprint import fingerprint, mismatch
from fcdd.hardware import cpu_info
from fcdd.loss import fcdd_loss, pixel_loss, pseudo_huber

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "fcdd-checkpoint/1"
CUDA_CHECK_EVERY = 25  # steps between loss checks on CUDA (each check waits for the GPU)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"train.device: {name!r} is not a device name (auto, cpu, cuda, cuda:N)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: {name!r} requested but CUDA is not available here; use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name!r} but only {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_bf16(device: torch.device, amp: bool) -> bool:
    """Whether ``train.amp`` means bf16 autocast here: on CUDA with bf16 support, and on CPUs with
    native bf16 matmuls (AMX or AVX-512-BF16: 2-3x faster steps). Elsewhere bf16 would be emulated
    and slower than fp32, so the run stays in fp32 and says so once."""
    if not amp:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if cpu_info().bf16:
            return True
        _say_once(f"train.amp: {cpu_info().model} has no native bf16 (AMX / AVX-512-BF16): training in fp32")
    return False


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (call it before building the model, for a repeatable init)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_loss(cfg: Config) -> str:
    """'image' or 'pixel'. 'auto' follows the reference: pixel-wise whenever the training data carry
    ground-truth maps, i.e. mvtec/folder with injected anomalies (confetti and OE: all-ones maps,
    semi: real masks); image-level otherwise (fmnist/cifar10/imagenet30, or no anomalies at all,
    where both reduce to a mean of A over nominal images)."""
    if cfg.train.loss == "auto":
        has_maps = dataset_spec(cfg.data.dataset).has_maps and cfg.anomalies.kind != "none"
        return "pixel" if has_maps else "image"
    return cfg.train.loss


# --- data: per-sample seeds ----------------------------------------------------------------------


def _seed_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # CPU only: no CUDA initialisation in workers


class SeededBatch(NamedTuple):
    seed: int
    indices: list[int]


class _SeededItems(Dataset):
    """Wraps a dataset: a SeededBatch loads its items with the RNGs seeded to its seed. The
    DataLoader hands whole batches to ``__getitems__``, in the main process or in one worker."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, batch: SeededBatch) -> list[Any]:
        _seed_rngs(batch.seed)
        return [self.dataset[i] for i in batch.indices]


class _SeededBatches(Sampler[SeededBatch]):
    """``repeats`` shuffled passes over ``n`` items, cut into batches, each with a fresh seed."""

    def __init__(self, n: int, repeats: int, batch_size: int, generator: torch.Generator):
        self.n, self.repeats, self.batch_size, self.generator = n, repeats, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(self.n * self.repeats / self.batch_size)

    def __iter__(self) -> Iterator[SeededBatch]:
        order = torch.cat([torch.randperm(self.n, generator=self.generator) for _ in range(self.repeats)])
        # Batch seeds come from a generator of their own, so the next pass's order does not depend
        # on how many batches this one had.
        seed_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
        seeds = torch.randint(0, 2**31 - 1, (len(self),), generator=seed_gen).tolist()
        for seed, indices in zip(seeds, order.split(self.batch_size), strict=True):
            yield SeededBatch(seed, indices.tolist())


def _collate_keys(keys: tuple[str, ...]):
    """Collate only what the loss uses (the masks of an image-level loss would be copied for nothing)."""

    def collate(items: list[dict]) -> dict:
        return default_collate([{k: item[k] for k in keys} for item in items])

    return collate


def _worker_init(worker_id: int) -> None:
    # Each worker's base seed comes from the loader's seeded generator; spread it to numpy/random.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    train_set: Dataset,
    cfg: Config,
    device: torch.device,
    seed: int,
    keys: tuple[str, ...] = ("image", "label"),
) -> DataLoader:
    n = len(train_set)  # type: ignore[arg-type]
    if n == 0:
        raise TrainingError("the training set is empty")
    sampler_gen = torch.Generator().manual_seed(seed)
    worker_gen = torch.Generator().manual_seed(seed + 1)
    workers = cfg.data.num_workers
    return DataLoader(
        _SeededItems(train_set),
        batch_sampler=_SeededBatches(n, cfg.train.epoch_repeats, cfg.train.batch_size, sampler_gen),
        collate_fn=partial(
            train_set.collate,
            keys=keys,
            augment=not augments_on_device(train_set, cfg.data.augment_on, device),
        )
        if hasattr(train_set, "collate")
        else _collate_keys(keys),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=worker_gen,
    )


# --- optimiser, schedule -------------------------------------------------------------------------


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters (is everything frozen?)")
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov and t.momentum > 0,
            weight_decay=t.weight_decay,
        )
    return torch.optim.Adam(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: lambda lr*gamma^epoch, milestones lr*gamma at each, or constant."""
    t = cfg.train
    if t.scheduler == "milestones":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=t.milestones, gamma=t.gamma)
    gamma = t.gamma if t.scheduler == "lambda" else 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: gamma**epoch)


# --- checkpoints ---------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """The global RNG state that training owns: torch's (and CUDA's). Python's ``random`` and numpy's
    global generators are not stored: training draws nothing from them in this process (batches
    re-seed all three in the loader, augmentation draws from torch), while other code in the process
    (tracking, orchestration threads) may, which would make checkpoint bytes depend on it."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    # Checkpoints written before the state was trimmed also hold "python" and "numpy": not needed.
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_state(
    epoch: int,
    model_state: dict,
    optimizer_state: dict,
    scheduler_state: dict,
    loader: DataLoader,
    history: list[dict],
    loss_kind: str,
    cfg: Config,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resume needs, as plain tensors and types (the packed trainer writes the same);
    ``settings``: the run's fingerprint, checked by :func:`check_resumable` on resume."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model_state,
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "sampler_rng": loader.batch_sampler.generator.get_state(),  # type: ignore[attr-defined]
        "loader_rng": loader.generator.get_state(),  # type: ignore[union-attr]
        "rng": _rng_state(),
        "history": [_without_timings(h) for h in history],
        "loss_kind": loss_kind,
        "settings": settings,
    }


# Wall-clock measurements of an epoch: they go to the callbacks and MLflow, not into checkpoint.pt,
# whose bytes must repeat for the same seed and settings (dvc.lock hashes the run folder).
TIMING_KEYS = ("images_per_s", "epoch_time_s")


def _without_timings(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in logs.items() if k not in TIMING_KEYS}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(
            f"{path}: cannot read the checkpoint ({_first_line(e)}); train with --restart to start afresh"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(
            f"{path}: not an FCDD checkpoint ({CHECKPOINT_FORMAT}); train with --restart to start afresh"
        )
    return state


def check_resumable(where: Path | str, state: dict[str, Any], settings: dict[str, Any], epochs: int) -> None:
    """A checkpoint resumes only a run of the same settings and at most ``epochs`` long; storage-agnostic."""
    differs = mismatch(state.get("settings"), settings)
    if differs is not None:
        raise TrainingError(
            f"{where}: made with other settings ({differs}); "
            f"train with --restart to start over, or choose another train.output_dir"
        )
    done = int(state.get("epoch", 0))
    if done > epochs:
        raise TrainingError(
            f"{where}: holds {done} epochs but train.epochs is {epochs}; "
            "raise train.epochs, or train with --restart to start over"
        )


def _restore(path: Path, state: dict, model: nn.Module, optimizer, scheduler, loader: DataLoader) -> None:
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise TrainingError(
            f"{path}: does not fit this model/optimiser ({_first_line(e)}); train with --restart to start afresh"
        ) from e
    scheduler.load_state_dict(state["scheduler"])
    loader.batch_sampler.generator.set_state(state["sampler_rng"])  # type: ignore[attr-defined]
    loader.generator.set_state(state["loader_rng"])  # type: ignore[union-attr]
    _set_rng_state(state["rng"])


def _first_line(e: BaseException) -> str:
    """torch's unpickling errors run to several lines of advice; the first says what is wrong."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _first_nonfinite(losses: list[torch.Tensor]) -> int | None:
    finite = torch.isfinite(torch.stack(losses)).tolist()
    return next((i for i, ok in enumerate(finite) if not ok), None)


# --- the loop ------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    train_set: Dataset,
    cfg: Config,
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
    t = cfg.train
    device = torch.device(device) if isinstance(device, str) else device
    seed = t.seeds[0] if seed is None else seed
    settings = settings or fingerprint(cfg, seed=seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    loss_kind = choose_loss(cfg)
    if loss_kind == "pixel" and upsampler is None:
        raise TrainingError("train.loss 'pixel' needs the receptive-field upsampler; pass upsampler=")
    use_amp = autocast_bf16(device, t.amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels

    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if upsampler is not None:
        upsampler.to(device)
    seed_everything(seed)
    keys = ("image", "label", "mask") if loss_kind == "pixel" else ("image", "label")
    loader = make_loader(train_set, cfg, device, seed, keys)
    on_device = device_augment(train_set, cfg.data.augment_on, device)  # None: the loader augments
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    history: list[dict[str, float]] = []
    start_epoch, resumed_from = 0, None
    checkpoint_path = run_dir / CHECKPOINT
    checkpoint_store.pull(cfg, run_dir, checkpoint_path)  # a later epoch from another worker, if any
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        check_resumable(checkpoint_path, state, settings, t.epochs)
        _restore(checkpoint_path, state, model, optimizer, scheduler, loader)
        history, start_epoch = list(state["history"]), int(state["epoch"])
        resumed_from = start_epoch

    def forward_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x)
        if loss_kind == "pixel":
            return pixel_loss(upsampler(pseudo_huber(out.float())), target)  # type: ignore[misc]
        return fcdd_loss(out, target)

    step_fn = TrainStep(
        forward_loss, t.compile, device, list(model.parameters()), list(model.buffers()), _say_once
    )
    target_key = "mask" if loss_kind == "pixel" else "label"
    steps = len(loader)
    check_every = 1 if device.type == "cpu" else CUDA_CHECK_EVERY
    for epoch in range(start_epoch, t.epochs):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        losses: list[torch.Tensor] = []
        images = 0
        started = time.perf_counter()
        # One iter() per epoch: each advances the sampler's generator (tqdm.asyncio would call it twice).
        bar = tqdm(
            iter(loader),
            total=steps,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            # None: only on a terminal; in logs (DVC, Prefect workers, CI) the per-epoch line says it all.
            disable=None if t.progress else True,
            leave=False,
        )
        for step, batch in enumerate(bar):
            if on_device is not None:
                batch = on_device(batch)
            x = to_memory_format(batch["image"].to(device, non_blocking=True), t.channels_last)
            target = batch[target_key].to(device, non_blocking=True)
            # Gradient accumulation; the last group of an epoch may be shorter, so scale by its size
            # (and never carry gradients into the next epoch: checkpoints do not hold them).
            group_start = step - step % t.accumulate
            group_size = min(t.accumulate, steps - group_start)
            loss = step_fn(x, target, group_size)  # forward, loss, backward of loss / group_size
            if step + 1 == group_start + group_size:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            losses.append(loss)
            images += x.shape[0]
            if (step + 1) % check_every == 0 or step + 1 == steps:
                bad = _first_nonfinite(losses)
                if bad is not None:
                    raise TrainingError(
                        f"epoch {epoch + 1}, step {bad + 1}: loss is {losses[bad].item()} (not finite); "
                        f"try a lower train.lr (now {lr:g})"
                    )
                bar.set_postfix(
                    loss=f"{losses[-1].item():.4g}", img_s=f"{images / (time.perf_counter() - started):.0f}"
                )
        bar.close()
        epoch_time = time.perf_counter() - started
        scheduler.step()

        logs = {
            "epoch": epoch + 1,
            "loss": torch.stack(losses).mean().item(),
            "lr": lr,
            "images_per_s": images / epoch_time,
            "epoch_time_s": epoch_time,
        }
        history.append(logs)
        save_checkpoint(
            checkpoint_path,
            checkpoint_state(
                epoch + 1,
                model.state_dict(),
                optimizer.state_dict(),
                scheduler.state_dict(),
                loader,
                history,
                loss_kind,
                cfg,
                settings,
            ),
        )
        checkpoint_store.push(cfg, run_dir, checkpoint_path, epoch + 1)
        if callbacks is not None and callable(getattr(callbacks, "on_epoch_end", None)):
            callbacks.on_epoch_end(epoch + 1, dict(logs))

    model.to(memory_format=torch.contiguous_format)  # scoring, export and saving see the usual layout
    model.eval()
    return {
        "history": history,
        "loss_kind": loss_kind,
        "resumed_from_epoch": resumed_from,
        "checkpoint": str(checkpoint_path),
        "settings": settings,
    }
