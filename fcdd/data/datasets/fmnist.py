"""Fashion-MNIST one-vs-rest (docs/method.md §4), from idx-ubyte files (gzipped or not) or torchvision.

cfg.data.root may be the folder holding the four ``*-ubyte[.gz]`` files (Debian's
/usr/share/datasets/fashion-mnist), torchvision's root (``<root>/FashionMNIST/raw``), or, with
cfg.data.download, an empty folder torchvision downloads into. Images stay in memory as uint8.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcdd.data.augment import SmallImageAugment
from fcdd.data.names import resolve_class, slug
from fcdd.data.spec import DatasetSpec
from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.data.training_set import RawData

# torchvision.datasets.FashionMNIST.classes; run folders use their slugs ('t-shirt-top', 'ankle-boot').
FMNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# ImageNet-1k classes that are instances of a Fashion-MNIST class, by wnid: an ImageNet-derived Outlier
# Exposure pool must not show them (docs/method.md §4: OE is disjoint from the test anomalies, and
# one-vs-rest tests every other class). Matching names is not enough: of these only "sandal" is
# called like a Fashion-MNIST class. Chosen by what the ImageNet class depicts; apparel that no
# Fashion-MNIST class covers (swimwear, uniforms, aprons, loafers, clogs) stays in the pool.
IMAGENET_INSTANCES = {
    "T-shirt/top": ("n03595614",),  # jersey, T-shirt
    "Trouser": ("n03594734", "n03877472"),  # jean; pajama
    "Pullover": ("n04370456", "n02963159"),  # sweatshirt; cardigan
    # gown, academic gown, abaya, kimono, hoopskirt, miniskirt, overskirt, sarong
    "Dress": (
        "n03450230",
        "n02669723",
        "n02667093",
        "n03617480",
        "n03534580",
        "n03770439",
        "n03866082",
        "n04136333",
    ),
    # trench coat, fur coat, lab coat, cloak, poncho, suit (its jacket)
    "Coat": ("n04479046", "n03404251", "n03630383", "n03045698", "n03980874", "n04350905"),
    "Sandal": ("n04133789",),  # sandal
    "Shirt": ("n03595614",),  # jersey, T-shirt (ImageNet has no shirt class of its own)
    "Sneaker": ("n04120489",),  # running shoe
    "Bag": ("n02769748", "n03709823", "n03958227", "n04026417"),  # backpack, mailbag, plastic bag, purse
    "Ankle boot": ("n03124043",),  # cowboy boot
}
ALIASES = {"tshirt": 0, "t-shirt": 0, "top": 0, "tshirt-top": 0, "boot": 9, "ankleboot": 9}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class FashionMNIST(DatasetSpec):
    name = "fmnist"
    title = "Fashion-MNIST"
    classes = tuple(slug(n) for n in FMNIST_CLASSES)
    sigma, quantile = 1.2, 0.85  # docs/method.md §3
    cpu_preset = "cpu"
    augment = SmallImageAugment(padding=2)  # docs/method.md §4: crop with zero padding 2, flip
    oe_exclude = (
        *FMNIST_CLASSES, "t-shirt", "top", "trousers", "ankle_boot", *(w for ws in IMAGENET_INSTANCES.values() for w in ws)
    )  # fmt: skip

    def load(self, cfg: Any, cls: str, seed: int) -> RawData:
        return load_fmnist(cfg, cls, seed)


DATASET = FashionMNIST()


def _resolve(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_ubyte_dir(root: Path) -> Path | None:
    for d in (root, root / "FashionMNIST" / "raw", root / "raw"):
        if all(_resolve(d, n) for pair in FILES.values() for n in pair):
            return d
    return None


def read_idx(path: Path) -> np.ndarray:
    """An idx file (magic 0x0801 labels, 0x0803 images); DataError on a wrong or truncated file."""
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable or truncated ({e})") from e
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] not in (1, 3):
        raise DataError(f"{path}: not an idx-ubyte file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    offset, expected = 4 + 4 * ndim, int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: truncated or padded ({len(data) - offset} bytes of data, expected {expected})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


@functools.lru_cache(maxsize=2)
def _read_split(directory: str, split: str, _mtime: float) -> tuple[np.ndarray, np.ndarray]:
    img_name, lab_name = FILES[split]
    d = Path(directory)
    images, labels = read_idx(_resolve(d, img_name)), read_idx(_resolve(d, lab_name))  # type: ignore[arg-type]
    if len(images) != len(labels) or images.ndim != 3:
        raise DataError(f"{d}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def load_split(cfg: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 28, 28] and int labels [N] of 'train' or 'test'."""
    root = Path(cfg.data.root)
    found = find_ubyte_dir(root)
    if found is not None:
        return _read_split(str(found), split, os.stat(found).st_mtime)
    try:
        from torchvision import datasets

        ds = datasets.FashionMNIST(str(root), train=split == "train", download=cfg.data.download)
    except (RuntimeError, OSError) as e:
        raise DataError(
            f"data.root {root}: no Fashion-MNIST files (looked for {FILES[split][0]}[.gz] in {root}, "
            f"{root}/FashionMNIST/raw; data.download={cfg.data.download}): {e}"
        ) from e
    return ds.data.numpy(), ds.targets.numpy()


def load_fmnist(cfg: Any, cls: str, seed: int) -> RawData:
    from fcdd.data.training_set import RawData, TensorStore, TestData, in_memory_metadata

    c = resolve_class(cls, FMNIST_CLASSES, "Fashion-MNIST", ALIASES)
    train_x, train_y = load_split(cfg, "train")
    test_x, test_y = load_split(cfg, "test")
    nominal = train_x[train_y == c]
    if len(nominal) == 0:
        raise DataError(f"{cfg.data.root}: empty class {slug(FMNIST_CLASSES[c])}, no training images")
    labels = (test_y != c).astype(np.int64)
    names = [slug(n) for n in FMNIST_CLASSES]
    store = TensorStore(test_x)
    test = TestData(
        images=store,
        labels=labels,
        defect_types=["good" if y == c else names[y] for y in test_y],
        paths=[f"fmnist:test:{i}" for i in range(len(test_y))],
        **in_memory_metadata(store),
    )
    return RawData(
        name="fmnist",
        cls=names[c],
        classes=names,
        channels=1,
        train=TensorStore(nominal),
        test=test,
        geometry={"input_size": 28, "resize": None, "crop": None},
        stats="gcn-minmax",
        stats_key=f"fmnist|{names[c]}|{Path(cfg.data.root).resolve()}",
        source_size=28,
    )
