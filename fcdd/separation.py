"""The guard rail after training (docs/synthetic-anomalies.md): does the model score synthetic
anomalies above good images it has not trained on?

The good images are the held-out calibration images where the run has them (never trained on),
else the nominal training images (seen in training: an optimistic check, and said so). Each gets
one anomaly from the run's own anomaly source (``anomalies.kind``, seeded), both sets are scored
exactly like test images, and two ranking AUCs of anomalies over good images are computed: by the
image score (the map's mean, what decisions use) and by the heatmap's maximum (what defect masks
use: a small anomaly moves the mean of the map little but its maximum much). A model that
separates its own anomalies by neither cannot be trusted to find real defects; a warning says so
in one line with the likely cause.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fcdd.image_scores import heatmap_maximum

if TYPE_CHECKING:
    from fcdd.config import Config
    from fcdd.detector import Detector

MIN_AUC = 0.75  # below: the model does not separate its own synthetic anomalies from good images
INVERTED_AUC = 0.4  # below: anomalies clearly score lower than good images (0.5: chance)
FLAT_SPREAD = 1e-4  # score spread (max - min) / max(|median|, 1e-12) below: the scores are constant
STALLED_LOSS = 0.9  # last epoch's loss above this share of the first's: training hardly moved
GUARD_SEED = 26  # the anomalies' numpy seed is [run seed, GUARD_SEED, image number]
MAX_IMAGES = 200  # good images scored at most (a seeded subset of more)


@dataclass
class Separation:
    """What the guard rail measured; ``ok`` False comes with ``cause``."""

    images: str  # "calibration" (held out, never trained on) or "training" (seen in training)
    n: int  # good images, and as many anomalies
    auc: float  # P(an anomaly's image score is above a good image's), ties one half
    auc_max: float  # the same for the heatmaps' maxima
    score_is_max: bool = False  # both scores are the same numbers (model.image_score: max): one AUC
    good: dict[str, float] = field(default_factory=dict)  # image score quartiles of the good images
    anomalous: dict[str, float] = field(default_factory=dict)
    ok: bool = True
    cause: str | None = None

    @property
    def best(self) -> float:
        """The better of the two AUCs (NaN when there were no images)."""
        return max(self.auc, self.auc_max) if self.n else math.nan

    def line(self, where: str = "") -> str:
        """The warning: one line, starting with ``where`` (e.g. 'mvtec/grid seed 0')."""
        head = f"{where}: " if where else ""
        by = "" if self.score_is_max else f", {self.auc_max:.2f} by heatmap maximum"
        return (
            f"warning: {head}the model does not separate good images ({self.images}, n={self.n}) from "
            f"synthetic anomalies (AUC {self.auc:.2f} by image score{by}): {self.cause}"
        )

    def to_dict(self) -> dict[str, Any]:
        """For separation.json: strict JSON, so an AUC that does not exist (no images) is null."""
        out = {**asdict(self), "min_auc": MIN_AUC}
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def ranking_auc(good: np.ndarray, anomalous: np.ndarray) -> float:
    """P(anomalous > good) + P(equal) / 2 over all pairs (the Mann-Whitney AUC)."""
    good, anomalous = np.asarray(good, np.float64), np.asarray(anomalous, np.float64)
    if len(good) == 0 or len(anomalous) == 0:
        return math.nan
    greater = (anomalous[:, None] > good[None, :]).mean()
    equal = (anomalous[:, None] == good[None, :]).mean()
    return float(greater + equal / 2)


def _quartiles(scores: np.ndarray) -> dict[str, float]:
    q = np.quantile(scores, (0.25, 0.5, 0.75))
    return {"q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


def likely_cause(good: np.ndarray, anomalous: np.ndarray, best_auc: float, losses: Sequence[float]) -> str:
    """The most likely reason a model does not separate (image scores ``good``, ``anomalous``; the
    better AUC): first match of constant scores, inverted scores, a loss that hardly fell, else
    anomalies too weak to learn in this budget."""
    scores = np.concatenate([good, anomalous])
    spread = float(scores.max() - scores.min()) / max(abs(float(np.median(scores))), 1e-12)
    if spread < FLAT_SPREAD:
        return (
            "its scores are nearly constant (the net collapsed, or eval-mode BatchNorm statistics squash "
            "every input): try train.bn_recalibration: nominal, more epochs or a lower train.lr"
        )
    if best_auc < INVERTED_AUC:
        return (
            "anomalies score LOWER than good images (inverted): the eval-mode BatchNorm statistics, averaged "
            "over batches half anomalies, likely misplace good images; try train.bn_recalibration: nominal"
        )
    if len(losses) >= 2 and losses[-1] > STALLED_LOSS * losses[0]:
        return (
            f"the training loss hardly fell ({losses[0]:.3g} -> {losses[-1]:.3g}): too few epochs, or "
            "train.lr does not suit this data"
        )
    return (
        "it learned the synthetic anomalies too weakly in this budget: train longer (train.epochs), or "
        "try another anomalies.kind (docs/synthetic-anomalies.md)"
    )


def _score_all(
    images: Sequence[torch.Tensor], transform: Any, score_batch: Callable, batch_size: int
) -> np.ndarray:
    """[n, 2]: image score and heatmap maximum of each image."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.stack([transform.from_uint8(im) for im in images[start : start + batch_size]])
            scores, maxima = score_batch(x)
            out.append(
                torch.stack([torch.as_tensor(scores), torch.as_tensor(maxima)], 1).float().cpu().numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, 2))


