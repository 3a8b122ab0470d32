"""Dataset containers: image stores, the training set with online anomaly injection, the test set.

Determinism: all randomness (injection coin, the anomaly source's numpy Generator, augmentation) is
drawn from torch's global generator inside ``__getitem__``, nothing from unseeded state.
- fcdd.engine re-seeds that generator before every item with a per-sample seed drawn from the run's
  seeded sampler (new seeds every epoch): items are then independent of num_workers and resumable.
- Under a plain DataLoader, torch seeds each worker with ``base_seed + worker_id``, ``base_seed``
  drawn from the main generator once per epoch: after ``torch.manual_seed(seed)`` each epoch and
  worker gets its own reproducible stream (same seed and num_workers -> same batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from fcdd.data.files import file_metadata, original_mask
from fcdd.data.names import resolve_class as resolve_class  # re-exported: existing importers
from fcdd.data.names import slug as slug
from fcdd.data.transforms import TestTransform, TrainTransform, pil_to_uint8
from fcdd.errors import DataError


class ImageStore(Protocol):
    def __len__(self) -> int: ...
    def uint8(self, i: int) -> torch.Tensor: ...  # [C, H, W] uint8


class TensorStore:
    """Images held in memory (or memory-mapped) as one uint8 array [N, H, W, C] or [N, C, H, W]."""

    def __init__(self, data: np.ndarray | torch.Tensor, channels_last: bool = True):
        self.data, self.channels_last = data, channels_last
        if not isinstance(data, np.memmap):  # in memory: one conversion to [N, C, H, W] up front
            x = torch.tensor(np.asarray(data))  # a copy: idx arrays are read-only buffers
            x = x.unsqueeze(-1 if channels_last else 1) if x.dim() == 3 else x
            self.data, self.channels_last = (
                (x.permute(0, 3, 1, 2) if channels_last else x).contiguous(),
                False,
            )

    def __len__(self) -> int:
        return len(self.data)

    def uint8(self, i: int) -> torch.Tensor:
        if isinstance(self.data, torch.Tensor):
            return self.data[i].clone()
        x = torch.from_numpy(np.array(self.data[i], copy=True))  # memory-mapped cache file
        if x.dim() == 2:
            x = x.unsqueeze(-1 if self.channels_last else 0)
        return x.permute(2, 0, 1).contiguous() if self.channels_last else x


class FileStore:
    """Images read from files on access (ImageNet-sized data that does not fit in memory)."""

    def __init__(self, paths: list[str], channels: int, opener: Callable[[str], Image.Image]):
        self.paths, self.channels, self.opener = paths, channels, opener

    def __len__(self) -> int:
        return len(self.paths)

    def uint8(self, i: int) -> torch.Tensor:
        return pil_to_uint8(self.opener(self.paths[i]), self.channels)


def _store_rgb(store: ImageStore, j: int) -> np.ndarray:
    x = store.uint8(j).permute(1, 2, 0).numpy()
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def _store_size(store: ImageStore, j: int) -> tuple[int, int]:
    return tuple(store.uint8(j).shape[1:])  # type: ignore[return-value]


def in_memory_metadata(store: ImageStore) -> dict[str, Callable]:
    """raw_image / original_size of TestData for images kept at their original size in ``store``.

    functools.partial of module functions, not lambdas: the test set must pickle (spawned workers)."""
    return {"raw_image": partial(_store_rgb, store), "original_size": partial(_store_size, store)}


def uint8_to_pil(x: torch.Tensor) -> Image.Image:
    a = x.permute(1, 2, 0).numpy()
    return Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")


@dataclass
class TestData:
    """The raw test split; ``keep`` selects (and orders) the items in use."""

    __test__ = False  # not a pytest test class

    images: ImageStore
    labels: np.ndarray
    defect_types: list[str]
    paths: list[str]
    raw_image: Callable[[int], np.ndarray]  # (h, w, 3) uint8 at original resolution
    original_size: Callable[[int], tuple[int, int]]
    masks: ImageStore | None = None  # 0/1 masks at storage resolution, [1, H, W]
    full_mask: Callable[[int], np.ndarray] | None = None  # bool (h, w) at original resolution
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # bool per item: pixel ground truth known (nominal, or anomalous with a mask); None: all, if masks
    mask_known: np.ndarray | None = None
    mask_note: str | None = None  # why a dataset that could have masks has none (metrics.json says it)

    def __post_init__(self) -> None:
        if len(self.keep) == 0:
            self.keep = np.arange(len(self.labels))


@dataclass
class RawData:
    """What a dataset loader hands to build_datasets, before limits, semi selection and stats."""

    name: str
    cls: str
    classes: list[str]
    channels: int
    train: ImageStore  # nominal training images at storage resolution
    test: TestData
    geometry: dict[str, Any]  # input_size, resize, crop of the preprocess dict
    stats: str  # gcn-minmax | meanstd | imagenet
    stats_key: str
    source_size: int  # side of the raw image an anomaly source receives
    stored_size: int | None = None
    train_paths: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class TrainingSet(Dataset):
    """Nominal training images; each item is replaced by an anomaly with ``probability``.

    The anomaly ``source(raw PIL image, numpy Generator) -> (PIL image, bool mask)`` sees the raw
    nominal image; its output then goes through the same joint train transform as nominal images.
    """

    def __init__(
        self,
        images: ImageStore,
        transform: TrainTransform,
        channels: int,
        source: Callable | None = None,
        probability: float = 0.0,
        keep: np.ndarray | None = None,
        seed: int = 0,
        batch_transform: Callable | None = None,
        injector: Any = None,
    ):
        self.images, self.transform, self.channels = images, transform, channels
        # With a batch transform, items stay uint8 and ``collate`` augments the whole batch at once;
        # an injector (fcdd.data.synthetic.BatchInjector) then makes its anomalies there too, batched.
        self.batch_transform = batch_transform
        self.injector = injector if batch_transform is not None else None
        self.source, self.probability, self.seed = source, probability, seed
        self.keep = np.arange(len(images)) if keep is None else np.asarray(keep)

    def __len__(self) -> int:
        return len(self.keep)

    def _inject(
        self, image: torch.Tensor, source: Callable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.source if source is None else source
        # A numpy Generator for the source, seeded from torch's (worker-seeded) generator.
        rng = np.random.default_rng([self.seed, int(torch.randint(0, 2**62, ()).item())])
        out = source(uint8_to_pil(image), rng)  # type: ignore[misc]
        if not (isinstance(out, tuple) and len(out) == 2):
            raise DataError(f"anomaly source {source!r} must return (image, mask), got {type(out)}")
        anomaly, mask = out
        x = pil_to_uint8(anomaly, self.channels)
        m = torch.as_tensor(np.asarray(mask, dtype=bool))
        if tuple(m.shape) != tuple(x.shape[1:]):
            raise DataError(f"anomaly source {source!r}: mask {tuple(m.shape)} != image {tuple(x.shape[1:])}")
        return x, m.unsqueeze(0)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images.uint8(int(self.keep[i]))
        label, code = 0, 0
        mask = torch.zeros((1, *image.shape[1:]), dtype=torch.bool)
        if self.source is not None and self.probability > 0 and torch.rand(()).item() < self.probability:
            label = 1
            code = self.injector.pick() if self.injector is not None else 0  # >0: the batch injects it
            if code == 0:
                fallback = self.injector.fallback if self.injector is not None else None
                image, mask = self._inject(image, fallback)
        if self.injector is not None:
            texture = self.injector.texture(code, image)
            item = {"image": image, "label": torch.tensor(label, dtype=torch.int64), "mask": mask, "index": i}
            return {**item, "synthetic": torch.tensor(code, dtype=torch.int64), "texture": texture}
        if self.batch_transform is not None:
            return {"image": image, "label": torch.tensor(label, dtype=torch.int64), "mask": mask, "index": i}
        x, m = self.transform(image, mask)
        return {"image": x, "label": torch.tensor(label, dtype=torch.int64), "mask": m, "index": i}

    def collate(
        self,
        items: list[dict[str, Any]],
        keys: tuple[str, ...] = ("image", "label", "mask"),
        augment: bool = True,
    ) -> dict:
        """A batch of items; with a batch transform, augmented here (in the loader's worker, right
        after the items were drawn, so with the batch's seeded RNG state). ``augment=False`` leaves
        the uint8 images (and bool masks) for the training device to augment: the batch then carries
        "seed", drawn from that same seeded state, for the device's generator."""
        batch = default_collate([{k: item[k] for k in (*keys, "image")} for item in items])
        if self.batch_transform is not None:
            masks = torch.stack([item["mask"] for item in items]) if "mask" in keys else None
            if self.injector is not None:
                batch["synthetic"] = torch.stack([item["synthetic"] for item in items])
                batch["texture"] = torch.stack([item["texture"] for item in items])
            if not augment:
                if masks is not None:
                    batch["mask"] = masks
                batch["seed"] = torch.randint(0, 2**62, ())
                return batch
            if self.injector is not None:
                codes, textures = batch.pop("synthetic"), batch.pop("texture")
                batch["image"], masks = self.injector(batch["image"], masks, codes, textures)
            batch["image"], m = self.batch_transform(batch["image"], masks)
            if m is not None:
                batch["mask"] = m
        return batch


class TestSet(Dataset):
    """The test split with the architecture's metadata (paths, labels, masks at full resolution)."""

    __test__ = False  # not a pytest test class

    def __init__(self, data: TestData, transform: TestTransform):
        self.data, self.transform = data, transform
        k = data.keep
        self.paths: list[str] = [data.paths[j] for j in k]
        self.labels: np.ndarray = np.asarray(data.labels)[k].astype(np.int64)
        self.defect_types: list[str] = [data.defect_types[j] for j in k]
        self.has_masks: bool = data.masks is not None
        # Pixel metrics take the images whose ground truth is known (anomalous ones without a mask are left out).
        known = np.ones(len(data.labels), dtype=bool) if data.mask_known is None else data.mask_known
        self.mask_known: np.ndarray = np.asarray(known, dtype=bool)[k] & self.has_masks
        self.mask_note: str | None = data.mask_note

    def __len__(self) -> int:
        return len(self.data.keep)

    def _j(self, i: int) -> int:
        return int(self.data.keep[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self._j(i)
        x = self.transform.from_uint8(self.data.images.uint8(j))
        if self.data.masks is not None:
            mask = self.transform.mask(self.data.masks.uint8(j)[0].numpy() > 0)
        else:
            mask = torch.zeros((1, *x.shape[1:]))
        return {"image": x, "label": torch.tensor(self.labels[i]), "mask": mask, "index": i}

    def full_mask(self, i: int) -> np.ndarray:
        """Ground truth at the original resolution; all False for nominal images or without masks."""
        j = self._j(i)
        if self.data.full_mask is None or self.labels[i] == 0:
            return np.zeros(self.data.original_size(j), dtype=bool)
        return self.data.full_mask(j)

    def original_size(self, i: int) -> tuple[int, int]:
        return self.data.original_size(self._j(i))

    def raw_image(self, i: int) -> np.ndarray:
        return self.data.raw_image(self._j(i))


def file_test_data(
    paths: list[str],
    labels: list[int],
    defect_types: list[str],
    images: np.ndarray,
    masks: np.ndarray,
    mask_paths: list[str | None],
    threshold: int,
    has_masks: bool,
    mask_note: str | None = None,
) -> TestData:
    """TestData over cached arrays, reading originals lazily for full masks and figures."""
    known = [y == 0 or m is not None for y, m in zip(labels, mask_paths, strict=True)]
    return TestData(
        images=TensorStore(images),
        labels=np.asarray(labels, dtype=np.int64),
        defect_types=defect_types,
        paths=paths,
        **file_metadata(paths),
        masks=TensorStore(masks.view(np.uint8)) if has_masks else None,
        full_mask=partial(original_mask, paths, mask_paths, threshold) if has_masks else None,
        mask_known=np.asarray(known, dtype=bool) if has_masks else None,
        mask_note=None if has_masks else mask_note,
    )
