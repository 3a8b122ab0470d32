"""Normalisation of image tensors (docs/method.md §4) and its statistics, computed from nominal training data.

Statistics are cached as JSON in ``cfg.data.cache_dir/normalisation.json``, keyed by a string that
names the dataset, class, raw-data root and training subset, so a second run skips the pass.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from fcdd.errors import DataError

# docs/method.md §4: "ImageNet mean/std" are the standard ImageNet-1k statistics, not a per-class estimate.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

CACHE_FILE = "normalisation.json"


def gcn(x: torch.Tensor) -> torch.Tensor:
    """Global contrast normalisation per sample (L1): subtract the mean, divide by the mean |x|.

    ``x`` is [C, H, W] or [B, C, H, W]; statistics are over all of a sample's elements.
    """
    dims = tuple(range(x.dim() - 3, x.dim()))
    centred = x - x.mean(dim=dims, keepdim=True)
    scale = centred.abs().mean(dim=dims, keepdim=True)
    return centred / scale.clamp_min(1e-12)  # a constant image stays 0 instead of NaN


def normalise(x: torch.Tensor, normalisation: dict[str, Any]) -> torch.Tensor:
    """Apply a ``preprocess["normalisation"]`` dict to float images in [0, 1] ([C,H,W] or [B,C,H,W])."""
    kind = normalisation.get("kind")
    if kind == "gcn-minmax":
        lo, hi = float(normalisation["min"]), float(normalisation["max"])
        return gcn(x).sub_(lo).div_(hi - lo)
    if kind == "meanstd":
        shape = (-1, 1, 1)
        mean = torch.tensor(normalisation["mean"], dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(normalisation["std"], dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std
    if kind == "none":
        return x
    raise DataError(f"normalisation kind {kind!r} is not one of gcn-minmax, meanstd, none")


def gcn_minmax_stats(batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Min and max of the GCN-normalised nominal training images (float [B,C,H,W] in [0, 1])."""
    lo, hi, count = float("inf"), float("-inf"), 0
    for batch in batches:
        g = gcn(batch.float())
        lo, hi, count = min(lo, g.min().item()), max(hi, g.max().item()), count + len(batch)
    if count == 0:
        raise DataError("cannot compute normalisation statistics: no nominal training images")
    if hi <= lo:
        raise DataError(f"nominal training images are constant after contrast normalisation ({lo})")
    return {"kind": "gcn-minmax", "min": lo, "max": hi}


def meanstd_stats(batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Per-channel mean and standard deviation of nominal training images (float [B,C,H,W])."""
    total = total_sq = None
    n = 0
    for batch in batches:
        b = batch.double()
        s, sq = b.sum(dim=(0, 2, 3)), (b * b).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        n += b.shape[0] * b.shape[2] * b.shape[3]
    if total is None or total_sq is None or n == 0:
        raise DataError("cannot compute normalisation statistics: no nominal training images")
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return {"kind": "meanstd", "mean": mean.tolist(), "std": std.tolist()}


def cached_stats(cache_dir: str | Path, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The statistics stored under ``key`` in the cache file, computing and storing them if absent."""
    path = Path(cache_dir) / CACHE_FILE
    table: dict[str, Any] = {}
    if path.is_file():
        try:
            table = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            table = {}  # a damaged cache is rebuilt, never trusted
    if key in table:
        return table[key]
    stats = compute()
    table[key] = stats
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: parallel runs never read a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return stats
