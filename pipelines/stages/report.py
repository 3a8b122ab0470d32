"""DVC stage `report`: outputs/report.md, a markdown summary of the evaluation with its figures."""

from __future__ import annotations

import os

from fcdd.cli.messages import one_line_warnings
from fcdd.data.datasets.fmnist import FMNIST_CLASSES
from fcdd.data.training_set import slug
from pipelines.stages.common import EVAL_SUMMARY, HEATMAP_GRIDS, REPORT, read_json

# The paper's Fashion-MNIST image AUCs (PAPER-RESULTS.md; full protocol, 5 seeds), by class index.
PAPER_FMNIST = [0.82, 0.98, 0.84, 0.92, 0.87, 0.90, 0.75, 0.99, 0.86, 0.94]
CONFIG_KEYS = (
    "preset", "model.net", "train.epochs", "train.seeds", "train.optimizer", "train.lr",
    "anomalies.kind", "anomalies.oe_limit", "data.train_limit", "data.test_limit",
)  # fmt: skip


def paper_auc(dataset: str, cls: str) -> float | None:
    """The paper's figure for a Fashion-MNIST class given by index, name or slug ('t-shirt-top')."""
    if dataset != "fmnist":
        return None
    key = slug(cls)
    if key.isdigit() and int(key) < len(PAPER_FMNIST):
        return PAPER_FMNIST[int(key)]
    names = [slug(n) for n in FMNIST_CLASSES]
    return PAPER_FMNIST[names.index(key)] if key in names else None


def fmt(mean, std=None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std else "")


def render(summary: dict) -> str:
    dataset = summary["dataset"]
    metrics = summary["metrics"]
    config = summary.get("config", {})
    lines = [f"# FCDD on {dataset}", ""]
    lines += [f"- `{k}`: {config.get(k)}" for k in CONFIG_KEYS if k in config]
    lines += [f"- heatmap quantile q: {summary.get('quantile')}", ""]
    lines += [
        "| class | image AUC | pixel AUC | AUPRO | runs | paper image AUC |",
        "|---|---|---|---|---|---|",
    ]
    for cls, e in metrics["per_class"].items():
        cells = [
            cls,
            fmt(e.get("image_auc"), e.get("image_auc_std")),
            fmt(e.get("pixel_auc"), e.get("pixel_auc_std")),
            fmt(e.get("aupro"), e.get("aupro_std")),
            e.get("runs", ""),
            fmt(paper_auc(dataset, cls)),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    mean = metrics["mean"]
    lines.append(
        f"| **mean** | **{fmt(mean.get('image_auc'))}** | {fmt(mean.get('pixel_auc'))} | "
        f"{fmt(mean.get('aupro'))} | | |"
    )
    notes = [f"- {cls}: {e['pixel_note']}" for cls, e in metrics["per_class"].items() if e.get("pixel_note")]
    lines += ["", "Pixel metrics:", *notes] if notes else []
    lines += decision_table(summary.get("rows", []))
    lines += ["", "Per-class AUC bars and ROC curves: `dvc plots show` (dvc_plots/index.html).", ""]
    for name in summary.get("figures", []):  # one heatmap grid per class
        rel = os.path.relpath(HEATMAP_GRIDS / name, REPORT.parent)
        lines += [f"![{os.path.splitext(name)[0]}]({rel})", ""]
    return "\n".join(lines)


def decision_table(rows: list[dict]) -> list[str]:
    """Calibrated decisions per run: target alpha vs realized false-alarm rate (fcdd/calibration.py)."""
    rows = [r for r in rows if r.get("calibration_n")]
    if not rows:
        return ["", "No calibrated decisions: the runs were trained without `evaluation.calibration`."]
    out = [
        "",
        "## Calibrated decisions (split-conformal, target alpha 0.05)",
        "",
        "False-alarm rate (FAR) on the test set's good images with its 95 % Clopper-Pearson interval, "
        "and the 95 % range a calibrated model's FAR falls in under exchangeability (calibration and "
        "test draws both counted); the oracle F1 picks its threshold with the test labels "
        "(not available in practice).",
        "",
        "| class | seed | calibration n | target alpha | realized FAR [95 % CI] | expected range | detection rate | F1 | "
        "oracle F1 | mask IoU | oracle mask IoU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        far = (
            f"{r['a0.05_far']:.4f} [{r['a0.05_far_ci_low']:.4f}, {r['a0.05_far_ci_high']:.4f}]"
            if r.get("a0.05_far") is not None
            else "–"
        )
        expected = (
            f"[{r['a0.05_far_expected_low']:.4f}, {r['a0.05_far_expected_high']:.4f}]"
            if r.get("a0.05_far_expected_low") is not None
            else "–"
        )
        cells = [
            r["class"], r["seed"], r["calibration_n"], "0.05", far, expected, fmt(r.get("a0.05_detection_rate")),
            fmt(r.get("a0.05_f1")), fmt(r.get("oracle_f1")), fmt(r.get("a0.05_mask_iou")),
            fmt(r.get("oracle_mask_iou")),
        ]  # fmt: skip
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out


def main() -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(render(read_json(EVAL_SUMMARY)))
    print(f"report: wrote {REPORT}")


if __name__ == "__main__":
    with one_line_warnings("report"):
        main()
