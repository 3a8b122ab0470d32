"""Outlier Exposure (docs/method.md §4): random images of an auxiliary set, never of the test classes.

Sources: ``cifar100:ROOT`` (torchvision's CIFAR-100 python layout, train split), ``emnist:ROOT``
(torchvision EMNIST, split 'letters', train), or any folder (searched recursively) or zip of images.
Images are decoded once, resized (directly, like the original) to a modest square cache side and
kept as one uint8 array, so drawing costs a resize only and the object pickles for DataLoader workers.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from fcdd.data.image_io import IMAGE_EXTENSIONS, is_image_file, read_image, to_8bit
from fcdd.errors import DataError

MAX_CACHE_SIDE = 256  # decoded OE images are kept at most at max(size, min(2·size, 256)) px

_WNID = re.compile(r"^(n\d{8})(?:_(.+))?$")


def normalise_name(name: str) -> str:
    """'American alligator', 'american_alligator' and 'American-Alligator' compare equal."""
    return re.sub(r"[\s\-/]+", "_", name.strip().lower())


def name_labels(relative_path: str) -> set[str]:
    """Every name a file could be a class of: its folders, its stem, and for `<wnid>_<name>` both parts."""
    parts = Path(relative_path).parts
    stem = Path(relative_path).stem
    labels = {normalise_name(p) for p in parts[:-1]} | {normalise_name(stem)}
    match = _WNID.match(stem)
    if match:
        labels.add(match.group(1).lower())
        if match.group(2):
            labels.add(normalise_name(match.group(2)))
    return labels


def is_excluded(relative_path: str, exclude: set[str]) -> bool:
    return bool(exclude) and not name_labels(relative_path).isdisjoint(exclude)


def cache_side(size: int) -> int:
    return max(size, min(2 * size, MAX_CACHE_SIDE))


def _seeded_subset(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``limit`` of ``count`` items (all when limit is None)."""
    if limit is None or limit >= count:
        return np.arange(count)
    if limit < 1:
        raise DataError(f"anomalies.oe_limit: must be at least 1, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _to_pixels(image: Image.Image, channels: int, side: int) -> np.ndarray:
    image = to_8bit(image).convert("L" if channels == 1 else "RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


class OutlierExposure:
    """Draws a random auxiliary image, in the nominal image's mode and size; its mask is all ones."""

    def __init__(
        self,
        images: np.ndarray,
        names: list[str],
        source: str = "",
        pool: int | None = None,
        excluded: int = 0,
    ) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) == 0:
            raise DataError(f"OE source {source}: no usable images")
        if len(names) != len(images):
            raise ValueError(f"OE source {source}: {len(names)} names for {len(images)} images")
        self.images = images  # (N, S, S, C) uint8
        self.names = names  # relative path or 'class/index' per image, for reports and exclusion checks
        self.source = source
        self.pool = len(images) if pool is None else pool  # images in the source before exclusion
        self.excluded = excluded  # of them, images of the test classes (never drawn)
        self.chosen = ""  # how the source was chosen (fcdd/data/oe_pool.py), for the one line

    def summary(self) -> dict:
        """What data_summary.json and the loading line say about the pool."""
        return {"source": self.source, "chosen": self.chosen, "pool": self.pool, "excluded": self.excluded}

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, rng) -> tuple[int, Image.Image]:
        index = int(rng.integers(len(self.images)))
        pixels = self.images[index]
        return index, Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)

    def __call__(self, image: Image.Image, rng) -> tuple[Image.Image, np.ndarray]:
        _, outlier = self.draw(rng)
        if outlier.mode != image.mode:
            outlier = outlier.convert(image.mode)
        if outlier.size != image.size:
            outlier = outlier.resize(image.size, Image.BILINEAR)
        return outlier, np.ones((image.height, image.width), dtype=bool)

    @classmethod
    def from_source(
        cls,
        source: str,
        channels: int,
        size: int,
        seed: int,
        limit: int | None = None,
        exclude: Iterable[str] = (),
        reject_excluded: bool | frozenset[str] = False,
        download: bool = False,
        strict: bool = False,
    ) -> OutlierExposure:
        """Loads ``source`` (see the module docstring).

        ``exclude``: class names or wnids never to use (matched against folder names, file stems and
        the parts of `<wnid>_<name>` stems). ``reject_excluded``: a source holding any such image is an
        error instead of being filtered (CIFAR-10 must not be its own OE source).
        """
        if channels not in (1, 3):
            raise DataError(f"OE: channels must be 1 or 3, got {channels}")
        if size < 1:
            raise DataError(f"OE: size must be positive, got {size}")
        excluded = {normalise_name(e) for e in exclude}
        side = cache_side(size)
        kind, _, root = source.partition(":")
        if kind in ("cifar100", "emnist") and root:
            load = _load_cifar100 if kind == "cifar100" else _load_emnist
            pixels, labels = load(Path(root), download)
            names = [f"{label}/{i}" for i, label in enumerate(labels)]
            allowed = _allowed(names, excluded, reject_excluded, source)
            keep = allowed[_seeded_subset(len(allowed), limit, seed)]
            pixels = _convert_array(pixels[keep], channels, side)
            return cls(pixels, [names[i] for i in keep], source, len(names), len(names) - len(allowed))
        images, names, pool, dropped = _load_files(
            Path(source), channels, side, seed, limit, excluded, reject_excluded, strict
        )
        return cls(images, names, source, pool, dropped)


