"""``fcdd init``: a params file for a user's own data holding only what they chose.

Copying the project's params.yaml is a trap: its sections configure the main job (``train.epochs: 3``,
``evaluation.quantile: null``) and beat any preset the user names. The file written here has the
chosen presets (their definitions copied in, so the file is complete and stays reproducible when
the project's presets change), the data section, and every other setting as a comment.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml

from fcdd.config import ConfigError, load_config
from fcdd.data.datasets import dataset_names, dataset_spec

HINTS = """\
# Every other setting comes from the presets above, else from the defaults in fcdd/config/sections.py.
# `fcdd config --params {out} --explain` prints each value and where it came from.
# Add only what you mean to change, e.g.:
# train:
#   epochs: 10            # beats the presets' epochs
#   device: cuda
# evaluation:
#   quantile: 0.97        # heatmap normalisation q (the folder preset: 0.99)
# data:
#   train_limit: 200      # a seeded subset of the nominal training images (kept paths: run folder)
#   resize: keep_aspect   # model.input_size is the short side; the long side keeps the images' aspect
# model:
#   input_size: [224, 560]  # [H, W] for elongated images (an integer: square)
# tracking:
#   enabled: true         # `fcdd train` logs to MLflow and registers the model
"""


def default_presets(dataset: str, cpu: bool) -> list[str]:
    """The preset of the dataset's name; on a CPU also the dataset's reduced profile (its cpu_preset)."""
    profile = dataset_spec(dataset).cpu_preset if dataset in dataset_names() else None
    return [dataset, profile] if cpu and profile else [dataset]


def init_params(
    dataset: str,
    root: str,
    presets: list[str],
    source: str | Path,
    out: str | Path,
    classes: list[str] | None = None,
    folder: dict[str, Any] | None = None,
    tracking: bool | None = None,
) -> str:
    """The YAML text of a new params file; checked by loading it before it is returned."""
    if dataset not in dataset_names():
        raise ConfigError(f"--dataset: {dataset!r} is not one of {', '.join(dataset_names())}")
    if not Path(root).exists():
        raise ConfigError(f"--root {root}: no such folder or file")
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"{source}: no such file to read the preset definitions from (give --presets-from)")
    defined = (yaml.safe_load(source.read_text()) or {}).get("presets") or {}
    unknown = [p for p in presets if p not in defined]
    if unknown:
        raise ConfigError(
            f"--preset {unknown[0]}: not defined in {source}; known presets: {', '.join(sorted(defined))}"
        )
    data: dict[str, Any] = {"dataset": dataset, "root": str(root)}
    if classes:
        data["classes"] = list(classes)
    folder = {k: v for k, v in (folder or {}).items() if v not in (None, [], "")}
    if folder:
        if dataset != "folder":
            raise ConfigError(f"--nominal/--anomalous/--masks describe a folder dataset, not {dataset!r}")
        data["folder"] = folder
    doc: dict[str, Any] = {"preset": list(presets), "data": data}
    if tracking is not None:
        doc["tracking"] = {"enabled": tracking}
    head = "# Written by `fcdd init`: your data and the presets you chose; nothing else is set here.\n"
    body = _dump(doc)
    chosen = {p: copy.deepcopy(defined[p]) for p in presets}
    tail = f"\n# The chosen presets' definitions, copied from {source}.\n" + _dump({"presets": chosen})
    text = head + body + "\n" + HINTS.format(out=out) + tail
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "params.yaml"
        check.write_text(text)
        load_config(check)  # the file must load as written
    return text


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)
