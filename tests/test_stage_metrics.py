"""metrics.json stays one short row in `dvc metrics show`; the detail goes to a second file."""

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


def test_compact_metrics_hold_the_class_image_aucs_and_the_means_only():
    classes = [f"class{i}" for i in range(10)]
    detail = top_metrics("fmnist", aggregate(_rows(classes, None), keys=METRIC_KEYS))
    compact = compact_metrics(detail)
    assert set(compact) == {"dataset", "mean", "image_auc"}
    assert compact["mean"] == {"image_auc": detail["mean"]["image_auc"]}  # no masks: no pixel AUC
    assert compact["image_auc"] == {c: detail["per_class"][c]["image_auc"] for c in classes}
    columns = len(compact["mean"]) + len(compact["image_auc"])
    assert columns == 11  # 10 classes + the mean; the detail file holds aupr, std, runs


def test_compact_metrics_keep_the_pixel_means_where_masks_exist():
    detail = top_metrics("mvtec", aggregate(_rows(["grid"], 0.8), keys=METRIC_KEYS))
    assert set(compact_metrics(detail)["mean"]) == {"image_auc", "pixel_auc", "aupro"}


def test_partial_or_absent_masks_are_stated_in_metrics_detail_and_the_report():
    rows = _rows(["grid", "tyre"], 0.8)
    note = "pixel metrics over the 5 of 6 test images with ground truth: 1 of 3 anomalous images have no mask"
    for row in rows:
        row["pixel_note"] = note if row["class"] == "tyre" else None
    detail = with_pixel_notes(top_metrics("mvtec", aggregate(rows, keys=METRIC_KEYS)), rows)
    assert (
        detail["per_class"]["tyre"]["pixel_note"] == note and "pixel_note" not in detail["per_class"]["grid"]
    )
    assert compact_metrics(detail)["mean"]["pixel_auc"] == 0.8  # the compact file stays numbers only
    text = report_stage.render({"dataset": "mvtec", "quantile": 0.99, "metrics": detail, "config": {}})
    assert f"- tyre: {note}" in text and "- grid:" not in text
