"""The map at the model's input size seen at an image's own resolution (docs/method.md §1: pixel
scores are the upsampled map resized, nearest, to the image's size), without building it.

Nearest resizing only repeats values: full[y, x] = up[rows[y], cols[x]]. So a full-resolution
heatmap, mask or overlay can be produced a band of rows at a time from the small map, and a
threshold can be decided on the values that appear, ``up[unique rows][:, unique cols]`` (all of
``up`` when the image is at least as large as the map).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=256)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` positions, exactly as torch's ``nearest`` resizing (the
    one fcdd.anomaly_map.resize_nearest uses) picks them."""
    src = torch.arange(n_in, dtype=torch.float32)[None, None, :, None]  # exact integers; float32 as the maps
    picked = F.interpolate(src, size=(n_out, 1), mode="nearest")[0, 0, :, 0]
    index = picked.round().to(torch.int64).numpy()
    index.setflags(write=False)
    return index


def grid(shape: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row index, column index) that take a map of ``shape`` to ``size`` (h, w)."""
    return nearest_index(shape[0], size[0]), nearest_index(shape[1], size[1])


def values_at_size(up: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The map's values that appear at ``size``: the map itself unless the image is smaller."""
    rows, cols = grid(up.shape, size)
    if len(rows) >= up.shape[0] and len(cols) >= up.shape[1]:
        return up
    return up[np.unique(rows)][:, np.unique(cols)]


def full_rows(up: np.ndarray, size: tuple[int, int], band: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of the full-size map, ``band`` rows at a time."""
    rows, cols = grid(up.shape, size)
    for y0 in range(0, size[0], band):
        yield y0, up[rows[y0 : y0 + band]][:, cols]
