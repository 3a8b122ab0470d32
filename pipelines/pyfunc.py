"""The MLflow pyfunc around :class:`fcdd.detector.Detector`, logged as "models from code".

Nothing is cloudpickled: the model is ``pipelines/mlflow_model_code.py`` (which calls
``mlflow.models.set_model``) plus the Detector file as the artifact ``detector`` (a state dict and
plain metadata, read with ``torch.load(weights_only=True)``; it holds the preprocessing and the
normalisation constants) plus the ``fcdd`` package and this file as ``code_paths``.

Request (HTTP ``POST /invocations``, JSON)::

    {"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG/JPEG bytes>"], ...]},
     "params": {"heatmap_format": "npy"}}

``image`` holds base64-encoded image file bytes (see :func:`encode_image`) or, outside the scoring
server (or with ``FCDD_ALLOW_PATHS=1``), a local file path. In Python, ``predict`` of the
unwrapped model also takes numpy arrays (h, w[, c]) / (n, h, w[, c]).

Response: one row per image: ``score`` (float, the image anomaly score), ``height``, ``width``
and ``heatmap``: with ``heatmap_format`` ``npy`` (default) the base64 of a ``.npy`` float32 array
(height, width) (see :func:`decode_heatmap`), with ``list`` nested lists, with ``none`` omitted.
With a calibrated model (``evaluation.calibration``) each row also has ``p_value``,
``normalised_score`` (1 - p_value, in [0, 1)) and ``anomalous`` (p_value <= ``alpha``, a request
param, default 0.01); with ``mask_format`` ``png`` (base64 PNG, 0/255) or ``rle`` (row-major run
lengths starting with background, see :func:`fcdd.calibration.rle_decode`) a ``mask`` column holds
the calibrated defect mask at the image's resolution for anomalous images (empty otherwise; never
empty for an anomalous one: ``mask_note`` says how it was cut where no pixel passes the calibrated
pixel threshold, docs/calibration.md). A ``note`` column appears where alpha is below 1/(n+1) or so
few images calibrated the model that its false-alarm rate can be twice alpha or more.
Inputs that are not images, or larger than ``max_pixels`` (model config; ``FCDD_MAX_PIXELS``
overrides when serving), raise ``MlflowException(INVALID_PARAMETER_VALUE)``: HTTP 400. So does a
request whose images hold more than ``max_request_pixels`` pixels in all (model config;
``FCDD_MAX_REQUEST_PIXELS`` overrides; ``heatmap_format: list`` gets 1/LIST_COST of it), checked from
the image headers before anything is decoded (MLflow's scoring server maps no error code to 413).
Within the budget, images are decoded, scored and encoded in chunks of at most CHUNK_PIXELS.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from PIL import Image

INPUT_COLUMN = "image"
DETECTOR_ARTIFACT = "detector"
ONNX_ARTIFACT = "onnx"  # the fcdd export folder (model.onnx + fcdd_export.json), when logged
HEATMAP_FORMATS = ("npy", "list", "none")
MASK_FORMATS = ("none", "png", "rle")
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_IMAGES_PER_REQUEST = 256
# Total pixels per request. Measured (benchmarks/bench_serve_memory.py, docs/benchmarks.md): ~11 MB
# peak per megapixel for the response (npy heatmaps, JSON) plus about as much for the request's own
# base64 PNGs, over a constant ~0.2 GB of network activations: 50 MP stays within 2 GB.
DEFAULT_MAX_REQUEST_PIXELS = 50_000_000
CHUNK_PIXELS = 4_000_000  # images decoded and scored together, at most (a larger image goes alone)
SCORE_BATCH = 8  # images per network call: bounds the activations (VGG11-BN at 224 px: ~25 MB/image)
LIST_COST = 7  # heatmap_format "list" (JSON floats) costs this many times "npy" per pixel (measured 6.3)


class RequestError(MlflowException):
    """HTTP 400 with our one-line message: MLflow's scoring server prefixes every error message with
    "Failed to predict data '<a repr of the whole request>'. \nError: ", which this keeps out."""

    message = property(
        lambda self: self._text, lambda self, v: setattr(self, "_text", str(v).split("\nError: ")[-1])
    )


def _invalid(message: str) -> MlflowException:
    return RequestError(message, error_code=INVALID_PARAMETER_VALUE)


# ---------------------------------------------------------------- client helpers
def encode_image(image: np.ndarray | Image.Image | str | Path) -> str:
    """An image (array, PIL image or file) as base64 text for the ``image`` column."""
    if isinstance(image, (str, Path)):
        return base64.b64encode(Path(image).read_bytes()).decode("ascii")
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def images_frame(images: Sequence[np.ndarray | Image.Image | str | Path]) -> pd.DataFrame:
    return pd.DataFrame({INPUT_COLUMN: [encode_image(im) for im in images]})


def encode_heatmap(heatmap: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(heatmap, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_heatmap(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


# ---------------------------------------------------------------- input decoding
def _serving() -> bool:
    return os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"


def prepare_image(value: Any, max_pixels: int, row: int) -> tuple[bytes | np.ndarray, int, str]:
    """One ``image`` cell (base64 text, path, bytes or array) -> (undecoded bytes or the array,
    its pixel count from the header, a name for errors); 400-style errors. Nothing is decoded yet:
    the request's pixel budget is checked first."""
    if isinstance(value, np.ndarray):
        if value.ndim < 2 or value.shape[0] * value.shape[1] > max_pixels:
            raise _invalid(
                f"row {row}: image array of shape {value.shape} is not an image within {max_pixels} pixels"
            )
        return value, int(value.shape[0] * value.shape[1]), f"row {row}"
    where = f"row {row}"
    if isinstance(value, str):
        if "." in value:  # never in base64 text; a path has a file suffix
            value, where = _read_path(value, row), value
        else:
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as e:
                raise _invalid(
                    f"row {row}: '{INPUT_COLUMN}' is neither base64 image bytes nor a file path"
                ) from e
    if not isinstance(value, (bytes, bytearray)):
        raise _invalid(f"row {row}: '{INPUT_COLUMN}' must be base64 text, got {type(value).__name__}")
    from fcdd.data.image_io import image_size
    from fcdd.errors import DataError

    try:
        h, w = image_size(io.BytesIO(value), where)  # the header only; fcdd's one image rule
    except DataError as e:
        raise _invalid(str(e)) from e
    pixels, size = h * w, f"{w}x{h}"
    if pixels > max_pixels:
        raise _invalid(f"{where}: image of {size} pixels exceeds the limit of {max_pixels} pixels")
    return bytes(value), pixels, where


