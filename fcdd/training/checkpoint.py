"""Checkpoints: what a resume needs, written atomically every epoch, and the checks before resuming.

``run_dir/checkpoint.pt`` holds plain tensors and types (``torch.load(weights_only=True)``): model,
optimiser, scheduler, the loader's and torch's RNG states, the epoch, the history without wall-clock
keys (its bytes repeat for the same seed and settings: dvc.lock hashes the run folder) and the run's
settings fingerprint; a checkpoint resumes only a run of the same settings. The shared store
(fcdd/checkpoint_store.py, ``train.checkpoint_uri``) copies the same file after every epoch and
brings a later one back before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fcdd import checkpoint_store
from fcdd.errors import TrainingError
from fcdd.fingerprint import mismatch
from fcdd.paths import write_atomically

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "fcdd-checkpoint/1"
# Wall-clock measurements of an epoch: they go to the callbacks and MLflow, not into checkpoint.pt,
# whose bytes must repeat for the same seed and settings (dvc.lock hashes the run folder).
TIMING_KEYS = ("images_per_s", "epoch_time_s")


def rng_state() -> dict[str, Any]:
    """The global RNG state that training owns: torch's (and CUDA's). Python's ``random`` and numpy's
    global generators are not stored: training draws nothing from them in this process (batches
    re-seed all three in the loader, augmentation draws from torch), while other code in the process
    (tracking, orchestration threads) may, which would make checkpoint bytes depend on it."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    # Checkpoints written before the state was trimmed also hold "python" and "numpy": not needed.
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def without_timings(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in logs.items() if k not in TIMING_KEYS}


def checkpoint_state(
    epoch: int,
    model_state: dict,
    optimizer_state: dict,
    scheduler_state: dict,
    loader: DataLoader,
    history: list[dict],
    loss_kind: str,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resume needs, as plain tensors and types; ``settings``: the run's fingerprint,
    checked by :func:`check_resumable` on resume."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model_state,
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "sampler_rng": loader.batch_sampler.generator.get_state(),  # type: ignore[attr-defined]
        "loader_rng": loader.generator.get_state(),  # type: ignore[union-attr]
        "rng": rng_state(),
        "history": [without_timings(h) for h in history],
        "loss_kind": loss_kind,
        "settings": settings,
    }


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact; a full disk is a
    one-line StorageError ("no space left") and the partial ``.tmp`` is removed."""
    write_atomically(path, lambda tmp: torch.save(state, tmp), "checkpoint")


def first_line(e: BaseException) -> str:
    """torch's unpickling errors run to several lines of advice; the first says what is wrong."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(
            f"{path}: cannot read the checkpoint ({first_line(e)}); train with --restart to start afresh"
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


def pull(cfg, run_dirs: list[Path]) -> None:
    """Before training: a later epoch another worker left in the shared store, if any."""
    for run_dir in run_dirs:
        checkpoint_store.pull(cfg, run_dir, run_dir / CHECKPOINT)


def push(cfg, run_dir: Path, epoch: int) -> None:
    """After an epoch's checkpoint is written locally: a copy in the shared store, if one is set."""
    checkpoint_store.push(cfg, run_dir, run_dir / CHECKPOINT, epoch)


def resumable_states(run_dirs: list[Path], settings: list[dict], epochs: int) -> list[dict] | None:
    """The checkpoints of the loop's runs, checked (settings, epochs; a pack's all present and at
    one epoch, as they are written together), or None when there are none: a fresh start."""
    paths = [d / CHECKPOINT for d in run_dirs]
    present = [p.exists() for p in paths]
    if not any(present):
        return None
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
    return states


def restore(where: Path, states: list[dict], net, optimizer, scheduler, loaders: list[DataLoader]) -> None:
    """Load the checkpoints into the net (K models), the optimiser, the schedule and the loaders'
    generators; torch's RNG from the last (a pack's runs were seeded in order, the last one wins)."""
    try:
        net.load([s["model"] for s in states], optimizer, [s["optimizer"] for s in states])
    except (RuntimeError, ValueError, KeyError) as e:
        raise TrainingError(
            f"{where}: does not fit this model/optimiser ({first_line(e)}); train with --restart to start afresh"
        ) from e
    scheduler.load_state_dict(states[0]["scheduler"])
    for loader, state in zip(loaders, states, strict=True):
        loader.batch_sampler.generator.set_state(state["sampler_rng"])  # type: ignore[attr-defined]
        loader.generator.set_state(state["loader_rng"])  # type: ignore[union-attr]
    set_rng_state(states[-1]["rng"])
