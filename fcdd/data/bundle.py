"""``build_datasets(cfg, cls, seed) -> DataBundle``: one class of a dataset, ready to train and test.

Order of operations: load the raw splits; (semi) move k real anomalies per defect type from test
to train; apply the seeded ``train_limit`` / label-stratified ``test_limit``; compute (or read the
cached) normalisation statistics from the kept nominal training images; wrap everything in the
training set (online anomaly injection) and the test set.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcdd.data.anomalies import build_anomaly_source, select_semi_supervised
from fcdd.data.anomaly_kinds import kind_text
from fcdd.data.calibration_split import CalibrationSet, split_calibration
from fcdd.data.datasets import dataset_spec
from fcdd.data.geometry import size_hw
from fcdd.data.normalisation import IMAGENET_MEAN, IMAGENET_STD, cached_stats, gcn_minmax_stats, meanstd_stats
from fcdd.data.synthetic import batch_injector
from fcdd.data.training_set import RawData, TestSet, TrainingSet, uint8_to_pil
from fcdd.data.transforms import TestTransform, test_transform
from fcdd.errors import DataError

STATS_BATCH = 512


@dataclass
class DataBundle:
    train: TrainingSet
    test: TestSet
    preprocess: dict[str, Any]
    summary: dict[str, Any]
    classes: list[str]
    name: str
    calibration: CalibrationSet | None = None  # held-out nominal images (evaluation.calibration)
    # Which raw images are in use: {"train"/"calibration"/"test": {"indices", "paths"}, "limited": bool}
    kept: dict[str, Any] = field(default_factory=dict)


def seeded_subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``limit`` of ``n`` items (all if no limit)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise DataError(f"data.train_limit must be at least 1, got {limit}")
    return np.sort(np.random.default_rng([seed, 1]).choice(n, limit, replace=False))


def stratified_subset(keep: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """A seeded subset of ``keep`` of size ``limit`` with the label proportions of ``keep``."""
    if limit is None or limit >= len(keep):
        return keep
    if limit < 1:
        raise DataError(f"data.test_limit must be at least 1, got {limit}")
    lab = labels[keep]
    counts = {int(v): int((lab == v).sum()) for v in np.unique(lab)}
    quota = {v: max(1, round(limit * c / len(keep))) for v, c in counts.items()}
    while sum(quota.values()) > limit:  # rounding up small labels may overshoot
        quota[max(quota, key=quota.get)] -= 1  # type: ignore[arg-type]
    while sum(quota.values()) < limit:
        quota[max(quota, key=lambda v: counts[v] - quota[v])] += 1
    rng = np.random.default_rng([seed, 2])
    chosen = [rng.choice(keep[lab == v], q, replace=False) for v, q in quota.items() if q > 0]
    return np.sort(np.concatenate(chosen))


def _stats(cfg: Any, raw: RawData, keep: np.ndarray, geometry: dict[str, Any], seed: int) -> dict[str, Any]:
    if raw.stats == "imagenet":
        return {"kind": "meanstd", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    plain = TestTransform({**geometry, "channels": raw.channels, "normalisation": {"kind": "none"}})

    def batches():
        for start in range(0, len(keep), STATS_BATCH):
            chunk = keep[start : start + STATS_BATCH]
            yield torch.stack([plain.from_uint8(raw.train.uint8(int(j))) for j in chunk])

    compute = gcn_minmax_stats if raw.stats == "gcn-minmax" else meanstd_stats
    limit = f"limit={cfg.data.train_limit},seed={seed}" if len(keep) < len(raw.train) else "all"
    if cfg.evaluation.calibration:  # the calibration images are not part of the statistics
        limit += f",calibration={cfg.evaluation.calibration}"
    key = f"{raw.stats_key}|size={_size_key(geometry)}|{limit}"
    return cached_stats(cfg.data.cache_dir, key, lambda: compute(batches()))


def _size_key(geometry: dict[str, Any]) -> str:
    """The input size in a statistics key: the int of a square (keys made before rectangles stay
    valid), ``HxW`` and the stored ``HxW`` of a rectangle (both shape the pixels the stats see)."""
    h, w = size_hw(geometry["input_size"])
    if h == w:
        return str(h)
    stored = geometry.get("stored")
    return f"{h}x{w}" + (f",stored={'x'.join(map(str, size_hw(stored)))}" if stored else "")


def _check_input_size(cfg: Any, size: int | list[int]) -> None:
    """The dataset's inputs are what model.input_size (and data.resize) asks for."""
    h, w = size_hw(size)
    wanted = cfg.model.input_size
    ok = min(h, w) == wanted if cfg.data.resize == "keep_aspect" else (h, w) == size_hw(wanted)
    if not ok:
        raise DataError(
            f"data.dataset {cfg.data.dataset} has {h}x{w} inputs but model.input_size is {wanted}"
        )


