"""A trained FCDD model with everything needed to score new images, in one safe file.

The file is a ``torch.save`` of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``: no pickled code runs on load.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import Config, ModelConfig
from fcdd.data import image_io
from fcdd.data.image_io import array_to_8bit, read_image, to_8bit
from fcdd.data.transforms import test_transform
from fcdd.errors import DataError, ModelError
from fcdd.image_scores import IMAGE_SCORES, heatmap_maximum, model_image_score
from fcdd.models import build_model
from fcdd.objectives import Objective, net_variant, scoring_objective, unknown_objective
from fcdd.paths import write_atomically
from fcdd.scoring import full_heatmap

FORMAT = "fcdd-detector/1"

ImageLike = Image.Image | np.ndarray | str | Path
# What from_state needs, and the type each must have (a damaged file gets a one-line error naming them).
REQUIRED_KEYS = {"net": dict, "state_dict": dict, "sigma": (int, float), "preprocess": dict, "meta": dict}


class DetectorError(ModelError):
    """A detector file or an input image is not usable; the message says which and why."""


@dataclass
class DetectorOutput:
    scores: np.ndarray  # (n,) image anomaly scores: mean of the map A, or the heatmap maximum (image_score)
    heatmaps: list[np.ndarray]  # n float32 maps (h_i, w_i): A upsampled to each image's own size
    maps: np.ndarray  # (n, u, v) the low-resolution anomaly maps A


class Detector:
    def __init__(
        self, model: torch.nn.Module, upsampler: ReceptiveFieldUpsampler, preprocess: dict, meta: dict
    ):
        self.model = model.eval()
        self.upsampler = upsampler.eval()
        self.preprocess = preprocess
        self.meta = meta
        scoring_objective(meta, self.upsampler)  # an objective this fcdd does not know fails here
        self._transform = test_transform(preprocess)

    # ---------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        rf = self.model.receptive_field
        return {
            "format": FORMAT,
            "net": dict(self.meta["net"]),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "receptive_field": {"r": rf.r, "j": rf.j, "s": rf.s},
            "sigma": float(self.upsampler.sigma),
            "preprocess": self.preprocess,
            "meta": {k: v for k, v in self.meta.items() if k != "net"},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state()
        return write_atomically(path, lambda tmp: torch.save(state, tmp), "model file")

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device: str | torch.device = "cpu") -> Detector:
        return cls.from_state(
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), device, "<bytes>"
        )

    @classmethod
    def load(cls, path: str | Path | dict, device: str | torch.device = "cpu") -> Detector:
        if isinstance(path, dict):
            return cls.from_state(path, device, "<dict>")
        path = Path(path)
        if not path.is_file():
            raise DetectorError(f"{path}: no such model file")
        try:
            with warnings.catch_warnings():  # torch's notes on pickle protocols: not for the user
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means: not our file
            raise DetectorError(f"{path}: not an FCDD model file ({_load_failure(path, e)})") from None
        return cls.from_state(state, device, str(path))

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device, where: str) -> Detector:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise DetectorError(f"{where}: not an FCDD model file (expected format {FORMAT!r})")
        missing = [k for k in REQUIRED_KEYS if not isinstance(state.get(k), REQUIRED_KEYS[k])]
        if missing:
            raise DetectorError(
                f"{where}: damaged FCDD model file: {', '.join(missing)} missing or of the wrong type"
            )
        unknown = unknown_objective(state["meta"])
        if unknown:
            raise DetectorError(f"{where}: {unknown}")
        if model_image_score(state["meta"]) not in IMAGE_SCORES:
            raise DetectorError(
                f"{where}: image score {model_image_score(state['meta'])!r} is not one of "
                f"{', '.join(IMAGE_SCORES)} (a model file of a newer fcdd?)"
            )
        sigma = state["sigma"]
        if isinstance(sigma, bool) or not (sigma > 0 and sigma < float("inf")):
            raise DetectorError(
                f"{where}: damaged FCDD model file: sigma is {sigma!r}, not a positive number"
            )
        try:
            net = dict(state["net"], pretrained=False, weights_path=None)
            model = build_model(
                Config(model=ModelConfig(**net)),
                in_channels=state["preprocess"]["channels"],
                variant=net_variant(state["meta"]),  # FCDD's, or a baseline's net (docs/baselines.md)
            )
        except (TypeError, KeyError, ValueError) as e:
            raise DetectorError(
                f"{where}: damaged FCDD model file: net/preprocess unusable ({e!r})"
            ) from None
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise DetectorError(f"{where}: weights do not fit the {net['net']} network: {first}") from None
        upsampler = ReceptiveFieldUpsampler(model.receptive_field, sigma, net["input_size"])
        meta = dict(state["meta"], net=state["net"])
        try:
            return cls(model.to(device), upsampler.to(device), state["preprocess"], meta)
        except (TypeError, KeyError, ValueError) as e:
            raise DetectorError(f"{where}: damaged FCDD model file: preprocess unusable ({e!r})") from None

    # ---------------------------------------------------------------- scoring
    @property
    def objective(self) -> Objective:
        """What scores: FCDD unless the meta names another objective (fcdd/objectives)."""
        return scoring_objective(self.meta, self.upsampler)

    @property
    def image_score(self) -> str:
        """ "mean" (of the map A, the paper's) or "max" (of the heatmap): model.image_score."""
        return model_image_score(self.meta)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Detector:
        self.model.to(device)
        self.upsampler.to(device)
        return self

    def score_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Preprocessed batch -> (image scores (n,), low-res maps A (n,u,v), upsampled maps (n,H,W)),
        by the model's objective (fcdd/scoring.py for FCDD); an objective without a low-resolution
        map gives its heatmap in both places. The image score is the objective's (the mean of A for
        FCDD) or, for a model trained with ``model.image_score: max``, the heatmap maximum."""
        scores = self.objective.score(self.model, x.to(self.device))
        heat = scores.pixel[:, 0]  # type: ignore[index]
        image = heatmap_maximum(heat) if self.image_score == "max" else scores.image
        return image, heat if scores.amap is None else scores.amap[:, 0], heat

    def score(
        self, images: Sequence[ImageLike], batch_size: int = 32, full_size: bool = True
    ) -> DetectorOutput:
        """Scores and heatmaps at each image's own size (``full_size=False``: at the input size)."""
        return score_images(
            self._transform, self.score_tensor, self.model.output_size, images, batch_size, full_size
        )


