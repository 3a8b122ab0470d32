"""The calibration hold-out (``evaluation.calibration``): nominal training images kept out of
training, so that their scores after training give conformal p-values (fcdd/calibration.py,
docs/calibration.md). The split is a data matter: it decides which images a run trains on.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fcdd.errors import DataError

MIN_CALIBRATION = 20  # a fraction is raised to this many images where the data allows (p >= 1/21)
MIN_TRAINING = 10  # nominal images that must remain for training
MIN_USABLE = 10  # below this many held-out images a fraction's hold-out is skipped (alpha >= 1/11 only)


def calibration_count(spec: float | int | None, available: int) -> int:
    """How many of ``available`` nominal training images a ``evaluation.calibration`` value holds out.

    Never more than training keeps: a fraction takes at most half the images, and where that half
    is below MIN_USABLE the hold-out is skipped with a warning naming the alpha it would have
    allowed; a count that would leave training fewer images than it takes is an error naming the fix.
    """
    if not spec:
        return 0
    fix = "set evaluation.calibration: 0 (no calibration) or a smaller fraction"
    if isinstance(spec, float) and spec < 1:
        # At least MIN_CALIBRATION images where that keeps half the data for training, never more.
        n = min(max(math.ceil(spec * available), min(MIN_CALIBRATION, available // 2)), available // 2)
        if n < MIN_USABLE:
            warnings.warn(
                f"evaluation.calibration {spec}: {available} nominal training images are too few to "
                f"hold out: {n} held-out images would allow p-values only at alpha >= 1/{n + 1} = "
                f"{1 / (n + 1):.3g}; calibration skipped, every image trains ({fix} to silence this)",
                stacklevel=3,
            )
            return 0
        return n
    n = int(spec)
    if n > available:
        raise DataError(
            f"evaluation.calibration: {spec} asks for {n} images but the class has only "
            f"{available} nominal training images; {fix}"
        )
    if available - n < max(n, MIN_TRAINING):
        raise DataError(
            f"evaluation.calibration: {spec} holds out {n} of {available} nominal training images, "
            f"leaving {available - n} for training (at least {max(n, MIN_TRAINING)} needed: no fewer "
            f"than it takes); {fix}"
        )
    return n


def split_calibration(
    keep: np.ndarray, spec: float | int | None, seed: int, groups: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, calibration indices) of ``keep``: seeded, stratified by ``groups``
    (e.g. each image's sub-folder) so every group keeps its share in both parts."""
    keep = np.asarray(keep, dtype=np.int64)
    n = calibration_count(spec, len(keep))
    if n == 0:
        return keep, np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 3])
    labels = np.asarray([groups[int(j)] for j in keep]) if groups else np.zeros(len(keep), dtype=int)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * n / len(keep)
    quota = np.floor(exact).astype(int)
    for g in np.argsort(-(exact - quota), kind="stable")[: n - int(quota.sum())]:
        quota[g] += 1  # largest remainders first
    cal = np.concatenate([rng.choice(keep[inverse == g], q, replace=False) for g, q in enumerate(quota)])
    cal = np.sort(cal.astype(np.int64))
    return np.setdiff1d(keep, cal), cal


class CalibrationSet(Dataset):
    """Held-out nominal training images, with the test transform (no augmentation, no anomalies)."""

    def __init__(self, images: Any, keep: np.ndarray, transform: Any):
        self.images, self.keep, self.transform = images, np.asarray(keep), transform

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.transform.from_uint8(self.images.uint8(int(self.keep[i])))}