def check_separation(
    good_images: Sequence[torch.Tensor],
    source: Callable,
    transform: Any,
    score_batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    seed: int,
    images: str = "calibration",
    losses: Sequence[float] = (),
    batch_size: int = 16,
) -> Separation:
    """Score ``good_images`` (uint8 [C, H, W] at storage size) and one anomaly of ``source`` made
    from each; ``transform``: the test transform (``from_uint8``); ``score_batch``: a preprocessed
    batch -> (image scores, heatmap maxima). Deterministic for a seed; draws nothing from the
    global RNGs."""
    from fcdd.data.training_set import uint8_to_pil
    from fcdd.data.transforms import pil_to_uint8

    anomalies = []
    for i, x in enumerate(good_images):
        out, _ = source(uint8_to_pil(x), np.random.default_rng([seed, GUARD_SEED, i]))
        anomalies.append(pil_to_uint8(out, x.shape[0]))
    good = _score_all(good_images, transform, score_batch, batch_size)
    anomalous = _score_all(anomalies, transform, score_batch, batch_size)
    auc, auc_max = (ranking_auc(good[:, k], anomalous[:, k]) for k in (0, 1))
    same = (
        bool(len(good))
        and np.array_equal(good[:, 0], good[:, 1])
        and np.array_equal(anomalous[:, 0], anomalous[:, 1])
    )
    result = Separation(images, len(good), auc, auc_max, score_is_max=same)
    if len(good):
        result.good, result.anomalous = _quartiles(good[:, 0]), _quartiles(anomalous[:, 0])
    if not result.best >= MIN_AUC:  # NaN (no images) never passes silently either
        result.ok = False
        result.cause = (
            likely_cause(good[:, 0], anomalous[:, 0], result.best, losses) if len(good) else "no images"
        )
    return result


def detector_scores(detector: Any) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A Detector's (image scores, heatmap maxima) of a preprocessed batch."""

    def score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, _, heatmaps = detector.score_tensor(x)
        return scores, heatmap_maximum(heatmaps)

    return score


def guard(
    data: Any, score_batch: Callable, seed: int, history: Sequence[dict], batch_size: int
) -> Separation | None:
    """The guard rail of a run: ``data`` is its fcdd.data.DataBundle (held-out calibration images
    if any, else the nominal training images; the training set's anomaly source). None where the
    run injects no anomalies (``anomalies.kind: none``)."""
    train = data.train
    if train.source is None:
        return None
    cal = data.calibration
    if cal is not None and len(cal):
        store, keep, which = cal.images, cal.keep, "calibration"
    else:
        store, keep, which = train.images, train.keep, "training"
    keep = np.asarray(keep)
    if len(keep) > MAX_IMAGES:
        keep = np.sort(np.random.default_rng([seed, GUARD_SEED]).choice(keep, MAX_IMAGES, replace=False))
    good = [store.uint8(int(j)) for j in keep]
    losses = [float(h["loss"]) for h in history if "loss" in h]
    return check_separation(
        good, train.source, data.test.transform, score_batch, seed, which, losses, batch_size
    )


def write_separation(
    data: Any, detector: Detector, cfg: Config, cls: str, seed: int, history: Sequence[dict], run_dir: Path
) -> dict[str, Path]:
    """The guard rail of a finished run: separation.json in its folder and, when the model cannot
    tell good images from its own synthetic anomalies, one warning line. Returns the artifact."""
    result = guard(data, detector_scores(detector), seed, history, cfg.evaluation.batch_size)
    path = Path(run_dir) / "separation.json"
    if result is None:
        path.unlink(missing_ok=True)
        return {}
    path.write_text(json.dumps(result.to_dict(), indent=2))
    if not result.ok:
        print(result.line(f"{cfg.data.dataset}/{cls} seed {seed}"), file=sys.stderr, flush=True)
    return {"separation": path}
