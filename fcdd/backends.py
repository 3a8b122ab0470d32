"""Exported models as scorers: the Detector's preprocessing and scoring loop, with a backend
(onnxruntime, OpenVINO or TorchScript) mapping a preprocessed batch to (scores, maps, heatmaps)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fcdd.data.transforms import test_transform
from fcdd.detector import DetectorOutput, ImageLike, score_images
from fcdd.export import INPUT, MODEL_FILES, OUTPUTS, ExportError, find_export, read_export, require

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # score [B], heatmap [B,1,H,W], anomaly_map [B,1,u,v]


def onnx_backend(path: Path, threads: int | None = None) -> Callable[[np.ndarray], Batch]:
    ort = require("onnxruntime", "Scoring an ONNX model")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: tuple(session.run(list(OUTPUTS), {INPUT: x}))


def openvino_backend(path: Path, threads: int | None = None) -> Callable[[np.ndarray], Batch]:
    ov = require("openvino", "Scoring an OpenVINO model")
    # f32: on CPUs with bf16 units OpenVINO would otherwise infer in bf16 (~1e-2 off PyTorch).
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    outputs = [compiled.output(name) for name in OUTPUTS]

    def run(x: np.ndarray) -> Batch:
        result = request.infer({INPUT: x})
        return tuple(np.array(result[o]) for o in outputs)

    return run


def torchscript_backend(path: Path, threads: int | None = None) -> Callable[[np.ndarray], Batch]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.14
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> Batch:
        with torch.no_grad():
            return tuple(t.numpy() for t in module(torch.from_numpy(x)))

    return run


BACKENDS = {"onnx": onnx_backend, "openvino": openvino_backend, "torchscript": torchscript_backend}


class ExportedDetector:
    """Scores images like fcdd.detector.Detector, from an exported folder, without the net's code."""

    def __init__(self, folder: Path, export: dict, threads: int | None = None):
        self.folder, self.export = folder, export
        self.preprocess = export["preprocess"]
        self.meta = dict(export["meta"])
        self.backend_name = export["backend"]
        self.run = BACKENDS[self.backend_name](folder / MODEL_FILES[self.backend_name][0], threads)
        self._transform = test_transform(self.preprocess)

    @classmethod
    def load(cls, ref: str | Path, threads: int | None = None) -> ExportedDetector:
        found = find_export(ref)
        if found is None:
            raise ExportError(f"{ref}: not an exported fcdd model (no fcdd_export.json beside it)")
        folder, meta_path = found
        if not Path(ref).exists():  # model.onnx named but absent: never another file of the folder
            raise ExportError(f"{ref}: no such file (the folder {folder} holds an export)")
        export = read_export(folder, meta_path)
        if Path(ref).is_file() and Path(ref).name != MODEL_FILES[export["backend"]][0]:
            raise ExportError(f"{ref}: the export in {folder} is {MODEL_FILES[export['backend']][0]}")
        return cls(folder, export, threads)

    def score_batch(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Preprocessed batch -> (scores (n,), low-res maps A (n,u,v), upsampled maps (n,H,W))."""
        score, heatmap, amap = self.run(np.ascontiguousarray(x.numpy(), dtype=np.float32))
        return score, amap[:, 0], heatmap[:, 0]

    def score(
        self, images: Sequence[ImageLike], batch_size: int = 32, full_size: bool = True
    ) -> DetectorOutput:
        return score_images(
            self._transform,
            self.score_batch,
            tuple(self.export["output_size"]),
            images,
            batch_size,
            full_size,
        )