def _semi(cfg: Any, raw: RawData, seed: int) -> tuple[list, list[str]]:
    """Move k real anomalies per defect type from test to train (removed from the test set)."""
    test = raw.test
    if test.masks is None:
        raise DataError(f"anomalies.kind semi needs anomalous test images with masks; {raw.name} has none")
    known = np.ones(len(test.labels), dtype=bool) if test.mask_known is None else test.mask_known
    unmasked = [p for p, y, k in zip(test.paths, test.labels, known, strict=True) if y and not k]
    if unmasked:  # a real defect moved to training needs its mask: it is the pixel-wise target
        raise DataError(
            f"anomalies.kind semi needs a mask for every anomalous test image; {len(unmasked)} have none "
            f"(e.g. {unmasked[0]})"
        )
    train_idx, keep = select_semi_supervised(test.defect_types, test.labels, cfg.anomalies.semi_k, seed)
    train_idx = [int(j) for j in train_idx]
    real = [(uint8_to_pil(test.images.uint8(j)), test.masks.uint8(j)[0].numpy() > 0) for j in train_idx]
    test.keep = np.asarray(sorted(int(j) for j in keep), dtype=np.int64)
    return real, [test.paths[j] for j in train_idx]


def _masks_found(test: Any) -> int:
    """Anomalous test images (of those kept) whose mask marks at least one pixel."""
    return sum(
        int(test.masks.uint8(int(j)).any()) for j in test.keep if int(np.asarray(test.labels)[int(j)]) == 1
    )


def describe(summary: dict[str, Any]) -> str:
    """What was loaded, in one paragraph: printed when training starts."""
    tr, te = summary["train"], summary["test"]
    source = tr.get("anomaly_source_images")
    if te["has_masks"]:
        masks = f"; masks found for {te['masks_found']} of {te['anomalous']}"
    else:
        masks = "; no masks" + (f" ({te['mask_note']})" if te.get("mask_note") else "")
    lines = [
        f"loaded {summary['dataset']}/{summary['class']} from {summary['root']}: "
        f"train {tr['nominal']} nominal (of {tr['nominal_available']}"
        + (f", {tr['calibration']} held out for calibration" if tr.get("calibration") else "")
        + f"), anomalies {kind_text(tr['anomaly_kind'])} p={tr['anomaly_probability']:g}"
        + (f" from {source} source images" if source is not None else ""),
        *([oe_line(summary["dataset"], tr["oe"])] if tr.get("oe") else []),
        f"  test {te['nominal']} good, {te['anomalous']} defective: "
        + ", ".join(f"{k} {v}" for k, v in te["defect_types"].items())
        + masks,
    ]
    skipped = summary.get("skipped") or []
    if skipped:
        first = skipped[0]
        lines.append(
            f"  skipped {len(skipped)} files, e.g. {first.get('path', first)}: {first.get('reason', '')}"
        )
    return "\n".join(lines)


def oe_line(dataset: str, oe: dict[str, Any]) -> str:
    """The one line on the Outlier Exposure pool: where from, why, and what was left out of it."""
    how = f" ({oe['chosen']})" if oe.get("chosen") else ""
    return (
        f"  OE pool {oe['source']}{how}: {oe['excluded']} of {oe['pool']} images excluded as instances of "
        f"{dataset_spec(dataset).title}'s classes (Outlier Exposure never shows a test class, docs/method.md §4)"
    )


