"""One experiment: train FCDD on one (dataset, class, seed), evaluate it, write its run folder.

This is the unit the CLI, the DVC stages and the Prefect flows all run.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fcdd import calibration as conformal
from fcdd import checkpoint_store
from fcdd import heatmaps as figs
from fcdd.anomaly_map import ReceptiveFieldUpsampler, resize_nearest
from fcdd.batchnorm import recalibrate_batchnorm
from fcdd.config import Config
from fcdd.data import build_datasets, describe
from fcdd.data.training_set import slug
from fcdd.detector import Detector
from fcdd.engine import resolve_device, seed_everything, train
from fcdd.fingerprint import fingerprint
from fcdd.metrics import PixelAUC, aupro, image_metrics
from fcdd.models import build_model
from fcdd.runlock import run_folder_lock
from fcdd.stored_config import config_to_store, root_from_model


@dataclass
class RunResult:
    dataset: str
    cls: str
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    model_path: Path
    artifacts: dict[str, Path] = field(default_factory=dict)


def class_slug(name: str) -> str:
    """'T-shirt/top' -> 't-shirt-top': safe in paths and registry names."""
    return slug(str(name)) or "class"


def run_dir_for(cfg: Config, cls: str, seed: int) -> Path:
    return Path(cfg.train.output_dir) / cfg.data.dataset / class_slug(cls) / f"seed{seed}"


RUN_OUTPUTS = (
    "checkpoint.pt",
    "checkpoint.pt.tmp",
    "model.pt",
    "model.pt.tmp",
    "metrics.json",
    "scores.csv",
    "roc_image.csv",
    "roc_pixel.csv",
    "data_summary.json",
    "kept_images.csv",
)


def run_experiment(
    cfg: Config, cls: str, seed: int, callbacks: Any = None, restart: bool = False
) -> RunResult:
    """Train (resuming from the run folder's checkpoint when its settings match), save model.pt,
    evaluate, save again with the metrics. The run folder is locked throughout; ``restart`` first
    removes what an earlier run left in it (checkpoint, model, metrics, figures)."""
    cfg = copy.deepcopy(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    cls = canonical_class(cfg, cls)
    cfg.train.seeds, cfg.data.classes = [seed], [cls]  # logged parameters show this run's class and seed
    run_dir = run_dir_for(cfg, cls, seed)
    with run_folder_lock(run_dir):
        if restart:
            clear_run_folder(run_dir)
            checkpoint_store.discard(cfg, run_dir)
        return _run_locked(cfg, cls, seed, device, run_dir, callbacks)


def _run_locked(cfg: Config, cls: str, seed: int, device, run_dir: Path, callbacks: Any) -> RunResult:
    data = build_datasets(cfg, cls, seed)
    seed_everything(seed)  # the network's initial weights repeat with the seed
    input_size = data.preprocess["input_size"]  # model.input_size as resolved for this data (keep_aspect)
    model = build_model(cfg, data.preprocess["channels"], input_size).to(device)
    upsampler = ReceptiveFieldUpsampler(model.receptive_field, cfg.sigma, input_size).to(device)
    (run_dir / "data_summary.json").write_text(json.dumps(data.summary, indent=2, default=str))
    print(describe(data.summary), file=sys.stderr, flush=True)
    if data.kept.get("limited"):  # data.train_limit / test_limit chose these: say which
        _write_kept(run_dir / KEPT_IMAGES, data.kept)
    else:
        (run_dir / KEPT_IMAGES).unlink(missing_ok=True)  # no file of an earlier, limited run

    settings = fingerprint(cfg, cls, seed)
    fit = train(
        model, data.train, cfg, device, run_dir, upsampler=upsampler, callbacks=callbacks, seed=seed,
        settings=settings,
    )  # fmt: skip
    history = fit["history"]
    bn_images = recalibrate_batchnorm(
        model, data.train, device, cfg.train.batch_size, cfg.train.bn_recalibration, seed
    )

    meta = {
        "net": _asdict(cfg.model) | {"input_size": input_size},  # what Detector.load rebuilds
        "dataset": cfg.data.dataset,
        "class": cls,
        "seed": seed,
        "quantile": cfg.quantile,
        "input_size": input_size,
        "config": {k: _plain(v) for k, v in config_to_store(cfg.flat()).items()},
        **root_from_model(cfg.data.root, run_dir),  # evaluate finds the data from any folder
        "settings": settings,
        "epochs": len(history),
        "bn_recalibration": {"mode": cfg.train.bn_recalibration, "images": bn_images},
    }
    detector = Detector(model, upsampler, data.preprocess, meta)
    # The trained model is on disk before calibration and evaluation: a failure there never loses
    # it, and no metrics of an earlier model stay beside it.
    (run_dir / "metrics.json").unlink(missing_ok=True)
    model_path = detector.save(run_dir / "model.pt")
    detector.meta["calibration"] = conformal.score_calibration(
        detector, data.calibration, cfg.evaluation.batch_size
    )
    metrics, artifacts = evaluate(
        detector, data.test, cfg, run_dir, title=f"{cfg.data.dataset} · {cls} · seed {seed}"
    )
    metrics.update({"dataset": cfg.data.dataset, "class": cls, "seed": seed, "epochs": len(history)})
    artifacts["calibration"] = run_dir / "calibration.json"  # n, score quantiles, thresholds
    artifacts["calibration"].write_text(json.dumps(conformal.summary(detector.meta["calibration"]), indent=2))
    detector.meta["metrics"] = {
        k: v for k, v in metrics.items() if isinstance(v, (int, float, str, type(None)))
    }
    detector.save(model_path)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return RunResult(cfg.data.dataset, cls, seed, run_dir, metrics, history, model_path, artifacts)


def canonical_class(cfg: Config, cls: str) -> str:
    """The dataset's own name of a class given by name, slug or index ('0' -> 't-shirt-top' on
    fmnist); a class the dataset does not know stays as given (its data module's error names it)."""
    from fcdd.data import class_names
    from fcdd.data.training_set import resolve_class

    try:
        names = class_names(cfg)
        return names[resolve_class(str(cls), names, cfg.data.dataset)]
    except (ValueError, OSError):  # DataError is a ValueError
        return str(cls)


def clear_run_folder(run_dir: Path) -> None:
    """Remove an earlier run's outputs (not the lock, not files of the user's own)."""
    for name in RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "figures", ignore_errors=True)


