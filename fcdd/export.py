"""Export a Detector to ONNX, OpenVINO or TorchScript with the whole scoring inside the graph.

Graph: preprocessed batch ``input`` [B, C, H, W] (B dynamic) -> ``score`` [B], ``heatmap``
[B, 1, H, W] (net, pseudo-Huber, receptive-field Gaussian upsampling) and ``anomaly_map`` [B, 1, u, v]
(the low-resolution map A). Beside the model file, ``fcdd_export.json`` holds what the graph does
not: the preprocessing, σ, the heatmap quantile, the model's metadata (calibration included),
the fcdd version, SHA-256 of the model file(s) and a digest of the JSON itself, so an edited or
mismatched export is refused on load (an integrity check, not a signature).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcdd.errors import ExportError
from fcdd.image_scores import heatmap_maximum
from fcdd.scoring import image_score, pseudo_huber

FORMAT = "fcdd-export/1"
META_FILE = "fcdd_export.json"
FORMATS = ("onnx", "openvino", "torchscript")
MODEL_FILES = {"onnx": ["model.onnx"], "openvino": ["model.xml", "model.bin"], "torchscript": ["model.ts"]}
INPUT, OUTPUTS = "input", ("score", "heatmap", "anomaly_map")
EXTRA_HINT = "pip install 'fcdd[export]'"
OPSET = 17


def require(module: str, purpose: str):
    """Import an optional dependency of the ``export`` extra, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(
            f"{purpose} needs the package {module!r}: install the export extra ({EXTRA_HINT})"
        ) from e


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fcdd")
    except PackageNotFoundError:  # a checkout on PYTHONPATH without installation
        return "0+unknown"


class ScoringGraph(nn.Module):
    """Net, pseudo-Huber, mean and upsampling as one module: fcdd/scoring.py in its exportable form
    (no aten::hypot, which has no ONNX op)."""

    def __init__(self, model: nn.Module, upsampler: nn.Module):
        super().__init__()
        self.model, self.upsampler = model.eval(), upsampler.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # head(features(x)): the net's forward without its input check, which tracing would bake in
        a = pseudo_huber(self.model.head(self.model.features(x)), exportable=True)
        return image_score(a), self.upsampler(a), a


def scoring_graph(det) -> nn.Module:
    """The exportable graph of ``det``'s objective: FCDD's :class:`ScoringGraph`, or the
    objective's own ``export_graph(model, upsampler)`` (the autoencoder's; an objective that
    cannot be exported, HSC, raises a one-line ExportError there)."""
    own = getattr(det.objective, "export_graph", None)
    graph = (
        own(det.model.cpu(), det.upsampler.cpu())
        if own is not None
        else ScoringGraph(det.model.cpu(), det.upsampler.cpu())
    )
    return HeatmapMaximumScore(graph) if det.image_score == "max" else graph