def decode_image(value: Any, max_pixels: int, row: int) -> Image.Image | np.ndarray:
    """One ``image`` cell -> an image (arrays as they are); 400-style errors."""
    data, _, where = prepare_image(value, max_pixels, row)
    return data if isinstance(data, np.ndarray) else _open_bytes(io.BytesIO(data), max_pixels, where)


def _read_path(value: str, row: int) -> bytes:
    if _serving() and os.environ.get("FCDD_ALLOW_PATHS") != "1":
        raise _invalid(
            f"row {row}: file paths are not accepted by the scoring server; send base64 image bytes"
        )
    path = Path(value)
    if not path.is_file():
        raise _invalid(f"row {row}: {path}: no such image file")
    return path.read_bytes()


def _open_bytes(data: io.BytesIO, max_pixels: int, where: str) -> Image.Image:
    """Decoded through fcdd's one image loader (16-bit / float images scaled, not clipped); the
    size check reads the header only, before decoding."""
    from fcdd.data.image_io import read_image
    from fcdd.errors import DataError

    try:
        return read_image(data, where, max_pixels=max_pixels)
    except DataError as e:
        raise _invalid(str(e)) from e


def _cells(model_input: Any) -> list:
    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN not in model_input.columns:
            raise _invalid(
                f"input has columns {list(model_input.columns)}; expected a column '{INPUT_COLUMN}'"
            )
        cells = list(model_input[INPUT_COLUMN])
    elif isinstance(model_input, np.ndarray):
        is_single = model_input.ndim == 2 or (model_input.ndim == 3 and model_input.shape[2] in (1, 3, 4))
        cells = [model_input] if is_single else list(model_input)
    elif isinstance(model_input, (list, tuple)):
        cells = list(model_input)
    else:
        raise _invalid(
            f"unsupported input of type {type(model_input).__name__}; send a DataFrame '{INPUT_COLUMN}'"
        )
    if len(cells) > MAX_IMAGES_PER_REQUEST:
        raise _invalid(f"{len(cells)} images in one request; at most {MAX_IMAGES_PER_REQUEST}")
    return cells


