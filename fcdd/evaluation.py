"""Evaluation of a trained Detector on a test set: image and pixel metrics, calibrated decisions,
scores.csv, ROC points and figures (docs/method.md §6)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from fcdd import calibration as conformal
from fcdd import heatmaps as figs
from fcdd.config import Config
from fcdd.detector import Detector
from fcdd.errors import shown_path
from fcdd.metrics import PixelAUC, aupro, image_metrics
from fcdd.objectives.blur import display_heatmaps
from fcdd.scoring import full_heatmap


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
            full = full_heatmap(heat_np[i], mask.shape)
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

    warning = score_warning(scores_np, metrics, labels)
    if warning:
        metrics["score_warning"] = warning
        warnings.warn(f"{title}: {warning}" if title else warning, stacklevel=2)
    artifacts["scores"] = _write_scores(out_dir / "scores.csv", test_set, labels, scores_np)
    if curves:
        artifacts["roc_figure"] = out_dir / "figures" / "roc.png"
        figs.roc_plot(curves, artifacts["roc_figure"], title=f"ROC · {title}")
    shown = display_heatmaps(
        detector, heat_np, cfg.evaluation.blur_heatmaps
    )  # baselines: docs/baselines.md §4
    artifacts.update(_heatmap_figures(test_set, shown, scores_np, labels, cfg, out_dir / "figures", title))
    return metrics, artifacts


def score_warning(scores: np.ndarray, metrics: dict[str, Any], labels: Any = None) -> str | None:
    """One line when the scores cannot rank anything: near-constant over the test set, or inverted
    (an AUC below 0.5: anomalies score lower than good images). None when neither. Where only the
    image scores are inverted and the heatmaps still find the defects, it says that instead (the
    model has learnt where, not how to rank whole images), with the test set's counts."""
    scale = max(1.0, float(np.abs(scores).max(initial=0.0)))
    if len(scores) > 1 and float(np.ptp(scores)) <= 1e-6 * scale:
        return (
            f"the scores are near-constant ({float(scores.min()):.6g} to {float(scores.max()):.6g} over "
            f"{len(scores)} test images): the model does not tell images apart"
        )
    inverted = [
        f"{name.replace('_', ' ')} {metrics[name]:.3f}"
        for name in ("image_auc", "pixel_auc")
        if metrics.get(name) is not None and metrics[name] < 0.5
    ]
    if not inverted:
        return None
    pixel = metrics.get("pixel_auc")
    if pixel is not None and pixel >= 0.7 and len(inverted) == 1:
        counts = ""
        if labels is not None:
            labels = np.asarray(labels)
            counts = (
                f" over {int((labels == 0).sum())} good and {int((labels == 1).sum())} anomalous test images"
            )
        return (
            f"image scores are inverted ({inverted[0]} < 0.5{counts}) while the heatmaps find the "
            f"defects (pixel auc {pixel:.3f}): the model has learnt where, but its image score does not rank these "
            "images; with few good test images the image AUC is coarse"
        )
    return (
        f"scores are inverted ({', '.join(inverted)} < 0.5: anomalies score lower than good images); "
        "the model has not learnt this class (more epochs or data, or check the labels)"
    )


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
    masks = _Lazy(len(labels), lambda i: full_heatmap(np.asarray(test_set.full_mask(i), float), size))
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


def _resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(np.asarray(img, dtype=np.uint8))
    return np.asarray(pil.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


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
            w.writerow([shown_path(p), int(y), f"{float(s):.6g}", shown_path(d)])  # any file name
    return path
