"""``fcdd init``: a params file for a user's own data holding only what they chose.

Copying the project's params.yaml is a trap: its sections configure the pipeline's Fashion-MNIST run
(``train.epochs: 3``, ``evaluation.quantile: null``) and beat any preset the user names. The file
written here has the chosen presets (their definitions copied in, so the file is complete and stays
reproducible when fcdd's presets change), the data section, and every other setting as a comment.

For a folder of one's own images it looks at the nominal images first: images that are not square
get ``data.resize: keep_aspect`` (model.input_size becomes the short side), so a strip 1250 pixels
tall and 500 wide is not squeezed into a square; sizes are written height x width (H×W) throughout.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fcdd.config import ConfigError, load_config, packaged_presets, preset_definitions
from fcdd.data.datasets import dataset_names, dataset_spec
from fcdd.data.geometry import ASPECT_TOLERANCE, keep_aspect_hw, size_hw

SIZE_SAMPLE = 500  # nominal images whose headers are read to choose the input geometry
RESIZE_CHOICES = ("auto", "fixed", "keep_aspect")

HINTS = """\
# Every other setting comes from the presets below, else from fcdd's defaults.
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
#   input_size: [560, 224]  # [H, W]: 560 tall, 224 wide, e.g. for strips 1250 tall and 500 wide
# tracking:
#   enabled: true         # `fcdd train` logs to MLflow and registers the model
"""


@dataclass
class InitParams:
    """The text of the params file and what ``fcdd init`` chose for the user, one line each."""

    text: str
    notes: list[str] = field(default_factory=list)


def default_presets(dataset: str, cpu: bool) -> list[str]:
    """The preset of the dataset's name; on a CPU also the dataset's reduced profile (its cpu_preset)."""
    profile = dataset_spec(dataset).cpu_preset if dataset in dataset_names() else None
    return [dataset, profile] if cpu and profile else [dataset]


def init_params(
    dataset: str,
    root: str,
    presets: list[str],
    source: str | Path | None = None,
    out: str | Path = "params.yaml",
    classes: list[str] | None = None,
    folder: dict[str, Any] | None = None,
    tracking: bool | None = None,
    resize: str = "auto",
) -> InitParams:
    """A new params file, checked by loading it. ``source``: a params file whose ``presets:`` section
    replaces fcdd's presets of the same names (None: fcdd's own). ``resize``: ``auto`` looks at the
    nominal images of a folder dataset and picks ``keep_aspect`` for images that are not square."""
    if dataset not in dataset_names():
        raise ConfigError(f"--dataset: {dataset!r} is not one of {', '.join(dataset_names())}")
    if not Path(root).exists():
        raise ConfigError(f"--root {root}: no such folder or file")
    if resize not in RESIZE_CHOICES:
        raise ConfigError(f"--resize: {resize!r} is not one of {', '.join(RESIZE_CHOICES)}")
    if source is not None and not Path(source).is_file():
        raise ConfigError(f"--presets-from {source}: no such file")
    defined = preset_definitions(source)
    unknown = [p for p in presets if p not in defined]
    if unknown:
        where = f"fcdd's presets or {source}" if source is not None else "fcdd's presets"
        raise ConfigError(
            f"--preset {unknown[0]}: not one of {where}; known presets: {', '.join(sorted(defined))}"
        )
    data: dict[str, Any] = {"dataset": dataset, "root": str(root)}
    if classes:
        data["classes"] = list(classes)
    folder = {k: v for k, v in (folder or {}).items() if v not in (None, [], "")}
    if folder:
        if dataset != "folder":
            raise ConfigError(f"--nominal/--anomalous/--masks describe a folder dataset, not {dataset!r}")
        data["folder"] = folder
        _check_folder_entries(Path(root), folder)
    doc: dict[str, Any] = {"preset": list(presets), "data": data}
    chosen = {p: copy.deepcopy(defined[p]) for p in presets}
    notes: list[str] = []
    if resize != "auto":
        data["resize"] = resize
    elif dataset == "folder" and folder.get("nominal"):
        notes += _choose_resize(data, _load(doc, chosen))
    if tracking is None and importlib.util.find_spec("mlflow") is None:
        tracking = False
        notes.append("tracking.enabled: false, as MLflow is not installed (pip install 'fcdd[pipelines]')")
    if tracking is not None:
        doc["tracking"] = {"enabled": tracking}
    shipped = packaged_presets()
    own = [p for p in presets if shipped.get(p) != defined[p]]
    copied = " and ".join(
        ([f"{source}: {', '.join(own)}"] if own else [])
        + (["fcdd's presets"] if len(own) < len(presets) else [])
    )
    text = (
        "# Written by `fcdd init`: your data and the presets you chose; nothing else is set here.\n"
        + "".join(f"# {note}\n" for note in notes)
        + _dump(doc)
        + "\n"
        + HINTS.format(out=out)
        + f"\n# The chosen presets' definitions, copied from {copied}.\n"
        + _dump({"presets": chosen})
    )
    _load_text(text)  # the file must load as written
    return InitParams(text, notes)


def _choose_resize(data: dict[str, Any], cfg: Any) -> list[str]:
    """``data.resize: keep_aspect`` (set in ``data``) where the nominal images are not square."""
    from fcdd.data.datasets.folder import nominal_images
    from fcdd.data.image_io import image_size

    files = nominal_images(cfg)
    sample = files[:: max(1, len(files) // SIZE_SAMPLE)][:SIZE_SAMPLE]
    sizes = [image_size(f) for f in sample]
    h = round(statistics.median(s[0] for s in sizes))
    w = round(statistics.median(s[1] for s in sizes))
    aspect = statistics.median(s[1] / s[0] for s in sizes)
    seen = f"the nominal images are {h}x{w} (H×W, median of {len(sizes)})"
    if abs(aspect - 1.0) <= ASPECT_TOLERANCE:
        return []
    if isinstance(cfg.model.input_size, list):
        in_h, in_w = size_hw(cfg.model.input_size)
        if (in_h > in_w) != (aspect < 1):
            return [f"check model.input_size {[in_h, in_w]} (H×W): {seen}, the other orientation"]
        return []
    data["resize"] = "keep_aspect"
    in_h, in_w = keep_aspect_hw(int(cfg.model.input_size), sizes)
    return [f"data.resize: keep_aspect, as {seen}: the net sees {in_h}x{in_w} (H×W), not a square"]


def _load(doc: dict[str, Any], presets: dict[str, Any]) -> Any:
    return _load_text(_dump({**doc, "presets": presets}))


def _load_text(text: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "params.yaml"
        check.write_text(text)
        return load_config(check)


def _check_folder_entries(root: Path, folder: dict[str, Any]) -> None:
    """Every --nominal/--anomalous/--masks folder or pattern names something under --root."""
    for what in ("nominal", "anomalous", "masks"):
        for entry in folder.get(what) or []:
            if not glob.glob(str(root / entry), recursive=True):
                raise ConfigError(f"--{what} {entry}: no such folder or file under --root {root}")


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
