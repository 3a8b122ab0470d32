"""The comparison stage's figure and markdown (pipelines/stages/compare.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcdd.comparison import TITLES

# The paper's means for the objectives it reports beside FCDD, per dataset (image AUC for
# one-vs-rest data, pixel AUC for MVTec-AD); FCDD per class for Fashion-MNIST is in report.py.
PAPER_MEANS = {
    "fmnist": "paper, full protocol (400 epochs, 5 seeds): FCDD 0.89, AE about 0.82 mean image AUC",
    "cifar10": "paper, full protocol (600 epochs, 5 seeds): FCDD 0.95 mean image AUC",
    "mvtec": "paper, pretrained VGG and full protocol: FCDD 0.92 mean pixel AUC (grid 0.91, hazelnut 0.95); "
    "its AE baselines 0.82-0.86",
}


def draw_figure(cfg, settings: dict, rows: list[dict], path: Path) -> Path:
    """The comparison figure from the first seed's models of each class: ``figure_images`` test
    images spread over the classes (anomalous ones first), one heatmap column per objective."""
    from fcdd.comparison import comparison_figure, figure_heatmaps, figure_indices
    from fcdd.data import build_datasets
    from fcdd.detector import Detector

    classes = list(dict.fromkeys(str(r["class"]) for r in rows))
    seed = min(int(r["seed"]) for r in rows)
    per_class = max(1, settings["figure_images"] // len(classes))
    images, masks, captions = [], [], []
    maps: dict[str, list] = {o: [] for o in settings["objectives"]}
    has_masks = False
    for cls in classes[: settings["figure_images"]]:
        test = build_datasets(cfg, cls, seed).test
        picks = figure_indices(test.labels, per_class, seed)
        has_masks = has_masks or bool(test.has_masks)
        for objective in settings["objectives"]:
            run = next(
                r
                for r in rows
                if r["objective"] == objective and str(r["class"]) == cls and int(r["seed"]) == seed
            )
            detector = Detector.load(Path(run["run_dir"]) / "model.pt")
            maps[objective] += list(figure_heatmaps(detector, test, picks, blur=settings["blur"]))
        for i in picks:
            images.append(test.raw_image(int(i)))
            masks.append(test.full_mask(int(i)) if test.has_masks else None)
            defect = (getattr(test, "defect_types", None) or [""] * len(test.labels))[int(i)]
            label = (
                f"anomalous: {defect}"
                if test.labels[int(i)] and defect
                else ("anomalous" if test.labels[int(i)] else "good")
            )
            captions.append(f"{cls}\n{label}")
    masks_or_none = (
        [m if m is not None else _zeros_like(images[k]) for k, m in enumerate(masks)] if has_masks else None
    )
    title = f"{cfg.data.dataset}, seed {seed}" + (
        " (baselines blurred for display)" if settings["blur"] else ""
    )
    return comparison_figure(
        images, maps, path, masks=masks_or_none, captions=captions, q=cfg.quantile, title=title
    )


def _zeros_like(image):
    import numpy as np

    return np.zeros(np.asarray(image).shape[:2], dtype=bool)


def _cell(entry: dict) -> str:
    if entry["mean"] is None:
        return "–"
    return f"{entry['mean']:.4f}" + (f" ± {entry['std']:.4f}" if entry["runs"] > 1 else "")


def render(summary: dict[str, Any], figure: Path) -> str:
    table = summary["table"]
    objectives = table["objectives"]
    keys = ["image_auc"] + (
        ["pixel_auc"] if any(table["mean"].get(f"{o}.pixel_auc") is not None for o in objectives) else []
    )
    header = [f"{TITLES.get(o, o).split()[0]} {k.replace('_auc', '')} AUC" for k in keys for o in objectives]
    lines = [
        f"# FCDD and its baselines on {summary['dataset']}",
        "",
        f"Objectives {', '.join(objectives)} on the same classes and seeds (mean ± std over seeds; "
        "docs/baselines.md). Pixel AUC over the raw heatmaps (HSC: input gradients, AE: squared "
        "reconstruction error, FCDD: the upsampled map).",
        "",
        "| class | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]
    for cls in table["classes"]:
        entry = table["per_class"][cls]
        lines.append(
            f"| {cls} | " + " | ".join(_cell(entry[f"{o}.{k}"]) for k in keys for o in objectives) + " |"
        )
    means = [table["mean"].get(f"{o}.{k}") for k in keys for o in objectives]
    lines.append("| **mean** | " + " | ".join("–" if m is None else f"**{m:.4f}**" for m in means) + " |")
    times = summary["seconds_per_run"]
    lines += [
        "",
        "Wall time per run (training and evaluation, s): "
        + ", ".join(
            f"{o} {'n/a (reused run folders)' if times.get(o) is None else f'{times[o]:.0f}'}"
            for o in objectives
        ),
    ]
    if summary["dataset"] in PAPER_MEANS:
        lines += ["", PAPER_MEANS[summary["dataset"]] + "."]
    lines += ["", f"![FCDD, HSC and AE heatmaps of the same test images]({figure.name})", ""]
    return "\n".join(lines)
