"""The training loop's names at their earlier import path; they live in fcdd/training/ now."""

from __future__ import annotations

from fcdd.training import (
    CHECKPOINT,
    TIMING_KEYS,
    TrainingError,
    autocast_bf16,
    check_resumable,
    choose_loss,
    load_checkpoint,
    make_loader,
    make_optimizer,
    make_scheduler,
    resolve_device,
    seed_everything,
    train,
)

__all__ = [
    "CHECKPOINT",
    "TIMING_KEYS",
    "TrainingError",
    "autocast_bf16",
    "check_resumable",
    "choose_loss",
    "load_checkpoint",
    "make_loader",
    "make_optimizer",
    "make_scheduler",
    "resolve_device",
    "seed_everything",
    "train",
]