def pixel_chunks(pixels: Sequence[int], chunk_pixels: int) -> list[range]:
    """Consecutive index ranges of at most ``chunk_pixels`` pixels each (an image larger than that
    is a chunk of its own)."""
    chunks, start, total = [], 0, 0
    for i, n in enumerate(pixels):
        if i > start and total + n > chunk_pixels:
            chunks.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(pixels):
        chunks.append(range(start, len(pixels)))
    return chunks


# ---------------------------------------------------------------- the model
class FCDDPyfunc(PythonModel):
    """Scores images with a Detector; output documented in the module docstring."""

    def load_context(self, context) -> None:
        from fcdd.detector import Detector

        config = dict(context.model_config or {})
        self.max_pixels = int(
            os.environ.get("FCDD_MAX_PIXELS") or config.get("max_pixels", DEFAULT_MAX_PIXELS)
        )
        self.max_request_pixels = int(
            os.environ.get("FCDD_MAX_REQUEST_PIXELS")
            or config.get("max_request_pixels", DEFAULT_MAX_REQUEST_PIXELS)
        )
        self.detector = Detector.load(
            context.artifacts[DETECTOR_ARTIFACT], device=os.environ.get("FCDD_DEVICE", "cpu")
        )

    def predict(self, context, model_input, params: dict | None = None) -> pd.DataFrame:
        fmt = (params or {}).get("heatmap_format", "npy")
        if fmt not in HEATMAP_FORMATS:
            raise _invalid(f"params.heatmap_format {fmt!r}: expected one of {', '.join(HEATMAP_FORMATS)}")
        alpha, mask_format = self._decision_params(params or {})
        prepared = [prepare_image(c, self.max_pixels, i) for i, c in enumerate(_cells(model_input))]
        pixels = [n for _, n, _ in prepared]
        self._check_budget(sum(pixels), len(pixels), fmt)
        frames = [
            self._score_chunk([prepared[i] for i in chunk], fmt, alpha, mask_format)
            for chunk in pixel_chunks(pixels, CHUNK_PIXELS)
        ] or [self._score_chunk([], fmt, alpha, mask_format)]
        return pd.concat(frames, ignore_index=True)

    def _check_budget(self, total: int, count: int, fmt: str) -> None:
        """Work per request is bounded by total pixels (peak memory grows with it)."""
        budget = self.max_request_pixels // (LIST_COST if fmt == "list" else 1)
        if total > budget:
            extra = f" (heatmap_format list costs {LIST_COST}x: the budget is 1/{LIST_COST})" * (
                fmt == "list"
            )
            raise _invalid(
                f"request too large: {count} images of {total} pixels in all exceed the budget of "
                f"{budget} pixels per request{extra} (FCDD_MAX_REQUEST_PIXELS / model config "
                "max_request_pixels); send fewer or smaller images per request"
            )

    def _score_chunk(self, chunk: list, fmt: str, alpha: float, mask_format: str) -> pd.DataFrame:
        """Decode, score and encode a few images: only one chunk's full-size heatmaps at a time."""
        from fcdd.detector import DetectorError, to_pil
        from fcdd.scoring import full_heatmap

        try:
            images = [
                to_pil(d) if isinstance(d, np.ndarray) else _open_bytes(io.BytesIO(d), self.max_pixels, w)
                for d, _, w in chunk
            ]
            out = self.detector.score(images, batch_size=SCORE_BATCH, full_size=False)
        except DetectorError as e:
            raise _invalid(str(e)) from e
        sizes = [(im.height, im.width) for im in images]
        hw = np.array(sizes, dtype=np.int64).reshape(-1, 2)
        frame = pd.DataFrame({"score": out.scores.astype(float), "height": hw[:, 0], "width": hw[:, 1]})
        self._add_decisions(frame, out.heatmaps, sizes, alpha, mask_format)
        if fmt != "none":  # full-size heatmaps: one at a time, encoded as they are made
            encode = encode_heatmap if fmt == "npy" else (lambda h: h.astype(float).tolist())
            frame["heatmap"] = [
                encode(full_heatmap(u, hw)) for u, hw in zip(out.heatmaps, sizes, strict=True)
            ]
        return frame

    def _decision_params(self, params: dict) -> tuple[float, str]:
        from fcdd.calibration import DEFAULT_ALPHA, CalibrationError, check_alpha

        try:
            alpha = check_alpha(params.get("alpha", DEFAULT_ALPHA), "params.alpha")
        except CalibrationError as e:
            raise _invalid(str(e)) from e
        mask_format = params.get("mask_format", "none")
        if mask_format not in MASK_FORMATS:
            raise _invalid(f"params.mask_format {mask_format!r}: expected one of {', '.join(MASK_FORMATS)}")
        if mask_format != "none" and not self.detector.meta.get("calibration"):
            raise _invalid("params.mask_format: this model has no calibration, so it has no defect masks")
        return alpha, mask_format

    def _add_decisions(
        self, frame: pd.DataFrame, ups: list, sizes: list, alpha: float, mask_format: str
    ) -> None:
        """p-values, normalised scores, decisions, ``note`` and masks (module docstring), by fcdd.decisions."""
        from fcdd.decisions import alpha_warning, decide
        from fcdd.overlay import encoded_mask

        calibration = self.detector.meta.get("calibration")
        if not calibration:
            return
        masks = mask_format != "none"
        q = float(self.detector.meta.get("quantile", 0.97))
        found = decide(calibration, frame["score"].to_numpy(), ups if masks else None, sizes, alpha, q)
        frame["p_value"] = np.array([d.p_value for d in found], dtype=np.float64)
        frame["normalised_score"] = np.array([d.normalised_score for d in found], dtype=np.float64)
        frame["anomalous"] = np.array([d.anomalous for d in found], dtype=bool)
        warning = alpha_warning(calibration, alpha)
        if warning:
            frame["note"] = warning
        if not masks:
            return
        frame["mask"] = [
            "" if d.rule is None else encoded_mask(up, size, d.rule, mask_format)
            for up, size, d in zip(ups, sizes, found, strict=True)
        ]
        frame["mask_note"] = ["" if d.rule is None else d.rule.note for d in found]


