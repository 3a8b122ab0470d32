"""Anomalies injected during training (docs/method.md §4): Outlier Exposure, confetti noise, real defects,
and the synthetic kinds of docs/synthetic-anomalies.md (perlin, cutpaste, scar, mixes: fcdd.data.synthetic).

The training-set wrapper calls ``build_anomaly_source`` once and then ``source(image, rng)`` for each
sample it replaces; every source returns ``(PIL image of the same mode and size, bool mask (H, W))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from fcdd.data.confetti import Confetti, apply_confetti
from fcdd.data.datasets import dataset_spec
from fcdd.data.image_io import array_to_8bit, to_8bit
from fcdd.data.oe_pool import choose_oe_source
from fcdd.data.outlier_exposure import OutlierExposure, normalise_name
from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.config import Config

__all__ = [
    "AnomalySource",
    "Confetti",
    "OutlierExposure",
    "RealAnomalies",
    "apply_confetti",
    "build_anomaly_source",
    "select_semi_supervised",
    "oe_exclusions",
]


def oe_exclusions(dataset: str) -> set[str]:
    """Names (and wnids) of every class in the dataset's test set, normalised: OE must never show
    these. One-vs-rest test sets contain all classes of the dataset, so all of them are excluded."""
    return {normalise_name(n) for n in dataset_spec(dataset).oe_exclude}


class AnomalySource(Protocol):
    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]: ...


def _as_mask(mask: Any, where: str) -> np.ndarray:
    """A bool (h, w) array from a bool/0-1/0-255 array or a PIL image."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{where}: a mask must be 2-D (h, w), got shape {array.shape}")
    if array.dtype == bool:
        return array
    return array > (127 if array.max(initial=0) > 1 else 0)


class RealAnomalies:
    """Semi-supervised anomalies: a random real defect image with its mask, resized to the nominal image.

    Images and masks are kept as uint8/bool arrays, so the source pickles for DataLoader workers.
    """

    def __init__(self, anomalies: Sequence[tuple[Any, Any]] | None) -> None:
        if not anomalies:
            raise DataError(
                "anomalies.kind 'semi': no real anomalies given (need (image, mask) pairs from the test split)"
            )
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        for i, pair in enumerate(anomalies):
            if len(pair) != 2:
                raise DataError(f"real anomaly {i}: expected an (image, mask) pair")
            image, mask = pair
            image = (
                to_8bit(image) if isinstance(image, Image.Image) else Image.fromarray(array_to_8bit(image))
            )
            mask = _as_mask(mask, f"real anomaly {i}")
            if mask.shape != (image.height, image.width):
                raise DataError(
                    f"real anomaly {i}: mask {mask.shape} does not match image {(image.height, image.width)}"
                )
            self.images.append(np.asarray(image))
            self.masks.append(mask)

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
        index = int(rng.integers(len(self.images)))
        anomaly = Image.fromarray(self.images[index])
        if anomaly.mode != image.mode:
            anomaly = anomaly.convert(image.mode)
        mask = self.masks[index]
        if anomaly.size != image.size:
            anomaly = anomaly.resize(image.size, Image.BILINEAR)
            mask_image = Image.fromarray(mask.astype(np.uint8) * 255)
            mask = np.asarray(mask_image.resize(image.size, Image.NEAREST)) > 127
        return anomaly, mask.copy()


def build_anomaly_source(
    cfg: Config,
    channels: int,
    size: int,
    seed: int,
    real_anomalies: Sequence[tuple[Any, Any]] | None = None,
    exclude: set[str] | None = None,
    nominal: tuple[Any, np.ndarray] | None = None,
) -> AnomalySource | None:
    """The anomaly source of ``cfg.anomalies.kind``; None for 'none'.

    ``channels``/``size``: the nominal images' channels and input size (OE images are cached at a
    modest multiple of it). ``exclude``: OE class names/wnids never to draw; default: every class of
    the dataset's test set (its ``oe_exclude``); with its ``oe_reject_own`` (CIFAR-10) an OE source
    holding them is an error. ``nominal``: (image store, indices) of the nominal training images in
    use: Perlin textures.
    """
    kind = cfg.anomalies.kind
    if kind == "none":
        return None
    if isinstance(kind, dict) or kind in ("perlin", "cutpaste", "scar"):
        from fcdd.data.synthetic import TexturePool, synthetic_source

        textures = TexturePool(*nominal) if nominal is not None else None
        return synthetic_source(cfg, textures, confetti=Confetti(cfg.anomalies.confetti_gt))
    if kind == "confetti":
        return Confetti(cfg.anomalies.confetti_gt)
    if kind == "semi":
        return RealAnomalies(real_anomalies)
    if kind == "oe":
        choice = choose_oe_source(cfg.anomalies.oe_source, cfg.data.download)  # the one place
        _check_not_own_data(cfg, choice.source)
        spec = dataset_spec(cfg.data.dataset)
        oe = OutlierExposure.from_source(
            choice.source,
            channels,
            size,
            seed,
            limit=cfg.anomalies.oe_limit,
            exclude=spec.oe_exclude if exclude is None else exclude,
            # only the dataset's own class names are refused; ImageNet instances of them are filtered
            reject_excluded=frozenset(spec.classes or ()) if spec.oe_reject_own else False,
            download=choice.download,
            strict=cfg.data.strict,
        )
        oe.chosen = choice.how
        return oe
    raise DataError(
        f"anomalies.kind: {kind!r} is not one of oe, confetti, perlin, cutpaste, scar, semi, none"
    )


def _check_not_own_data(cfg: Config, source: str) -> None:
    """OE drawn from the dataset's own files would show test classes as anomalies."""
    own, oe = Path(cfg.data.root), Path(source)
    if own.exists() and oe.exists() and own.resolve() == oe.resolve():
        raise DataError(
            f"anomalies.oe_source {source}: is the dataset itself (data.root); OE must come from other data"
        )


def select_semi_supervised(
    defect_types: Sequence[str], labels: Sequence[int] | np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits test indices into (moved to training: k anomalous per defect type, kept in the test set).

    A defect type with fewer than k anomalous images gives all it has. Sorted index arrays;
    deterministic given the seed (types are visited in sorted order).
    """
    labels = np.asarray(labels)
    if len(defect_types) != len(labels):
        raise DataError(f"semi-supervised split: {len(defect_types)} defect types for {len(labels)} labels")
    if k < 1:
        raise DataError(f"anomalies.semi_k: must be at least 1, got {k}")
    types = np.asarray([str(t) for t in defect_types])
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for defect in sorted(set(types[labels == 1])):
        candidates = np.flatnonzero((types == defect) & (labels == 1))
        chosen.append(rng.choice(candidates, size=min(k, len(candidates)), replace=False))
    train_idx = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    test_keep = np.setdiff1d(np.arange(len(labels)), train_idx)
    if len(train_idx) == 0:
        raise DataError("semi-supervised split: the test set has no anomalous images to train on")
    return train_idx.astype(np.int64), test_keep.astype(np.int64)