def _allowed(names: list[str], excluded: set[str], reject: bool | frozenset[str], source: str) -> np.ndarray:
    """Indices of the names outside the excluded classes; DataError when none is left, or when any
    name is of a class in ``reject`` (True: any excluded class; a set: only those, e.g. a dataset's
    own class names, while the ImageNet instances of its classes are filtered out)."""
    hits = [is_excluded(n, excluded) for n in names]
    refused = excluded if reject is True else set(reject or ())
    own = [n for n, hit in zip(names, hits, strict=True) if hit and refused and is_excluded(n, refused)]
    if own:
        example = own[0]
        raise DataError(
            f"OE source {source}: holds images of the test classes (e.g. {example}); "
            "a dataset cannot be its own outlier exposure (use e.g. cifar100:ROOT)"
        )
    keep = np.flatnonzero(~np.asarray(hits, dtype=bool))
    if len(keep) == 0:
        raise DataError(f"OE source {source}: all {len(names)} images belong to excluded (test) classes")
    return keep


def _convert_array(pixels: np.ndarray, channels: int, side: int) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3) uint8 -> (N, s, s, channels), s = min(side, H): never upscales."""
    pixels = pixels[..., None] if pixels.ndim == 3 else pixels
    square_small = pixels.shape[1] == pixels.shape[2] <= side
    if square_small and pixels.shape[-1] == channels:
        return np.ascontiguousarray(pixels)
    if square_small and channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    target = min(side, pixels.shape[1])
    return np.stack(
        [
            _to_pixels(Image.fromarray(p.squeeze(-1) if p.shape[-1] == 1 else p), channels, target)
            for p in pixels
        ]
    )


def _load_files(
    path: Path,
    channels: int,
    side: int,
    seed: int,
    limit: int | None,
    excluded: set[str],
    reject: bool | frozenset[str],
    strict: bool,
) -> tuple[np.ndarray, list[str], int, int]:
    """(images, their names, images in the source, of them excluded as test classes)."""
    if not path.exists():
        raise DataError(f"OE source {path}: no such folder or zip file")
    if path.is_dir():
        files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if is_image_file(p))

        def read(name: str) -> bytes:
            return (path / name).read_bytes()

        archive = None
    elif zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        files = sorted(n for n in archive.namelist() if is_image_file(n) and not n.endswith("/"))
        read = archive.read
    else:
        raise DataError(f"OE source {path}: neither a folder nor a zip file")
    try:
        if not files:
            raise DataError(f"OE source {path}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        allowed = [files[i] for i in _allowed(files, excluded, reject, str(path))]
        chosen = [allowed[i] for i in _seeded_subset(len(allowed), limit, seed)]
        images, names = [], []
        for name in chosen:
            try:
                # draft: a JPEG much larger than the cache side decodes at a reduced scale
                mode = "L" if channels == 1 else "RGB"
                image = read_image(read(name), f"OE source {path}: {name}", draft=(mode, (side, side)))
                images.append(_to_pixels(image, channels, side))
                names.append(name)
            except (DataError, OSError) as e:
                if strict:
                    raise DataError(str(e)) from e
                warnings.warn(str(e), stacklevel=2)
    finally:
        if archive is not None:
            archive.close()
    if not images:
        raise DataError(f"OE source {path}: none of the {len(chosen)} chosen images could be read")
    return np.stack(images), names, len(files), len(files) - len(allowed)


def _load_cifar100(root: Path, download: bool) -> tuple[np.ndarray, list[str]]:
    """CIFAR-100 train images (N, 32, 32, 3) and their fine class names, from torchvision's layout."""
    folder = root / "cifar-100-python"
    if not (folder / "train").is_file() and download:
        from torchvision.datasets import CIFAR100

        CIFAR100(str(root), train=True, download=True)
    if not (folder / "train").is_file() or not (folder / "meta").is_file():
        raise DataError(
            f"OE source cifar100:{root}: {folder}/train and meta not found (set data.download: true)"
        )
    try:
        with open(folder / "train", "rb") as f:
            train = pickle.load(f, encoding="latin1")
        with open(folder / "meta", "rb") as f:
            classes = pickle.load(f, encoding="latin1")["fine_label_names"]
        pixels = np.asarray(train["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(pixels), [classes[i] for i in train["fine_labels"]]
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise DataError(f"OE source cifar100:{root}: {folder} is not a CIFAR-100 python archive ({e})") from e


def _load_emnist(root: Path, download: bool) -> tuple[np.ndarray, list[str]]:
    """EMNIST letters train images (N, 28, 28), upright, and their letters."""
    from torchvision.datasets import EMNIST

    try:
        data = EMNIST(str(root), split="letters", train=True, download=download)
    except RuntimeError as e:
        raise DataError(
            f"OE source emnist:{root}: EMNIST letters not found ({e}; set data.download: true)"
        ) from e
    pixels = data.data.numpy().transpose(0, 2, 1)  # the raw files store letters transposed
    return np.ascontiguousarray(pixels), [data.classes[int(t)] for t in data.targets]
