"""CIFAR-10 one-vs-rest (docs/method.md §4), from a JPEG zip, a folder of the same layout, or torchvision.

cfg.data.root may be a zip (or folder) with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``
(read straight from the zip; decoded arrays cached in cfg.data.cache_dir), or torchvision's root
(``<root>/cifar-10-batches-py``; with cfg.data.download torchvision may fetch it).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcdd.data.augment import SmallImageAugment
from fcdd.data.files import files_key
from fcdd.data.image_io import is_image_file, read_image
from fcdd.data.names import resolve_class
from fcdd.data.spec import DatasetSpec
from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.data.training_set import RawData

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ALIASES = {"plane": 0, "car": 1, "aeroplane": 0}


class CIFAR10(DatasetSpec):
    name = "cifar10"
    title = "CIFAR-10"
    classes = tuple(CIFAR10_CLASSES)
    sigma, quantile = 1.2, 0.85  # docs/method.md §3
    cpu_preset = "cpu"
    # docs/method.md §4: colour jitter 0.01, crop with zero padding 4, flip, Gaussian noise 0.001
    augment = SmallImageAugment(padding=4, jitter=(0.01, 0.01, 0.01, 0.01), noise=0.001)
    oe_exclude = tuple(CIFAR10_CLASSES)
    oe_reject_own = True  # e.g. the CIFAR-10 zip as OE source: refused, not filtered to nothing

    def load(self, cfg: Any, cls: str, seed: int) -> RawData:
        return load_cifar10(cfg, cls, seed)


DATASET = CIFAR10()


class _Archive:
    """Uniform read access to a zip or a directory with the train/<class>/ layout."""

    def __init__(self, root: Path):
        self.root = root
        if root.is_file():
            try:
                self.zip: zipfile.ZipFile | None = zipfile.ZipFile(root)
            except zipfile.BadZipFile as e:
                raise DataError(f"{root}: not a readable zip file ({e})") from e
            self.names = self.zip.namelist()
        else:
            self.zip = None
            self.names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        return self.zip.read(name) if self.zip else (self.root / name).read_bytes()

    def members(self, split: str, cls: str) -> list[str]:
        prefix = f"{split}/{cls}/"
        return sorted(n for n in self.names if n.startswith(prefix) and is_image_file(n))


def _decode(archive: _Archive, names: list[str]) -> np.ndarray:
    out = np.zeros((len(names), 32, 32, 3), dtype=np.uint8)
    for i, n in enumerate(names):
        im = read_image(archive.read(n), f"{archive.root}:{n}")
        if im.size != (32, 32):
            raise DataError(f"{archive.root}:{n}: expected a 32x32 image, got {im.size[0]}x{im.size[1]}")
        out[i] = np.asarray(im.convert("RGB"))
    return out


def _cached_decode(cfg: Any, archive: _Archive, split: str, cls: str, names: list[str]) -> np.ndarray:
    key = files_key([str(archive.root)], split, cls, len(names))
    path = Path(cfg.data.cache_dir) / "cifar10" / f"{split}-{cls}-{key}.npy"
    if path.is_file():
        return np.load(path)
    arr = _decode(archive, names)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr


def _from_archive(cfg: Any, root: Path, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    archive = _Archive(root)
    train_names = archive.members("train", CIFAR10_CLASSES[c])
    if not train_names:
        raise DataError(f"{root}: empty class, no train/{CIFAR10_CLASSES[c]}/ images")
    train = _cached_decode(cfg, archive, "train", CIFAR10_CLASSES[c], train_names)
    xs, ys, paths = [], [], []
    for k, name in enumerate(CIFAR10_CLASSES):
        names = archive.members("test", name)
        if not names:
            raise DataError(f"{root}: no test/{name}/ images (CIFAR-10 layout train|test/<class>/*.jpg)")
        xs.append(_cached_decode(cfg, archive, "test", name, names))
        ys += [k] * len(names)
        paths += [f"{root}/{n}" for n in names]
    return train, np.concatenate(xs), np.asarray(ys), paths


def _from_torchvision(cfg: Any, root: Path, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from torchvision import datasets

    try:
        tr = datasets.CIFAR10(str(root), train=True, download=cfg.data.download)
        te = datasets.CIFAR10(str(root), train=False, download=cfg.data.download)
    except (RuntimeError, OSError) as e:
        raise DataError(
            f"data.root {root}: not a CIFAR-10 zip/folder (train/<class>/*.jpg) and no torchvision "
            f"cifar-10-batches-py (data.download={cfg.data.download}): {e}"
        ) from e
    ty = np.asarray(tr.targets)
    test_y = np.asarray(te.targets)
    return tr.data[ty == c], te.data, test_y, [f"cifar10:test:{i}" for i in range(len(test_y))]


def load_cifar10(cfg: Any, cls: str, seed: int) -> RawData:
    from fcdd.data.training_set import RawData, TensorStore, TestData, in_memory_metadata

    c = resolve_class(cls, CIFAR10_CLASSES, "CIFAR-10", ALIASES)
    root = Path(cfg.data.root)
    if not root.exists():
        raise DataError(f"data.root {root}: no such file or directory")
    archive_like = root.is_file() or (root / "train").is_dir()
    train, test_x, test_y, paths = (_from_archive if archive_like else _from_torchvision)(cfg, root, c)
    store = TensorStore(test_x)
    test = TestData(
        images=store,
        labels=(test_y != c).astype(np.int64),
        defect_types=["good" if y == c else CIFAR10_CLASSES[y] for y in test_y],
        paths=paths,
        **in_memory_metadata(store),
    )
    return RawData(
        name="cifar10",
        cls=CIFAR10_CLASSES[c],
        classes=list(CIFAR10_CLASSES),
        channels=3,
        train=TensorStore(train),
        test=test,
        geometry={"input_size": 32, "resize": None, "crop": None},
        stats="meanstd",
        stats_key=f"cifar10|{CIFAR10_CLASSES[c]}|{root.resolve()}",
        source_size=32,
    )