def score_images(
    transform, score_batch, output_size, images: Sequence[ImageLike], batch_size: int, full_size: bool = True
) -> DetectorOutput:
    """The one scoring loop of PyTorch and exported models (fcdd/backends.py): preprocess with
    ``transform``, ``score_batch(x) -> (scores, maps A, upsampled maps)``, then each map resized to
    its image's own size (``full_size=False``: left at the input size; :func:`full_heatmap` later)."""
    pil = [to_pil(im) for im in images]
    scores, maps, heatmaps = [], [], []
    for start in range(0, len(pil), batch_size):
        chunk = pil[start : start + batch_size]
        x = torch.stack([transform(im) for im in chunk])
        s, a, up = (torch.as_tensor(t) for t in score_batch(x))
        scores.append(s.float().cpu().numpy())
        maps.append(a.float().cpu().numpy())
        for im, h in zip(chunk, up, strict=True):
            h = h.float().cpu().numpy()
            heatmaps.append(full_heatmap(h, (im.height, im.width)) if full_size else h)
    if not pil:
        u, v = (output_size, output_size) if isinstance(output_size, int) else output_size
        return DetectorOutput(np.zeros(0, np.float32), [], np.zeros((0, u, v), np.float32))
    return DetectorOutput(np.concatenate(scores), heatmaps, np.concatenate(maps))


def to_pil(image: ImageLike, max_pixels: int | None = None) -> Image.Image:
    """A path, a PIL image or an array (h,w), (h,w,1), (h,w,3) or (h,w,4) of any numeric dtype ->
    8-bit "L"/"RGB" image, scaled by the one set of rules of fcdd.data.image_io (16-bit, float, ...)."""
    if isinstance(image, (str, Path)):
        try:
            return read_image(image, max_pixels=max_pixels)
        except DataError as e:
            raise DetectorError(str(e)) from e
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, max_pixels)
        return to_8bit(image)
    if isinstance(image, np.ndarray):
        arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise DetectorError(
                f"image array of shape {image.shape}: expected (h, w), (h, w, 3) or (h, w, 4)"
            )
        _check_pixels(arr.shape[1], arr.shape[0], max_pixels)
        try:
            return to_8bit(Image.fromarray(array_to_8bit(arr)))
        except DataError as e:
            raise DetectorError(str(e)) from e
    raise DetectorError(f"unsupported image input of type {type(image).__name__}")


def _load_failure(path: Path, e: BaseException) -> str:
    """Why torch.load refused a file, without torch's advice to load it unsafely (fcdd never does:
    a model file holds tensors and plain values only)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "not a PyTorch file: model files are torch.save archives"
    text = str(e)
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds Python objects other than tensors and plain values, which fcdd never loads"
    first = (text.strip().splitlines() or [""])[0].split(" (Could this error message be improved?")[0]
    return f"a damaged PyTorch file: {type(e).__name__}: {first}"[:300]


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    max_pixels = image_io.MAX_PIXELS if max_pixels is None else max_pixels
    if width * height > max_pixels:
        raise DetectorError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
