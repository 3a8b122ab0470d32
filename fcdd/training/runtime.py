"""Where and how a run computes: the device, bf16 or fp32, torch's threads, the RNG seeds.

Decided in one place (:meth:`Runtime.from_config`), before data loading (the dataset caches run
torch ops too) and again, idempotently, by the training loop for callers that train directly.
"""

from __future__ import annotations

import contextlib
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from fcdd.errors import ConfigError
from fcdd.hardware import cpu_info

_said: set[str] = set()


def say_once(message: str) -> None:
    """One line on stderr, the first time only (a setting's fallback, not every epoch's)."""
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)


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
        say_once(f"train.amp: {cpu_info().model} has no native bf16 (AMX / AVX-512-BF16): training in fp32")
    return False


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (call it before building the model, for a repeatable init)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_batch_rngs(seed: int) -> None:
    """Before a batch's items load (fcdd/training/loading.py): python, numpy and torch's CPU
    generator (no CUDA initialisation in loader workers)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool  # bf16 autocast in the forward pass (train.amp where the hardware has native bf16)
    channels_last: bool

    @classmethod
    def from_config(cls, cfg, device: torch.device | str | None = None) -> Runtime:
        """``train.threads``, ``train.device`` (unless ``device`` is given), ``train.amp``,
        ``train.channels_last``: applied here and nowhere else."""
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        device = resolve_device(t.device) if device is None else torch.device(device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        return cls(device, autocast_bf16(device, t.amp), bool(t.channels_last))

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
