"""A trained model evaluated again on its own test split, from any folder: ``fcdd evaluate``.

The split (dataset, root, folder spec, limits, semi-supervised split) is rebuilt from the
configuration the model stores; a params file, presets and overrides apply only when given.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from fcdd.config import Config, load_config
from fcdd.data import build_datasets
from fcdd.experiment import evaluate
from fcdd.stored_config import config_from_model


def model_config(
    meta: dict[str, Any],
    ref: str,
    params: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: list[str] | None = None,
    root: str | None = None,
) -> Config:
    """The configuration the model was trained with (``root`` replaces its data.root); for a
    model.pt of an older version, which stores none, the params file with the model's dataset and net."""
    extra = [f"data.root={json.dumps(root)}"] if root else []
    if "config" in meta:  # the split the model was trained with, from any folder
        return config_from_model(meta, ref, params, [*overrides, *extra], preset)
    params = params or "params.yaml"
    extra.append(f"data.dataset={meta['dataset']}")
    extra += [
        f"model.{k}={json.dumps(v)}"
        for k, v in meta["net"].items()
        if k not in ("pretrained", "weights_path")
    ]
    path = params if Path(params).is_file() or params != "params.yaml" else None
    return load_config(path, [*overrides, *extra], preset=preset)


def evaluate_model(detector: Any, cfg: Config, out: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Score the model's test split: metrics.json, scores.csv, ROC curves and figures in ``out``."""
    meta = detector.meta
    # The test split does not depend on the OE pool: do not load it (nor need its path) to evaluate.
    data_cfg = cfg
    if cfg.anomalies.kind == "oe":
        data_cfg = dataclasses.replace(cfg, anomalies=dataclasses.replace(cfg.anomalies, kind="none"))
    data = build_datasets(data_cfg, meta["class"], int(meta.get("seed", 0)))
    metrics, artifacts = evaluate(detector, data.test, cfg, out, title=f"{meta['dataset']} · {meta['class']}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, artifacts
