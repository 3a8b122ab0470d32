"""Calibrated decisions on new images, one implementation for ``fcdd predict``, the served model
and the page: p-value, normalised score, decision at alpha, and the defect mask of a flagged image
(never empty), plus the warning when the calibration is too small to hold alpha (docs/calibration.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fcdd.calibration import min_alpha, normalised_score, p_values, pixel_threshold
from fcdd.pixel_grid import values_at_size

FAR_WARN_FACTOR = 2.0  # warn when one calibration draw can give this many times alpha (95 % range)


def far_range(alpha: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Where the false-alarm rate of one calibration set of ``n`` images lies (central ``level``)
    under exchangeability: Beta(l, n + 1 - l) with l = floor(alpha (n + 1)) (split conformal, no
    ties); (0, 0) when l < 1 (nothing is ever flagged). ``expected_far_range`` adds the test draw."""
    from scipy.stats import beta

    rank = math.floor(alpha * (n + 1))
    if rank < 1:
        return 0.0, 0.0
    a = (1 - level) / 2
    return float(beta.ppf(a, rank, n + 1 - rank)), float(beta.ppf(1 - a, rank, n + 1 - rank))


def alpha_warning(calibration: dict, alpha: float) -> str | None:
    """One line when decisions at ``alpha`` cannot be trusted as they read: alpha below 1/(n+1)
    (nothing can be flagged), or so few calibration images that the false-alarm rate this one
    calibration set gives can be FAR_WARN_FACTOR times alpha or more (95 % range); else None."""
    n = int(calibration["n"])
    if alpha < min_alpha(calibration):
        return (
            f"alpha {alpha:g} is below 1/(n+1) = {min_alpha(calibration):.4g} for n = {n} calibration "
            "images: no image can be flagged"
        )
    low, high = far_range(alpha, n)
    if high < FAR_WARN_FACTOR * alpha:
        return None
    return (
        f"only n = {n} calibration images: at alpha {alpha:g} the false-alarm rate of this calibration "
        f"can be anywhere in {low:.3g}-{high:.3g} (95 % range over calibration draws, up to "
        f"{high / alpha:.1f}x alpha); calibrate with more good images (evaluation.calibration) for a "
        "tighter rate"
    )


@dataclass
class MaskRule:
    """How an anomalous image's defect mask is cut from its map: pixels above (``inclusive``: at or
    above) ``threshold``; ``note`` says why it is not the calibrated pixel threshold, if it is not."""

    threshold: float
    inclusive: bool = False
    note: str = ""

    def apply(self, values: np.ndarray) -> np.ndarray:
        return values >= self.threshold if self.inclusive else values > self.threshold


def mask_rule(values: np.ndarray, calibration: dict, alpha: float, q: float) -> MaskRule:
    """The mask of an image flagged at ``alpha`` from its map ``values`` (those that appear at its
    resolution, fcdd.pixel_grid.values_at_size). Pixels above the calibrated pixel threshold where
    any is; otherwise the flag comes from the image as a whole (a diffuse defect, or too few
    calibration images for a pixel threshold at this alpha), and the mask marks the image's most
    anomalous region, its pixels at or above its own ``q``-quantile (the model's heatmap quantile),
    so a flagged image never gets an empty mask."""
    t = pixel_threshold(calibration, alpha)
    top = float(np.max(values))
    if top > t:
        return MaskRule(t)
    why = (
        f"no pixel above the calibrated pixel threshold {t:.4g} (highest {top:.4g})"
        if math.isfinite(t)
        else f"n = {int(calibration['n'])} calibration images give no pixel threshold at alpha {alpha:g}"
    )
    share = 100 * (1 - q)
    return MaskRule(
        float(np.quantile(values, q)),
        True,
        f"{why}: marked its most anomalous {share:.3g} % (its {q:g} quantile)",
    )


@dataclass
class Decision:
    """One image: ``anomalous`` = p_value <= alpha; ``rule`` cuts its mask (anomalous images only)."""

    p_value: float
    normalised_score: float
    anomalous: bool
    rule: MaskRule | None = None


def decide(
    calibration: dict,
    scores: Sequence[float],
    ups: Sequence[np.ndarray] | None,
    sizes: Sequence[tuple[int, int]] | None,
    alpha: float,
    q: float,
) -> list[Decision]:
    """Decisions for image ``scores``; with ``ups`` (maps at the model's input size) and ``sizes``
    (each image's (h, w)) the mask rule of each anomalous image."""
    p = p_values(calibration["image_scores"], scores)
    out = []
    for i, pv in enumerate(p):
        flag = bool(pv <= alpha)
        rule = None
        if flag and ups is not None:
            rule = mask_rule(values_at_size(ups[i], sizes[i]), calibration, alpha, q)
        out.append(Decision(float(pv), float(normalised_score(pv)), flag, rule))
    return out
