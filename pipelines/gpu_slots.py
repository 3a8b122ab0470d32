"""GPUs for class runs: a slot of the Prefect global concurrency limit (one per GPU) while a run
trains, and one GPU of this machine per run (docs/orchestration.md)."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from fcdd.config import Config

# Lease of a held GPU slot, renewed while the run lives: a run whose process or host is lost frees
# its slot this long after (Prefect's default, 300 s, kept the resubmitted run waiting that long).
SLOT_LEASE_S = 60
_MISSING_LIMITS_SAID: set[str] = set()  # a missing limit is said once per process, not once per class


@contextlib.contextmanager
def training_slot(cfg: Config) -> Iterator[None]:
    """Hold one slot of the global concurrency limit (one per GPU) for the length of a training.

    A missing limit (the local default) is not an error: the run goes ahead without it.
    """
    logger = get_run_logger()
    name = cfg.orchestration.concurrency_limit
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        if name not in _MISSING_LIMITS_SAID:
            _MISSING_LIMITS_SAID.add(name)
            logger.info(
                "global concurrency limit %r not found: class runs go ahead without it "
                "(create one slot per GPU: prefect gcl create %s --limit <GPUs>)",
                name,
                name,
            )
        yield
        return
    logger.info("waiting for a slot of global concurrency limit %r", name)
    with concurrency(name, occupy=1, strict=True, lease_duration=SLOT_LEASE_S):
        logger.info("holding a slot of %r", name)
        yield


@contextlib.contextmanager
def gpu_pinned(cfg: Config) -> Iterator[Config]:
    """Pin the run to one GPU: the worker's CUDA_VISIBLE_DEVICES wins; else claim a free local GPU.

    The claim is an exclusive lock file per GPU index, so runs on one machine (subflows or worker
    processes) never share a GPU; the device goes into ``cfg.train.device`` (``cuda:i``) because
    CUDA_VISIBLE_DEVICES cannot change once CUDA is initialised in this process.
    """
    import torch

    logger = get_run_logger()
    wants_cuda = cfg.train.device in ("auto", "cuda") and torch.cuda.is_available()
    if not wants_cuda or os.environ.get("CUDA_VISIBLE_DEVICES"):
        if wants_cuda:
            logger.info("CUDA_VISIBLE_DEVICES=%s from the worker", os.environ["CUDA_VISIBLE_DEVICES"])
        yield cfg
        return
    with claim_gpu(torch.cuda.device_count()) as index:
        cfg = copy.deepcopy(cfg)  # a retry gets the caller's config back and claims afresh
        cfg.train.device = f"cuda:{index}"
        logger.info("pinned to GPU %d", index)
        yield cfg


@contextlib.contextmanager
def claim_gpu(count: int, poll_s: float = 5.0) -> Iterator[int]:
    """The index of a GPU no other process of this machine holds, held until the block ends."""
    lock_dir = Path(tempfile.gettempdir())
    while True:
        for index in range(count):
            handle = open(lock_dir / f"fcdd-gpu-{index}.lock", "w")  # noqa: SIM115 (held while training)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield index
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_s)  # every GPU busy (a run outside the concurrency limit): wait


def on_cpu(cfg: Config) -> bool:
    import torch

    return cfg.train.device == "cpu" or (cfg.train.device == "auto" and not torch.cuda.is_available())