class HeatmapMaximumScore(nn.Module):
    """A scoring graph whose image score is its heatmap's maximum: the exported form of a model
    trained with ``model.image_score: max`` (fcdd/image_scores.py), as Detector.score_tensor."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, heatmap, amap = self.graph(x)
        return heatmap_maximum(heatmap), heatmap, amap


def input_shape(det) -> tuple[int, int, int]:
    """(C, H, W) the exported graph takes; H != W where the model was trained non-square."""
    h, w = det.upsampler.input_size
    return int(det.preprocess["channels"]), int(h), int(w)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- writing
def _export_onnx(graph: ScoringGraph, example: torch.Tensor, path: Path) -> None:
    require("onnx", "ONNX export")
    # The TorchScript-based exporter: offline, fast, and a symbolic batch dimension via dynamic_axes.
    torch.onnx.export(
        graph,
        (example,),
        str(path),
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_axes={INPUT: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUTS}},
        opset_version=OPSET,
        dynamo=False,
    )


def _export_openvino(graph: ScoringGraph, example: torch.Tensor, path: Path) -> None:
    ov = require("openvino", "OpenVINO export")
    with tempfile.TemporaryDirectory(prefix="fcdd-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        _export_onnx(graph, example, onnx_path)
        # fp32 weights: save_model would otherwise compress them to fp16 and break parity.
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)


def _export_torchscript(graph: ScoringGraph, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.14 deprecates TorchScript in favour of torch.export; deployments still load it.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


WRITERS = {"onnx": _export_onnx, "openvino": _export_openvino, "torchscript": _export_torchscript}


def export_detector(det, fmt: str, out: str | Path, source: str | None = None) -> Path:
    """Write ``det`` as ``fmt`` into folder ``out``; returns the JSON's path."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    graph = scoring_graph(det).eval()  # an objective that cannot be exported says so before any file
    out.mkdir(parents=True, exist_ok=True)
    channels, h, w = input_shape(det)
    example = torch.zeros(2, channels, h, w)
    WRITERS[fmt](graph, example, out / MODEL_FILES[fmt][0])
    rf = det.model.receptive_field
    meta = {
        "format": FORMAT,
        "backend": fmt,
        "fcdd_version": package_version(),
        "torch_version": torch.__version__,
        "source": source,
        "files": {name: sha256(out / name) for name in MODEL_FILES[fmt]},
        "input": {"name": INPUT, "shape": ["batch", channels, h, w]},
        "outputs": list(OUTPUTS),
        "output_size": list(_output_size(graph, example)),
        "preprocess": _jsonable(det.preprocess),
        "sigma": float(det.upsampler.sigma),
        "receptive_field": {"r": rf.r, "j": rf.j, "s": rf.s},
        "quantile": det.meta.get("quantile"),
        "parameters": sum(p.numel() for p in det.model.parameters()),
        "meta": _jsonable(det.meta),  # every key model.pt carries (dataset, metrics, calibration, ...)
    }
    meta["digest"] = meta_digest(meta)
    path = out / META_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path)
    return path


def _output_size(graph: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(u, v) of the graph's ``anomaly_map`` (the input size for an objective without a
    low-resolution map)."""
    with torch.no_grad():
        return tuple(graph(example[:1])[2].shape[-2:])


# ---------------------------------------------------------------- reading
def find_export(ref: str | Path) -> tuple[Path, Path] | None:
    """(folder, JSON) when ``ref`` is an exported folder or a model file inside one, else None."""
    p = Path(ref)
    if p.is_dir():
        return (p, p / META_FILE) if (p / META_FILE).is_file() else None
    if p.suffix in (".onnx", ".xml", ".ts") and p.parent.joinpath(META_FILE).is_file():
        return p.parent, p.parent / META_FILE
    return None


def read_export(folder: Path, meta_path: Path | None = None) -> dict:
    """The verified JSON of an exported folder; a one-line ExportError when anything is off."""
    meta_path = meta_path or folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{meta_path}: not a readable export description ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{meta_path}: not an fcdd export (expected format {FORMAT!r})")
    if meta.get("digest") != meta_digest(meta):
        raise ExportError(
            f"{meta_path}: the file was edited after export (digest mismatch); re-export the model"
        )
    here = package_version()
    if meta.get("fcdd_version") != here:
        raise ExportError(
            f"{meta_path}: exported by fcdd {meta.get('fcdd_version')}, this is fcdd {here}; "
            "re-export the model with this version"
        )
    if meta.get("backend") not in FORMATS:
        raise ExportError(f"{meta_path}: unknown backend {meta.get('backend')!r}")
    for name, digest in meta.get("files", {}).items():
        f = folder / name
        if not f.is_file():
            raise ExportError(f"{f}: missing (listed in {META_FILE})")
        if sha256(f) != digest:
            raise ExportError(f"{f}: SHA-256 differs from {META_FILE} (file changed after export)")
    return meta
