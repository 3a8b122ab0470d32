"""Re-estimate BatchNorm running statistics after training (``train.bn_recalibration``).

In eval mode a BatchNorm layer normalises with its running mean/variance, an exponential average
(momentum 0.1) over the last training batches, taken while the weights were still moving and with
half of each batch synthetic anomalies. With few images, small batches and random init those
statistics can be far from what the final net computes on real images, and the test scores
collapse. As in ``torch.optim.swa_utils.update_bn``, the fix is one pass over training images with
the final weights, averaging the batch statistics equally (momentum None); ``nominal`` uses the
nominal images only (the test-time population), ``train`` the training stream as it was (nominal
and injected anomalies). Frozen layers (eval mode through ``model.train()``) keep their statistics.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

MODES = ("off", "nominal", "train")


def nominal_only(dataset: Dataset) -> Dataset:
    """The training set without anomaly injection (a shallow copy: images and transform shared)."""
    if getattr(dataset, "probability", 0) == 0:
        return dataset
    out = copy.copy(dataset)
    out.probability = 0.0  # type: ignore[attr-defined]
    return out


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    mode: str = "nominal",
    seed: int = 0,
) -> int:
    """Recompute the running statistics of ``model``'s trainable BatchNorm layers from ``dataset``;
    returns the number of images used (0 when there is nothing to do). Leaves ``model`` in eval mode."""
    if mode not in MODES:
        raise ValueError(f"train.bn_recalibration: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "off":
        return 0
    model.train()  # frozen layers put themselves back in eval mode here
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not layers:
        model.eval()
        return 0
    source = nominal_only(dataset) if mode == "nominal" else dataset
    momenta = {m: m.momentum for m in layers}
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # augmentation and injection draw from it: the pass repeats
    # A training set with a batch transform hands out uint8 items and augments in its collate.
    collate = partial(source.collate, keys=("image",)) if hasattr(source, "collate") else None
    loader = DataLoader(
        source, batch_size=batch_size, shuffle=False, num_workers=0, drop_last=False, collate_fn=collate
    )
    seen = 0
    try:
        for batch in loader:
            x = batch["image"].to(device)
            if x.shape[0] < 2 and seen:  # a batch of one has no variance to add
                continue
            model(x)
            seen += x.shape[0]
    finally:
        torch.random.set_rng_state(state)
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.eval()
    return seen
