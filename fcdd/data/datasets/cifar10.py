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


def _wnids(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# ImageNet-1k classes that are instances of a CIFAR-10 class, by wnid: an ImageNet-derived Outlier
# Exposure pool must not show them (docs/method.md §4: OE is disjoint from the test anomalies, and
# one-vs-rest tests every other class). Names do not match (airliner, tabby, beagle, ...), wnids do.
# As CIFAR-10 defines its classes: automobile = cars, vans, SUVs; truck = big trucks only (neither
# holds pickups); birds, dogs and domestic cats are ImageNet's contiguous blocks of them (class
# indices 7-24, 80-100 and 127-146; 151-268; 281-285). ImageNet-1k has no deer class.
IMAGENET_INSTANCES = {
    "airplane": _wnids("n02690373 n04552348"),  # airliner, warplane
    # beach wagon, cab, convertible, jeep, limousine, minivan, Model T, racer, sports car, police van, ambulance
    "automobile": _wnids(
        "n02814533 n02930766 n03100240 n03594945 n03670208 n03770679 n03777568 n04037443 n04285008 "
        "n03977966 n02701002"
    ),
    "bird": _wnids(
        "n01514668 n01514859 n01518878 n01530575 n01531178 n01532829 n01534433 n01537544 n01558993 "
        "n01560419 n01580077 n01582220 n01592084 n01601694 n01608432 n01614925 n01616318 n01622779 "
        "n01795545 n01796340 n01797886 n01798484 n01806143 n01806567 n01807496 n01817953 n01818515 "
        "n01819313 n01820546 n01824575 n01828970 n01829413 n01833805 n01843065 n01843383 n01847000 "
        "n01855032 n01855672 n01860187 n02002556 n02002724 n02006656 n02007558 n02009229 n02009912 "
        "n02011460 n02012849 n02013706 n02017213 n02018207 n02018795 n02025239 n02027492 n02028035 "
        "n02033041 n02037110 n02051845 n02056570 n02058221"
    ),
    "cat": _wnids(
        "n02123045 n02123159 n02123394 n02123597 n02124075"
    ),  # tabby, tiger cat, Persian, Siamese, Egyptian
    "deer": (),
    "dog": _wnids(
        "n02085620 n02085782 n02085936 n02086079 n02086240 n02086646 n02086910 n02087046 n02087394 "
        "n02088094 n02088238 n02088364 n02088466 n02088632 n02089078 n02089867 n02089973 n02090379 "
        "n02090622 n02090721 n02091032 n02091134 n02091244 n02091467 n02091635 n02091831 n02092002 "
        "n02092339 n02093256 n02093428 n02093647 n02093754 n02093859 n02093991 n02094114 n02094258 "
        "n02094433 n02095314 n02095570 n02095889 n02096051 n02096177 n02096294 n02096437 n02096585 "
        "n02097047 n02097130 n02097209 n02097298 n02097474 n02097658 n02098105 n02098286 n02098413 "
        "n02099267 n02099429 n02099601 n02099712 n02099849 n02100236 n02100583 n02100735 n02100877 "
        "n02101006 n02101388 n02101556 n02102040 n02102177 n02102318 n02102480 n02102973 n02104029 "
        "n02104365 n02105056 n02105162 n02105251 n02105412 n02105505 n02105641 n02105855 n02106030 "
        "n02106166 n02106382 n02106550 n02106662 n02107142 n02107312 n02107574 n02107683 n02107908 "
        "n02108000 n02108089 n02108422 n02108551 n02108915 n02109047 n02109525 n02109961 n02110063 "
        "n02110185 n02110341 n02110627 n02110806 n02110958 n02111129 n02111277 n02111500 n02111889 "
        "n02112018 n02112137 n02112350 n02112706 n02113023 n02113186 n02113624 n02113712 n02113799 "
        "n02113978"
    ),
    "frog": _wnids("n01641577 n01644373 n01644900"),  # bullfrog, tree frog, tailed frog
    "horse": _wnids("n02389026"),  # sorrel
    # aircraft carrier, container ship, fireboat, liner, pirate ship, schooner, speedboat, yawl, lifeboat,
    # catamaran, trimaran, submarine, gondola
    "ship": _wnids(
        "n02687172 n03095699 n03344393 n03673027 n03947888 n04147183 n04273569 n04612504 n03662601 "
        "n02981792 n04483307 n04347754 n03447447"
    ),
    # garbage truck, moving van, tow truck, trailer truck, fire engine
    "truck": _wnids("n03417042 n03796401 n04461696 n04467665 n03345487"),
}


class CIFAR10(DatasetSpec):
    name = "cifar10"
    title = "CIFAR-10"
    classes = tuple(CIFAR10_CLASSES)
    sigma, quantile = 1.2, 0.85  # docs/method.md §3
    cpu_preset = "cpu"
    # docs/method.md §4: colour jitter 0.01, crop with zero padding 4, flip, Gaussian noise 0.001
    augment = SmallImageAugment(padding=4, jitter=(0.01, 0.01, 0.01, 0.01), noise=0.001)
    oe_exclude = (*CIFAR10_CLASSES, *(w for ws in IMAGENET_INSTANCES.values() for w in ws))
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