def score_heatmaps(detector: Detector, dataset: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image scores (n,), upsampled heatmaps (n, H, W) at the input size) of a dataset, in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    scores, heat = [], []
    for batch in loader:
        s, _, up = detector.score_tensor(batch["image"])
        scores.append(s.float().cpu().numpy())
        heat.append(up.float().cpu().numpy())
    return np.concatenate(scores), np.concatenate(heat)


def evaluate(
    detector: Detector, test_set: Any, cfg: Config, out_dir: Path, title: str = ""
) -> tuple[dict, dict]:
    """Score a test set; write scores, ROC points and figures; return (metrics, artifact paths)."""
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    scores_np, heat_np = score_heatmaps(detector, test_set, cfg.evaluation.batch_size)
    labels = np.asarray(test_set.labels).astype(int)

    metrics: dict[str, Any] = {"n_test": int(len(labels)), "n_anomalous": int(labels.sum())}
    metrics.update(image_auc=None, image_aupr=None, pixel_auc=None, aupro=None)
    artifacts: dict[str, Path] = {}
    curves = {}
    both_labels = 0 < labels.sum() < len(labels)
    if both_labels:
        im = image_metrics(labels, scores_np)
        metrics.update(image_auc=float(im["auc"]), image_aupr=float(im["aupr"]))
        artifacts["roc_image"] = _write_roc(out_dir / "roc_image.csv", im["fpr"], im["tpr"])
        curves[f"image (AUC {im['auc']:.3f})"] = (im["fpr"], im["tpr"], im["auc"])
    else:
        # Scores and heatmaps are still written: a nominal-only folder dataset is a valid start.
        only = "anomalous" if labels.sum() else "nominal"
        metrics["warning"] = (
            f"the test set holds only {only} images ({len(labels)}): AUCs need both nominal and "
            "anomalous test images (for a folder dataset: data.folder.anomalous), so they are null"
        )
        warnings.warn(f"{title}: {metrics['warning']}" if title else metrics["warning"], stacklevel=2)

    calibration = detector.meta.get("calibration")
    metrics.update(conformal.decision_metrics(labels, scores_np, calibration))

    pixel_images, pixel_note = _pixel_scope(test_set, labels)
    if pixel_note:
        metrics["pixel_note"] = pixel_note
    if pixel_images is not None and both_labels:
        metrics["pixel_images"] = int(len(pixel_images))
        pix = PixelAUC()
        masks_scored = (
            conformal.MaskScorer(calibration, float(heat_np.min()), float(heat_np.max()))
            if calibration
            else None
        )
        full_masks, full_maps = [], []
        for i in pixel_images:
            mask = np.asarray(test_set.full_mask(i), dtype=bool)
            full = _resize_nearest(heat_np[i], mask.shape)
            pix.update(full, mask)
            if masks_scored is not None:
                masks_scored.update(full, mask)
            if cfg.evaluation.aupro:  # AUPRO needs every map at once (its thresholds span all images)
                full_masks.append(mask)
                full_maps.append(full)
        metrics["pixel_auc"] = float(pix.compute())
        if masks_scored is not None:
            metrics.update(masks_scored.compute())
        fpr, tpr = pix.roc_curve()
        artifacts["roc_pixel"] = _write_roc(out_dir / "roc_pixel.csv", fpr, tpr)
        curves[f"pixel (AUC {metrics['pixel_auc']:.3f})"] = (fpr, tpr, metrics["pixel_auc"])
        if cfg.evaluation.aupro:
            metrics["aupro"] = float(aupro(full_masks, full_maps, max_fpr=cfg.evaluation.aupro_max_fpr))
        del full_masks, full_maps

    artifacts["scores"] = _write_scores(out_dir / "scores.csv", test_set, labels, scores_np)
    if curves:
        artifacts["roc_figure"] = out_dir / "figures" / "roc.png"
        figs.roc_plot(curves, artifacts["roc_figure"], title=f"ROC · {title}")
    artifacts.update(_heatmap_figures(test_set, heat_np, scores_np, labels, cfg, out_dir / "figures", title))
    return metrics, artifacts


