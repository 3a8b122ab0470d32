"""The recipe: what is minimised (the objective, pluggable: fcdd/objectives) and how (the optimiser
and its learning-rate schedule)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fcdd.errors import TrainingError
from fcdd.objectives import Objective, build_objective, choose_loss

__all__ = ["Objective", "build_objective", "choose_loss", "make_optimizer", "make_scheduler"]


def make_optimizer(model: nn.Module | Iterable[torch.Tensor], cfg) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam over the trainable parameters of ``model`` (a module, or
    anything with ``parameters()``, or the parameters themselves)."""
    t = cfg.train
    source = model.parameters() if hasattr(model, "parameters") else model
    params = [p for p in source if p.requires_grad]
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


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: lambda lr*gamma^epoch, milestones lr*gamma at each, or constant."""
    t = cfg.train
    if t.scheduler == "milestones":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=t.milestones, gamma=t.gamma)
    gamma = t.gamma if t.scheduler == "lambda" else 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: gamma**epoch)
