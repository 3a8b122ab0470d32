"""metrics.json stays one short row in `dvc metrics show`; the detail goes to a second file, not
declared as metrics."""

from __future__ import annotations

from fcdd.metrics import aggregate
from pipelines.stages import report as report_stage
from pipelines.stages.evaluate import METRIC_KEYS, compact_metrics, top_metrics, with_pixel_notes


def _rows(classes, pixel):
    rows = []
    for i, cls in enumerate(classes):
        for seed in (0, 1):
            auc = 0.5 + 0.04 * i + 0.01 * seed
            rows.append(
                {
                    "class": cls,
                    "seed": seed,
                    "image_auc": auc,
                    "image_aupr": auc,
                    "pixel_auc": pixel,
                    "aupro": pixel,
                }
            )
    return rows


def test_compact_metrics_fit_a_terminal_whatever_the_number_of_classes():
    classes = [f"class{i}" for i in range(15)]
    detail = top_metrics("fmnist", aggregate(_rows(classes, None), keys=METRIC_KEYS))
    compact = compact_metrics(detail)
    assert compact == {
        "dataset": "fmnist",
        "classes": 15,
        "image_auc": detail["mean"]["image_auc"],  # no masks: no pixel AUC
        "min_image_auc": detail["per_class"]["class0"]["image_auc"],
        "weakest_class": "class0",
    }
    # as `dvc metrics show` prints it: a header of the keys and a row of the values
    width = sum(
        max(len(k), len(f"{v:.5g}" if isinstance(v, float) else str(v))) + 4 for k, v in compact.items()
    )
    assert width + len("metrics.json") < 100


def test_compact_metrics_keep_the_pixel_means_where_masks_exist():
    detail = top_metrics("mvtec", aggregate(_rows(["grid"], 0.8), keys=METRIC_KEYS))
    compact = compact_metrics(detail)
    assert {"image_auc", "pixel_auc", "aupro"} <= set(compact) and compact["weakest_class"] == "grid"


def test_partial_or_absent_masks_are_stated_in_metrics_detail_and_the_report():
    rows = _rows(["grid", "tyre"], 0.8)
    note = "pixel metrics over the 5 of 6 test images with ground truth: 1 of 3 anomalous images have no mask"
    for row in rows:
        row["pixel_note"] = note if row["class"] == "tyre" else None
    detail = with_pixel_notes(top_metrics("mvtec", aggregate(rows, keys=METRIC_KEYS)), rows)
    assert (
        detail["per_class"]["tyre"]["pixel_note"] == note and "pixel_note" not in detail["per_class"]["grid"]
    )
    assert compact_metrics(detail)["pixel_auc"] == 0.8  # the compact file stays numbers only
    text = report_stage.render({"dataset": "mvtec", "quantile": 0.99, "metrics": detail, "config": {}})
    assert f"- tyre: {note}" in text and "- grid:" not in text


def test_dvc_exp_show_params_hold_no_presets_blob():
    """`dvc exp show` shows every key of params.yaml as a column: the presets ship with the package,
    so params.yaml's own `presets:` is empty and its columns fit on a screen (292 before)."""
    from pathlib import Path

    import yaml

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            elif not isinstance(v, dict):
                yield f"{prefix}{k}"

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    columns = list(flat(params))
    assert not [c for c in columns if c.startswith("presets")], columns
    assert len(columns) <= 30, columns
