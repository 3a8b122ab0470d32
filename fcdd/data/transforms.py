"""Preprocessing of docs/method.md §4: the one test transform and the pieces of the joint (image,
mask) training transforms (each dataset's recipe, fcdd/data/augment.py, puts them together).

Images travel as uint8 tensors [C, H, W] until the last step, where they become float in [0, 1]
and are normalised (fcdd.data.normalisation). Training transforms wrap image and mask in
``tv_tensors.Image`` / ``tv_tensors.Mask`` so torchvision.transforms.v2 draws ONE set of random
parameters for both: a crop or flip moves the mask with the image, colour changes leave it alone.
Randomness comes from torch's global generator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fcdd.data.geometry import size_hw
from fcdd.data.image_io import to_8bit
from fcdd.data.normalisation import normalise
from fcdd.errors import DataError

MODES = {1: "L", 3: "RGB"}
PREPROCESS_KEYS = ("input_size", "channels", "resize", "crop", "normalisation")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image (L, RGB, RGBA, P, I;16, F, ...) to 1 or 3 8-bit channels
    (high bit depths scaled by the rules of fcdd.data.image_io)."""
    if channels not in MODES:
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    mode = MODES[channels]
    return image if image.mode == mode else to_8bit(image).convert(mode)


def pil_to_uint8(image: Image.Image, channels: int) -> torch.Tensor:
    """PIL image -> uint8 tensor [C, H, W] with the wanted number of channels."""
    return F.pil_to_tensor(to_mode(image, channels))


def stored_before_crop(size: int) -> int:
    """Side a stored MVTec/folder image is resized to before its random crop (paper: 240 for 224)."""
    return max(size, round(size * 240 / 224))


class AlignedResize(v2.Resize):
    """v2.Resize that resizes masks with NEAREST_EXACT: pixel-centre aligned with the bilinear image
    (plain NEAREST samples at the top-left and shifts a mask by up to a pixel)."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, self.size, interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return super().transform(inpt, params)


class TestTransform:
    """Inference preprocessing from a JSON-serialisable ``preprocess`` dict (docs/architecture.md).

    Geometry: with ``crop``, resize the short side to ``resize`` (if set) and centre-crop ``crop``;
    without it, resize to input_size. Sizes are ints (square) or [H, W] (fcdd.data.geometry). Then
    scale to [0, 1] and normalise.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, preprocess: dict[str, Any]):
        missing = [k for k in PREPROCESS_KEYS if k not in preprocess]
        if missing:
            raise DataError(f"preprocess dict lacks {', '.join(missing)}; got keys {sorted(preprocess)}")
        self.preprocess = preprocess
        self.size = size_hw(preprocess["input_size"])
        self.channels = int(preprocess["channels"])
        self.resize = preprocess["resize"]
        self.crop = preprocess["crop"]
        self.normalisation = preprocess["normalisation"]
        if self.channels not in MODES:
            raise DataError(f"preprocess channels must be 1 or 3, got {self.channels!r}")

    def geometry(self, x: torch.Tensor, nearest: bool = False) -> torch.Tensor:
        """Resize/crop a [C, H, W] tensor to input_size (nearest for masks)."""
        mode = v2.InterpolationMode.NEAREST_EXACT if nearest else v2.InterpolationMode.BILINEAR
        if self.crop is not None:
            if self.resize is not None:
                x = F.resize(x, [int(self.resize)], interpolation=mode, antialias=not nearest)
            return F.center_crop(x, list(size_hw(self.crop)))
        if tuple(x.shape[-2:]) != self.size:
            x = F.resize(x, list(self.size), interpolation=mode, antialias=not nearest)
        return x

    def from_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [C, h, w] with the right channels -> normalised float [C, H, W] of input_size."""
        return normalise(self.geometry(x).float().div_(255), self.normalisation)

    def mask(self, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
        """bool mask (h, w) -> float [1, H, W] in {0, 1}, with the image's geometry."""
        m = torch.as_tensor(np.asarray(mask, dtype=np.uint8)).unsqueeze(0)
        return self.geometry(m, nearest=True).float()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        stored = self.preprocess.get("stored")
        if stored and image.size != size_hw(stored)[::-1]:
            # The test images went through the stored-size cache (folder.cached_arrays): same resize here,
            # so a user's image scores exactly as the same file did in the test set.
            image = to_mode(image, 3).resize(size_hw(stored)[::-1], Image.BILINEAR, reducing_gap=None)
        return self.from_uint8(pil_to_uint8(image, self.channels))


def test_transform(preprocess: dict[str, Any]) -> TestTransform:
    """The one place inference preprocessing is built: callable(PIL.Image) -> Tensor[C, H, W]."""
    return TestTransform(preprocess)


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported by tests


class AddNoise:
    """x + scale * N(0, 1), optionally with scale relative to std(x), applied with probability p."""

    def __init__(self, scale: float, relative: bool = False, p: float = 1.0, clamp: bool = False):
        self.scale, self.relative, self.p, self.clamp = scale, relative, p, clamp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.p < 1.0 and torch.rand(()).item() >= self.p:
            return x
        scale = self.scale * (x.std() if self.relative else 1.0)
        x = x + scale * torch.randn_like(x)
        return x.clamp(0, 1) if self.clamp else x


class TrainTransform:
    """(uint8 image [C,H,W], mask [1,H,W]) -> (normalised float image, float mask in {0,1}).

    ``colour`` (image only) runs first, then ``joint`` (a v2 transform of an Image/Mask pair), then
    the noise on the float image, then the normalisation.
    """

    def __init__(
        self,
        joint: v2.Transform,
        noise: Callable | None,
        normalisation: dict[str, Any],
        colour: v2.Transform | None = None,
    ):
        self.joint, self.noise, self.normalisation, self.colour = joint, noise, normalisation, colour

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.colour is not None:
            image = self.colour(image)
        img, msk = self.joint(tv_tensors.Image(image), tv_tensors.Mask(mask.to(torch.uint8)))
        img, msk = img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)
        x = img.float().div_(255)
        if self.noise is not None:
            x = self.noise(x)
        return normalise(x, self.normalisation), msk.float()