def _pixel_scope(test_set: Any, labels: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """The test images pixel metrics are computed over (None: none) and a note for metrics.json
    where images are left out: pixel ground truth is known for nominal images and for anomalous
    ones with a mask; an anomalous image without one would count its defect as nominal pixels."""
    if not test_set.has_masks:
        return None, getattr(test_set, "mask_note", None)
    known = np.asarray(getattr(test_set, "mask_known", np.ones(len(labels), dtype=bool)), dtype=bool)
    anomalous, unmasked = int(labels.sum()), int((~known & (labels == 1)).sum())
    if anomalous and unmasked == anomalous:  # masks exist, but not for the images test_limit kept
        return None, f"none of the {anomalous} anomalous test images has a mask: pixel metrics are off"
    note = (
        f"pixel metrics over the {int(known.sum())} of {len(labels)} test images with ground truth: "
        f"{unmasked} of {anomalous} anomalous images have no mask"
        if unmasked
        else None
    )
    return np.flatnonzero(known), note


def _heatmap_figures(
    test_set, heat_np, scores, labels, cfg: Config, fig_dir: Path, title: str
) -> dict[str, Path]:
    """Local and global heatmap grids over a spread of the score ranking (docs/method.md §6 figures)."""
    size = tuple(heat_np.shape[-2:])  # (H, W) of the input
    images = _Lazy(len(labels), lambda i: _resize_image(test_set.raw_image(i), size))
    masks = _Lazy(len(labels), lambda i: _resize_nearest(np.asarray(test_set.full_mask(i), float), size))
    out = {}
    for name in ("local", "global"):
        path = fig_dir / f"heatmaps_{name}.png"
        figs.heatmap_grid(
            images,
            heat_np,
            scores,
            labels,
            path,
            masks=masks if test_set.has_masks else None,
            title=title,
            normalisation=name,
            q=cfg.quantile,
            max_images=cfg.evaluation.heatmap_count,
        )
        out[f"heatmaps_{name}"] = path
    return out


class _Lazy:
    """A sequence that loads item i only when a figure draws it (test sets can be large)."""

    def __init__(self, n: int, load):
        self.n, self.load = n, load

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.load(int(i))


def _resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if tuple(a.shape) == tuple(shape):
        return a.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return resize_nearest(t, shape)[0, 0].numpy()


def _resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(np.asarray(img, dtype=np.uint8))
    return np.asarray(pil.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


KEPT_IMAGES = "kept_images.csv"


def _write_kept(path: Path, kept: dict) -> Path:
    """split,index,path of every image in use (the raw dataset's index; path where files exist)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "index", "path"])
        for split in ("train", "test"):
            indices, paths = kept[split]["indices"], kept[split]["paths"]
            for k, j in enumerate(indices):
                w.writerow([split, j, paths[k] if k < len(paths) else ""])
    return path


def _write_roc(path: Path, fpr, tpr) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fpr", "tpr"])
        w.writerows(zip(np.round(fpr, 6), np.round(tpr, 6), strict=True))
    return path


def _write_scores(path: Path, test_set, labels, scores) -> Path:
    paths = getattr(test_set, "paths", None) or [""] * len(labels)
    defects = getattr(test_set, "defect_types", None) or [""] * len(labels)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "score", "defect_type"])
        for p, y, s, d in zip(paths, labels, scores, defects, strict=True):
            w.writerow([p, int(y), f"{float(s):.6g}", d])
    return path


def _asdict(dc) -> dict:
    import dataclasses

    return dataclasses.asdict(dc)


def _plain(v):
    """Config values as plain types torch.load(weights_only=True) accepts."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
