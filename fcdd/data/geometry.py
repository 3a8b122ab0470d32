"""Input geometry: ``model.input_size`` (an int: square; ``[H, W]``: a rectangle) and
``data.resize`` (``fixed``: resize every image to input_size; ``keep_aspect``: input_size is the
short side, the long side follows the training images' median aspect ratio).

FCDD is fully convolutional, so nothing but batching needs one size: all images of a run are
resized to the same H x W. Sizes travel as ``int`` when square (as model files and exports made
before rectangles carry them) and as ``[H, W]`` otherwise; :func:`size_hw` reads both.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcdd.errors import DataError

ASPECT_TOLERANCE = 0.05  # a resize that changes width/height by more than 5 % is worth a warning


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """An int (square) or [H, W] -> (H, W)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return int(size), int(size)
    if (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) for v in size)
    ):
        return int(size[0]), int(size[1])
    raise DataError(f"input size {size!r}: expected an integer or [height, width]")


def size_value(hw: Sequence[int]) -> int | list[int]:
    """(H, W) -> an int when square (the form of model files made before rectangles), else [H, W]."""
    h, w = int(hw[0]), int(hw[1])
    return h if h == w else [h, w]


def keep_aspect_hw(short: int, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(H, W) with the short side ``short`` and the median width/height ratio of ``sizes``."""
    if not sizes:
        raise DataError("data.resize keep_aspect: no training images to take the aspect ratio from")
    aspect = float(np.median([w / h for h, w in sizes]))
    if aspect >= 1:
        return short, max(short, round(short * aspect))
    return max(short, round(short / aspect)), short


def scaled_hw(hw: tuple[int, int], short: int) -> tuple[int, int]:
    """``hw`` scaled so its short side is ``short`` (the stored cache of a rectangular input)."""
    h, w = hw
    low = min(h, w)
    return round(h * short / low), round(w * short / low)


def aspect_change(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> float:
    """Relative change of width/height when an image of src_hw is resized to dst_hw."""
    return abs((dst_hw[1] / dst_hw[0]) / (src_hw[1] / src_hw[0]) - 1.0)


def warn_aspect(
    what: str,
    paths: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    hw: tuple[int, int],
    keep_aspect: bool = False,
) -> int:
    """One warning line for ``what`` when resizing to ``hw`` changes some images' aspect ratio by
    more than ASPECT_TOLERANCE; returns how many do. With ``keep_aspect`` the size already follows
    the training images' median aspect: only images of other shapes are left, which no setting fixes."""
    changed = [(p, s) for p, s in zip(paths, sizes, strict=True) if aspect_change(s, hw) > ASPECT_TOLERANCE]
    if changed:
        path, (h, w) = changed[0]
        advice = (
            "the images differ in shape and data.resize: keep_aspect took the training images' median "
            "aspect; crop them to one shape to avoid the distortion"
            if keep_aspect
            else "set model.input_size: [H, W] or data.resize: keep_aspect"
        )
        warnings.warn(
            f"{what}: resizing to {hw[0]}x{hw[1]} (HxW) changes the aspect ratio of {len(changed)} of "
            f"{len(paths)} images by more than {ASPECT_TOLERANCE:.0%} (e.g. {path}: {h}x{w}); {advice}",
            stacklevel=3,
        )
    return len(changed)


def resolve_input_hw(cfg: Any, train_sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The (H, W) every image of a resized dataset (MVTec, folder) goes to."""
    if cfg.data.resize == "keep_aspect":
        return keep_aspect_hw(int(cfg.model.input_size), train_sizes)
    return size_hw(cfg.model.input_size)
