"""The training data stream: seeded batches, so results do not depend on ``num_workers``.

Every batch of indices is drawn together with its own seed from one seeded generator, and the RNGs
(torch, numpy, random) are re-seeded with it right before the batch's items are loaded (once per
batch: seeding costs ~25 us, too much per sample). A batch's augmentation and anomaly injection
therefore depend only on that generator, whatever ``num_workers`` is, and a resumed run (generator
state restored from the checkpoint) reproduces an uninterrupted one exactly on the CPU. Datasets
should draw their randomness from those global RNGs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from fcdd.data.batch_augment import augments_on_device
from fcdd.errors import TrainingError
from fcdd.training.runtime import seed_batch_rngs


class SeededBatch(NamedTuple):
    seed: int
    indices: list[int]


class SeededItems(Dataset):
    """Wraps a dataset: a SeededBatch loads its items with the RNGs seeded to its seed. The
    DataLoader hands whole batches to ``__getitems__``, in the main process or in one worker."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, batch: SeededBatch) -> list[Any]:
        seed_batch_rngs(batch.seed)
        return [self.dataset[i] for i in batch.indices]


class SeededBatches(Sampler[SeededBatch]):
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
    cfg,
    device: torch.device,
    seed: int,
    keys: tuple[str, ...] = ("image", "label"),
) -> DataLoader:
    """The seeded loader of one run: batches of ``keys``; a training set with a batch transform
    augments in its collate, or leaves that to the device (``data.augment_on``)."""
    n = len(train_set)  # type: ignore[arg-type]
    if n == 0:
        raise TrainingError("the training set is empty")
    sampler_gen = torch.Generator().manual_seed(seed)
    worker_gen = torch.Generator().manual_seed(seed + 1)
    workers = cfg.data.num_workers
    return DataLoader(
        SeededItems(train_set),
        batch_sampler=SeededBatches(n, cfg.train.epoch_repeats, cfg.train.batch_size, sampler_gen),
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
