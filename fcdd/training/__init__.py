"""Training: one loop for one model or K packed models (loop.py), read top to bottom.

| module | what it holds |
|---|---|
| ``runtime.py`` | device, bf16 decision, threads, seeding: ``Runtime.from_config`` |
| ``loading.py`` | the seeded batch sampler and loader (``make_loader``) |
| ``recipe.py`` | the objective (fcdd/objectives), optimiser, learning-rate schedule |
| ``checkpoint.py`` | checkpoint state, atomic save, load, resume checks, the shared store hooks |
| ``packed.py`` | the net the loop trains: ``Single`` (one model) or ``PackedModel`` (K as one) |
| ``step.py`` | ``TrainStep``: forward, loss, backward; eager or ``torch.compile`` |
| ``loop.py`` | ``train``, ``train_packed`` and the loop they share, ``fit`` |
"""

from __future__ import annotations

from fcdd.errors import TrainingError
from fcdd.training.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    TIMING_KEYS,
    check_resumable,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from fcdd.training.loading import make_loader
from fcdd.training.loop import CUDA_CHECK_EVERY, fit, train, train_packed
from fcdd.training.packed import PackedModel, Single
from fcdd.training.recipe import build_objective, choose_loss, make_optimizer, make_scheduler
from fcdd.training.runtime import (
    Runtime,
    autocast_bf16,
    resolve_device,
    seed_everything,
    to_memory_format,
)

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CUDA_CHECK_EVERY",
    "TIMING_KEYS",
    "PackedModel",
    "Runtime",
    "Single",
    "TrainingError",
    "autocast_bf16",
    "build_objective",
    "check_resumable",
    "checkpoint_state",
    "choose_loss",
    "fit",
    "load_checkpoint",
    "make_loader",
    "make_optimizer",
    "make_scheduler",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "to_memory_format",
    "train",
    "train_packed",
]
