"""Synthetic anomalies of ``anomalies.kind`` perlin, cutpaste, scar and their mixes with confetti
(docs/synthetic-anomalies.md).

Two forms of the same generators:
- per sample, an anomaly source ``source(PIL image, numpy Generator) -> (PIL image, bool mask)``
  like confetti's (the per-sample training path, the guard rail of fcdd/separation.py);
- batched, :class:`BatchInjector`: the training set marks which items become which anomaly (from
  torch's per-batch seeded generator, like the coin that chooses them), and the whole uint8 batch
  is injected where the batch augmentation runs (the loader, or the training device: the GPU
  presets), just before that augmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from fcdd.data.anomaly_kinds import MIXABLE_KINDS, anomaly_shares
from fcdd.data.cutpaste import cutpaste_anomalies
from fcdd.data.perlin import perlin_anomalies
from fcdd.data.transforms import pil_to_uint8
from fcdd.errors import DataError

BATCHED_KINDS = ("perlin", "cutpaste", "scar")  # codes 1, 2, 3 of a batch's "synthetic"; 0: none
CODES = {kind: i + 1 for i, kind in enumerate(BATCHED_KINDS)}


class TexturePool:
    """Images a Perlin anomaly takes its texture from: the nominal training images in use
    (``keep`` of ``store``; held-out calibration images are not among them)."""

    def __init__(self, store: Any, keep: np.ndarray | None = None) -> None:
        self.store = store
        self.keep = np.arange(len(store)) if keep is None else np.asarray(keep)
        if len(self.keep) == 0:
            raise DataError("anomalies.kind perlin: no training images to take textures from")

    def __len__(self) -> int:
        return len(self.keep)

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        """A uint8 [C, H, W] image, chosen with a numpy Generator (per-sample path)."""
        return self.store.uint8(int(self.keep[int(rng.integers(len(self.keep)))]))

    def draw_torch(self) -> torch.Tensor:
        """The same, chosen with torch's global generator (the batched path's items)."""
        return self.store.uint8(int(self.keep[int(torch.randint(len(self.keep), ()).item())]))


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def _to_pil(x: torch.Tensor) -> Image.Image:
    a = x.permute(1, 2, 0).numpy()
    return Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")


def _channels(image: Image.Image) -> int:
    if image.mode not in ("L", "RGB"):
        raise DataError(
            f"synthetic anomalies: image mode {image.mode!r} is not supported; expected 'L' or 'RGB'"
        )
    return 1 if image.mode == "L" else 3


class Perlin:
    """Anomaly source: a Perlin-noise region of the image filled with a changed texture image."""

    def __init__(self, textures: TexturePool) -> None:
        self.textures = textures

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
        channels = _channels(image)
        texture = self.textures.draw(rng)
        if texture.shape[0] != channels:  # a pool of other images: same number of channels
            texture = texture.float().mean(0, keepdim=True) if channels == 1 else texture.expand(3, -1, -1)
            texture = texture.round().to(torch.uint8)
        out, mask = perlin_anomalies(
            pil_to_uint8(image, channels)[None], texture[None], _torch_generator(rng)
        )
        return _to_pil(out[0]), mask[0, 0].numpy()


class CutPaste:
    """Anomaly source: a patch of the image pasted elsewhere (``scar``: a thin rotated strip)."""

    def __init__(self, scar: bool = False) -> None:
        self.scar = scar

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
        x = pil_to_uint8(image, _channels(image))[None]
        out, mask = cutpaste_anomalies(x, self.scar, _torch_generator(rng))
        return _to_pil(out[0]), mask[0, 0].numpy()


class SyntheticMix:
    """Anomaly source of a mix: each anomaly is one of the kinds, drawn with its share."""

    def __init__(self, shares: Mapping[str, float], sources: Mapping[str, Any]) -> None:
        self.kinds = [k for k in MIXABLE_KINDS if shares.get(k)]  # a fixed order: draws repeat
        self.probabilities = np.asarray([shares[k] for k in self.kinds], dtype=np.float64)
        self.probabilities /= self.probabilities.sum()
        self.sources = dict(sources)

    def __len__(self) -> int:
        return len(self.kinds)

    def choose(self, u: float) -> str:
        """The kind a uniform number in [0, 1) picks."""
        index = int(np.searchsorted(np.cumsum(self.probabilities), u, side="right"))
        return self.kinds[min(index, len(self.kinds) - 1)]

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
        return self.sources[self.choose(float(rng.random()))](image, rng)


def synthetic_source(cfg: Any, textures: TexturePool | None, confetti: Any = None) -> Any:
    """The per-sample source of ``cfg.anomalies.kind`` (perlin, cutpaste, scar or a mix)."""
    shares = anomaly_shares(cfg.anomalies.kind)
    sources: dict[str, Any] = {}
    for kind in shares:
        if kind == "perlin":
            if textures is None:
                raise DataError("anomalies.kind perlin: needs the nominal training images for textures")
            sources[kind] = Perlin(textures)
        elif kind in ("cutpaste", "scar"):
            sources[kind] = CutPaste(scar=kind == "scar")
        elif kind == "confetti":
            sources[kind] = confetti
    if len(sources) == 1:
        return next(iter(sources.values()))
    return SyntheticMix(shares, sources)


class BatchInjector:
    """The batched form of a source: ``pick()`` (in an item, from torch's global generator) says
    which anomaly an item becomes, 0 for one the per-sample ``fallback`` makes at once (confetti);
    ``__call__`` injects a whole uint8 batch by those codes."""

    def __init__(self, source: Any) -> None:
        mix = source if isinstance(source, SyntheticMix) else None
        self.mix = mix
        self.kind = None if mix else _single_kind(source)
        self.fallback = mix.sources.get("confetti") if mix else None
        perlin = mix.sources.get("perlin") if mix else (source if isinstance(source, Perlin) else None)
        self.textures = perlin.textures if perlin is not None else None

    def pick(self) -> int:
        kind = self.kind if self.mix is None else self.mix.choose(float(torch.rand(()).item()))
        return CODES.get(kind, 0)

    def texture(self, code: int, image: torch.Tensor) -> torch.Tensor:
        """The texture an item carries: a pool image for a Perlin anomaly, else the image itself."""
        return self.textures.draw_torch() if code == CODES["perlin"] else image

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None,
        codes: torch.Tensor,
        textures: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images [B, C, H, W], bool masks [B, 1, H, W] (or None) -> both with the coded items
        replaced by their anomalies. On CUDA every generator runs on the whole batch and ``where``
        keeps each item's own (no host sync); elsewhere each runs on its items only."""
        codes = codes.to(images.device)
        out, new_masks = (
            images,
            torch.zeros((images.shape[0], 1, *images.shape[2:]), dtype=torch.bool, device=images.device),
        )
        every = images.is_cuda
        perlin, patch = codes == CODES["perlin"], (codes == CODES["cutpaste"]) | (codes == CODES["scar"])
        for chosen, make in (
            (perlin, lambda x, i: perlin_anomalies(x, textures.to(x.device)[i], generator)),
            (patch, lambda x, i: cutpaste_anomalies(x, codes[i] == CODES["scar"], generator)),
        ):
            if every:
                made, m = make(images, slice(None))
                out = torch.where(chosen.view(-1, 1, 1, 1), made, out)
                new_masks = torch.where(chosen.view(-1, 1, 1, 1), m, new_masks)
                continue
            idx = chosen.nonzero().flatten()
            if len(idx):
                made, m = make(images[idx], idx)
                out = out.clone() if out is images else out
                out[idx], new_masks[idx] = made, m
        if masks is not None:
            masks = masks | new_masks
        return out, masks


def _single_kind(source: Any) -> str | None:
    if isinstance(source, Perlin):
        return "perlin"
    if isinstance(source, CutPaste):
        return "scar" if source.scar else "cutpaste"
    return None


def batch_injector(source: Any) -> BatchInjector | None:
    """The batched form of a per-sample source, where it has one (perlin, cutpaste, scar, mixes)."""
    if isinstance(source, (Perlin, CutPaste)) or (
        isinstance(source, SyntheticMix) and any(k in BATCHED_KINDS for k in source.kinds)
    ):
        return BatchInjector(source)
    return None
