"""What the commands share: the configuration options, argument types, model loading, metric lines."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

from fcdd import plugins
from fcdd.config import ConfigError, load_config
from fcdd.errors import UsageError

# The URIs the pipelines extra's plugin reads: named when that plugin is not installed.
PLUGIN_MODEL_SCHEMES = ("models:/", "runs:/")
PLUGIN_EXTRA = "pip install fcdd[pipelines]"
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


class CLIError(UsageError):
    """A user error: printed as one line, exit status 2."""


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="configuration file (default: params.yaml)")
    p.add_argument("--preset", nargs="+", help="presets of params.yaml to apply instead of its `preset` key")
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a setting, e.g. -o train.epochs=3 (repeatable; the value is YAML)",
    )


def params_path(args) -> str | None:
    """--params; the default params.yaml only when it exists (else the built-in defaults)."""
    return args.params if Path(args.params).is_file() or args.params != "params.yaml" else None


def config_from_args(args, extra: list[str] = ()):
    return load_config(params_path(args), [*args.override, *extra], preset=args.preset)


def add_tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow store for models:/ URIs (default: $MLFLOW_TRACKING_URI, else tracking.uri of ./params.yaml)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def fmt_metrics(m: dict) -> str:
    parts = []
    for key in ("image_auc", "pixel_auc", "aupro"):
        v = m.get(key)
        if isinstance(v, dict):
            v = v.get("mean")
        if v is not None and v == v:
            parts.append(f"{key} {v:.4f}")
    return ", ".join(parts) or "no metrics"


def load_model(ref: str, device: str, tracking_uri: str | None = None, exported: bool = True) -> Any:
    """A model.pt file, an exported folder (when ``exported``) or a URI a plugin reads (models:/...)."""
    from fcdd.detector import Detector
    from fcdd.engine import resolve_device
    from fcdd.export import find_export

    if find_export(ref) is not None:
        if not exported:
            raise CLIError(f"{ref}: an exported model; this command needs the model.pt it was exported from")
        if device not in ("auto", "cpu"):
            raise CLIError(f"--device {device}: exported models run on the CPU (onnxruntime, OpenVINO)")
        from fcdd.backends import ExportedDetector

        return ExportedDetector.load(ref)
    if Path(ref).suffix in (".onnx", ".xml", ".ts"):
        raise CLIError(f"{ref}: no fcdd_export.json beside it (export with `fcdd export`)")
    dev = resolve_device(device)
    if URI.match(ref) and not Path(ref).exists():  # models:/NAME@alias and the like: a plugin's
        loader = _plugin_loader(ref)
        if loader is not None:
            return loader(ref, dev, tracking_uri)
    return Detector.load(ref, device=dev)


def _plugin_loader(ref: str):
    """The plugin that reads ``ref``; for this project's own URIs a one-line error without it."""
    try:
        loader = plugins.model_loader(ref)
        reason = "no installed plugin reads these URIs"
    except plugins.PluginMissing as e:
        loader, reason = None, e.reason
    if loader is None and ref.startswith(PLUGIN_MODEL_SCHEMES):
        raise CLIError(f"{ref}: loading MLflow models needs the pipelines extra ({PLUGIN_EXTRA}): {reason}")
    return loader


def check_device(name: str) -> str:
    """--device checked before the model loads: one line for a missing CUDA or a bad name."""
    from fcdd.engine import resolve_device

    try:
        resolve_device(name)
        return name  # "auto" stays "auto": an exported model then runs on the CPU
    except ConfigError as e:
        raise CLIError(f"--device {str(e).split(': ', 1)[1]}") from e