def build_datasets(cfg: Any, cls: str, seed: int) -> DataBundle:
    """Training set (with anomaly injection), test set, preprocessing and a summary for class ``cls``."""
    spec = dataset_spec(cfg.data.dataset)
    raw = spec.load(cfg, str(cls), seed)
    _check_input_size(cfg, raw.geometry["input_size"])
    kind = cfg.anomalies.kind
    real, moved = _semi(cfg, raw, seed) if kind == "semi" else (None, [])
    raw.test.keep = stratified_subset(raw.test.keep, np.asarray(raw.test.labels), cfg.data.test_limit, seed)
    train_keep = seeded_subset(len(raw.train), cfg.data.train_limit, seed)
    groups = (
        [str(Path(p).parent) for p in raw.train_paths] if len(raw.train_paths) == len(raw.train) else None
    )
    train_keep, cal_keep = split_calibration(train_keep, cfg.evaluation.calibration, seed, groups)
    preprocess = {
        **raw.geometry,
        "channels": raw.channels,
        "normalisation": _stats(cfg, raw, train_keep, raw.geometry, seed),
    }
    source = None
    if kind != "none":
        source = build_anomaly_source(
            cfg, raw.channels, raw.source_size, seed, real_anomalies=real, nominal=(raw.train, train_keep)
        )
    train = TrainingSet(
        raw.train,
        spec.train_transform(preprocess, raw.stored_size),
        raw.channels,
        source=source,
        probability=cfg.anomalies.probability if source is not None else 0.0,
        keep=train_keep,
        seed=seed,
        batch_transform=spec.batch_transform(preprocess) if cfg.data.batch_augment else None,
        injector=batch_injector(source),  # perlin/cutpaste/scar: injected batched where augmented
    )
    test = TestSet(raw.test, test_transform(preprocess))
    calibration = CalibrationSet(raw.train, cal_keep, test_transform(preprocess)) if len(cal_keep) else None
    return DataBundle(
        train=train,
        test=test,
        preprocess=preprocess,
        summary=_summary(cfg, raw, train, test, len(cal_keep), source, moved),
        classes=raw.classes,
        name=spec.name,
        calibration=calibration,
        kept=_kept(cfg, raw, train_keep, test, cal_keep),
    )


def _summary(
    cfg: Any, raw: RawData, train: TrainingSet, test: TestSet, calibration: int, source: Any, moved: list[str]
) -> dict[str, Any]:
    """Counts per split and label (and per defect type), for data_summary.json and reports."""
    kind = cfg.anomalies.kind
    return {
        "dataset": cfg.data.dataset,
        "class": raw.cls,
        "root": str(Path(cfg.data.root)),
        "train": {
            "nominal": len(train),
            "nominal_available": len(raw.train),
            "calibration": calibration,  # held out of training, scored for p-values
            "real_anomalies": len(moved),
            "anomaly_kind": kind,
            "anomaly_probability": train.probability,
            "anomaly_source_images": len(source) if kind in ("oe", "semi") else None,
            **({"oe": source.summary()} if kind == "oe" else {}),
        },
        "test": {
            "total": len(test),
            "nominal": int((test.labels == 0).sum()),
            "anomalous": int((test.labels == 1).sum()),
            # per defect type over the anomalous images only (the nominal ones are counted above)
            "defect_types": dict(
                sorted(Counter(d for d, y in zip(test.defect_types, test.labels, strict=True) if y).items())
            ),
            "has_masks": test.has_masks,
            "masks_found": _masks_found(raw.test) if test.has_masks else 0,
            "mask_note": test.mask_note,
        },
        "moved_to_train": moved,
        "skipped": raw.skipped,
    }


def _kept(
    cfg: Any, raw: RawData, train_keep: np.ndarray, test: TestSet, cal_keep: np.ndarray
) -> dict[str, Any]:
    """Which raw images are in use: training, calibration (held out of the training images) and
    test (kept_images.csv when data.train_limit/test_limit chose them or evaluation.calibration
    held some out)."""
    named = len(raw.train_paths) == len(raw.train)

    def train_part(keep: np.ndarray) -> dict[str, Any]:
        return {
            "indices": [int(j) for j in keep],
            "paths": [raw.train_paths[j] for j in keep] if named else [],
        }

    return {
        "train": train_part(train_keep),
        "calibration": train_part(cal_keep),
        "test": {"indices": [int(j) for j in raw.test.keep], "paths": list(test.paths)},
        "limited": cfg.data.train_limit is not None or cfg.data.test_limit is not None or len(cal_keep) > 0,
    }
