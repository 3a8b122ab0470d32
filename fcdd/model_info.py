"""What a model holds, as ``fcdd info`` prints it: a Detector (model.pt, models:/...) or an
exported folder (what its fcdd_export.json says)."""

from __future__ import annotations

from typing import Any

from fcdd import calibration as conformal
from fcdd.image_scores import model_image_score
from fcdd.objectives import objective_name


def model_info(det: Any) -> dict[str, Any]:
    """Objective, network, data, receptive field, sigma, preprocessing, parameters, metrics and
    calibration."""
    info = exported_info(det) if hasattr(det, "export") else detector_info(det)
    return info | {"calibration": conformal.summary(det.meta.get("calibration"))}


def detector_info(det: Any) -> dict[str, Any]:
    m = det.meta
    rf = det.model.receptive_field
    return {
        "dataset": m.get("dataset"),
        "class": m.get("class"),
        "seed": m.get("seed"),
        "objective": objective_name(m),  # fcdd, or a baseline (docs/baselines.md)
        "image_score": model_image_score(m),  # mean of the map, or the heatmap maximum
        "net": m.get("net", {}).get("net"),
        "input_size": m.get("input_size"),
        "receptive_field": {"r": rf.r, "j": rf.j, "s": rf.s},
        "sigma": float(det.upsampler.sigma),
        "heatmap_quantile": m.get("quantile"),
        "preprocess": det.preprocess,
        "parameters": sum(p.numel() for p in det.model.parameters()),
        "metrics": m.get("metrics", {}),
    }


def exported_info(det: Any) -> dict[str, Any]:
    e, m = det.export, det.meta
    return {
        "export": {"backend": e["backend"], "folder": str(det.folder), "fcdd_version": e["fcdd_version"]},
        "files": e["files"],
        "source": e.get("source"),
        "dataset": m.get("dataset"),
        "class": m.get("class"),
        "seed": m.get("seed"),
        "objective": objective_name(m),
        "image_score": model_image_score(m),
        "net": m.get("net", {}).get("net"),
        "input": e["input"],
        "receptive_field": e["receptive_field"],
        "sigma": e["sigma"],
        "heatmap_quantile": m.get("quantile"),
        "preprocess": det.preprocess,
        "parameters": e.get("parameters"),
        "metrics": m.get("metrics", {}),
    }