# ---------------------------------------------------------------- logging
def model_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from fcdd.calibration import DEFAULT_ALPHA

    inputs = Schema([ColSpec("string", INPUT_COLUMN)])
    outputs = Schema([ColSpec("double", "score"), ColSpec("long", "height"), ColSpec("long", "width")])
    params = ParamSchema(
        [
            ParamSpec("heatmap_format", "string", "npy"),
            ParamSpec("alpha", "double", DEFAULT_ALPHA),
            ParamSpec("mask_format", "string", "none"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def example_input(input_size: int | list[int], channels: int) -> pd.DataFrame:
    """A small grey image at the model's input size (an int: square, or [H, W]): the logged input example."""
    from fcdd.data.geometry import size_hw

    h, w = size_hw(input_size)
    shape = (h, w) if channels == 1 else (h, w, 3)
    return images_frame([np.full(shape, 128, dtype=np.uint8)])


def pip_requirements() -> list[str]:
    """Pinned from the running environment, so nothing has to be inferred (offline, fast)."""
    from importlib.metadata import version

    names = ("mlflow", "torch", "torchvision", "numpy", "pandas", "pillow")
    return [f"{n}=={version(n).split('+')[0]}" for n in names]


def log_detector_model(
    model_path: str | Path,
    name: str = "model",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    onnx: bool = False,
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
):
    """Log a Detector file as a pyfunc model in the active run; returns MLflow's ModelInfo.

    ``onnx``: the model also carries the ONNX export (artifacts/onnx/: model.onnx and
    fcdd_export.json), so a registry version can be deployed without PyTorch or MLflow serving.
    """
    import tempfile

    import mlflow

    import fcdd
    from fcdd.detector import Detector

    model_path = Path(model_path)
    detector = Detector.load(model_path)  # fails early with a clear message on a bad file
    example = example_input(detector.preprocess["input_size"], int(detector.preprocess["channels"]))
    here = Path(__file__).resolve().parent
    artifacts = {DETECTOR_ARTIFACT: str(model_path)}
    with tempfile.TemporaryDirectory(prefix="fcdd-onnx-") as tmp:
        if onnx:
            from fcdd.export import export_detector

            export_detector(detector, "onnx", Path(tmp) / ONNX_ARTIFACT, source=str(model_path))
            artifacts[ONNX_ARTIFACT] = str(Path(tmp) / ONNX_ARTIFACT)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(here / "mlflow_model_code.py"),
            artifacts=artifacts,
            code_paths=[str(Path(fcdd.__file__).resolve().parent), str(here / "pyfunc.py")],
            signature=model_signature(),
            input_example=(example, {"heatmap_format": "npy"}),
            model_config={"max_pixels": int(max_pixels), "max_request_pixels": int(max_request_pixels)},
            pip_requirements=pip_requirements(),
        )
