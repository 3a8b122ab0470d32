"""A user's own images (cfg.data.folder), trained and tested as MVTec-AD is.

``nominal`` / ``anomalous`` / ``masks`` are directories or glob patterns relative to cfg.data.root.
Files matched by ``masks`` are never images. A mask belongs to the image with the same stem
(+ ``mask_suffix``), preferably in the same directory. The nominal images are split into train/test
with the run seed (``test_ratio`` to test); the defect type of an anomalous image is the name of its
folder (with parent names where two folders share that name).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcdd.data.datasets.mvtec import STORED_AUGMENT
from fcdd.data.files import (
    cached_arrays,
    files_key,
    masks_cover,
    not_an_image,
    resized_geometry,
    skip_or_fail,
)
from fcdd.data.geometry import size_hw
from fcdd.data.image_io import is_image_file
from fcdd.data.spec import DatasetSpec
from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.data.training_set import RawData


class Folder(DatasetSpec):
    name = "folder"
    title = "folder"
    sigma, quantile = 10.0, 0.97  # docs/method.md §3: σ 10 and q 0.97 where no dataset sets them
    has_maps = True
    any_size = True
    one_named_class = True
    cpu_preset = "cpu_mvtec"
    augment = STORED_AUGMENT

    def class_names(self, cfg: Any) -> list[str]:
        return [folder_class_name(cfg)]

    def load(self, cfg: Any, cls: str, seed: int) -> RawData:
        return load_folder(cfg, cls, seed)


DATASET = Folder()


def _expand(
    root: Path,
    entries: list[str],
    what: str,
    odd: list[tuple[str, str]] | None = None,
    missing_ok: bool = False,
) -> list[str]:
    """Files named by directories or glob patterns (relative to root); entries named like images that
    are not files (folders, symbolic link loops) go to ``odd`` as (path, reason)."""
    out: list[str] = []
    for entry in entries:
        hits = [Path(h) for h in sorted(glob.glob(str(root / entry), recursive=True))]
        found = [f for h in hits for f in (sorted(h.iterdir()) if h.is_dir() else [h])]
        files = [f for f in found if f.is_file()]
        if odd is not None:
            odd += [(str(f), reason) for f in found if (reason := not_an_image(f)) is not None]
        if not files and not missing_ok:
            raise DataError(f"data.folder.{what}: {entry!r} matches no file under {root}")
        out += [str(f) for f in files]
    return list(dict.fromkeys(out))  # keep order, drop duplicates


def _refuse_stem_twins(root: Path, images: list[str], what: str) -> None:
    """Two images with one stem in one folder (``x.jpg`` beside ``x.png``) are an image and its mask
    in every layout seen (magnetic tiles): taken both as images, masks would be trained or tested on
    as images, a wrong result nothing else would reveal."""
    first: dict[tuple[Path, str], str] = {}
    twins = []
    for f in images:
        key = (Path(f).parent, Path(f).stem)
        if key in first:
            twins.append((first[key], f))
        else:
            first[key] = f
    if twins:
        a, b = twins[0]
        folder = Path(a).parent
        where = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
        raise DataError(
            f"data.folder.{what}: {a} and {b} share a stem ({len(twins)} such pairs): masks among the "
            f"images? name the images by a pattern (e.g. '{where}/*{Path(a).suffix}') and the masks "
            "by data.folder.masks"
        )


def _mask_index(mask_files: list[str], suffix: str) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for m in mask_files:
        stem = Path(m).stem
        if suffix and stem.endswith(suffix):
            stem = stem[: -len(suffix)]
        index.setdefault(stem, []).append(m)
    return index


def _find_mask(image: str, index: dict[str, list[str]]) -> str | None:
    candidates = index.get(Path(image).stem, [])
    same_dir = [m for m in candidates if Path(m).parent == Path(image).parent]
    if len(same_dir) == 1 or len(candidates) == 1:
        return (same_dir or candidates)[0]
    if candidates:
        raise DataError(f"{image}: several masks match its stem ({', '.join(candidates)})")
    return None


def defect_type_names(folders: list[str]) -> dict[str, str]:
    """Defect type of each anomalous folder (relative to the root): its last folder name, or as
    many trailing names as it takes to tell it from every other folder (``MT_Crack/Imgs`` beside
    ``MT_Fray/Imgs``). The root itself (images directly in it) is "anomalous"."""
    parts = {f: Path(f).parts or ("anomalous",) for f in set(folders)}  # Path(".").parts == ()
    names = {}
    for f, own in parts.items():
        k = 1
        while k < len(own) and any(p[-k:] == own[-k:] for g, p in parts.items() if g != f):
            k += 1
        names[f] = "/".join(own[-k:])
    return names


def folder_class_name(cfg: Any) -> str:
    if len(cfg.data.classes) > 1:
        raise DataError(f"a folder dataset has one class; data.classes lists {cfg.data.classes}")
    return cfg.data.classes[0] if cfg.data.classes else "folder"


def _images_of(cfg: Any, root: Path, what: str, mask_set: set[str], skipped: list[dict]) -> list[str]:
    """The images ``data.folder.<what>`` names: files matched by ``masks`` left out, other files that
    are not images skipped (or refused with ``data.strict``)."""
    entries, out, odd = getattr(cfg.data.folder, what), [], []
    for entry in entries:
        files = _expand(root, [entry], what, odd)
        images = [f for f in files if is_image_file(f)]
        if mask_set and images and all(f in mask_set for f in images):
            # masks beside their images, named by the images' folder: every image became a mask
            raise DataError(
                f"data.folder.{what}: every image of {entry!r} is also matched by data.folder.masks "
                f"{cfg.data.folder.masks}, so none is left as an image (e.g. {images[0]}); where masks sit "
                f"beside their images, give masks as a pattern ('{entry.rstrip('/')}/*.png') or a mask_suffix"
            )
        for f in files:
            if f in mask_set:
                continue
            if is_image_file(f):
                out.append(f)
            else:
                skip_or_fail(f, "not an image file (unknown extension)", cfg.data.strict, skipped)
    for f, reason in dict.fromkeys(odd):  # entries may overlap
        skip_or_fail(f, reason, cfg.data.strict, skipped)
    out = list(dict.fromkeys(out))
    _refuse_stem_twins(root, out, what)
    return out


def nominal_images(cfg: Any) -> list[str]:
    """The nominal images training would use, for ``fcdd init``: files matched by ``masks`` left out
    and images beside their masks refused, as in training (mask entries that match nothing yet are
    not an error here: init may run before the defect images are collected)."""
    root = Path(cfg.data.root)
    masks = set(_expand(root, cfg.data.folder.masks, "masks", missing_ok=True))
    return _images_of(cfg, root, "nominal", masks, [])


def _find_files(cfg: Any, root: Path) -> tuple[list[str], list[str], list[str], dict, list[dict]]:
    """(nominal images, anomalous images, mask files, masks by stem, skipped files) under root."""
    fc = cfg.data.folder
    skipped: list[dict[str, str]] = []
    mask_files = _expand(root, fc.masks, "masks") if fc.masks else []
    mask_set = set(mask_files)
    nominal = _images_of(cfg, root, "nominal", mask_set, skipped)
    nominal_set = set(nominal)
    anomalous = [f for f in _images_of(cfg, root, "anomalous", mask_set, skipped) if f not in nominal_set]
    if len(nominal) < 2:
        raise DataError(
            f"data.folder.nominal under {root}: found {len(nominal)} nominal images, need at least 2"
        )
    index = _mask_index(mask_files, fc.mask_suffix)
    used = {m for f in nominal + anomalous if (m := _find_mask(f, index))}
    orphans = sorted(mask_set - used)
    if orphans:
        raise DataError(
            f"{orphans[0]}: mask without image (no image with stem {Path(orphans[0]).stem!r}); {len(orphans)} such masks"
        )
    return nominal, anomalous, mask_files, index, skipped


def load_folder(cfg: Any, cls: str, seed: int) -> RawData:
    from fcdd.data.training_set import RawData, TensorStore, file_test_data

    fc, root = cfg.data.folder, Path(cfg.data.root)
    name = folder_class_name(cfg)
    if cls != name:
        raise DataError(f"unknown folder class {cls!r}; known classes: {name}")
    if not root.is_dir():
        raise DataError(f"data.root {root}: no such directory")
    if not fc.nominal:
        raise DataError("data.folder.nominal: give at least one directory or glob pattern of nominal images")
    nominal, anomalous, mask_files, index, skipped = _find_files(cfg, root)

    order = np.random.default_rng(seed).permutation(len(nominal))
    n_test = max(1, round(fc.test_ratio * len(nominal)))
    test_nominal = [nominal[i] for i in sorted(order[:n_test])]
    train = [nominal[i] for i in sorted(order[n_test:])]
    test_paths = test_nominal + anomalous
    test_masks = [None] * len(test_nominal) + [_find_mask(f, index) for f in anomalous]
    labels = [0] * len(test_nominal) + [1] * len(anomalous)
    if mask_files:
        has_masks, mask_note = masks_cover(f"data.folder.masks under {root}", test_paths, labels, test_masks)
    else:
        has_masks, mask_note = (
            False,
            "data.folder.masks is empty: no pixel ground truth, pixel metrics are off",
        )
    geometry = resized_geometry(cfg, f"folder {name}", train, test_paths)
    size = geometry["stored"]
    train_imgs, _ = cached_arrays(cfg.data.cache_dir, f"{name}-train", train, [None] * len(train), size)
    test_imgs, test_m = cached_arrays(
        cfg.data.cache_dir, f"{name}-test", test_paths, test_masks, size, fc.mask_threshold
    )
    folders = [Path(f).parent.relative_to(root).as_posix() for f in anomalous]
    names = defect_type_names(folders)
    defect = ["good"] * len(test_nominal) + [names[d] for d in folders]
    test = file_test_data(
        test_paths, labels, defect, test_imgs, test_m, test_masks, fc.mask_threshold, has_masks, mask_note
    )
    key = f"folder|{name}|{root.resolve()}|seed={seed}|files={files_key(train)}"
    return RawData(
        name="folder",
        cls=name,
        classes=[name],
        channels=3,
        train=TensorStore(train_imgs),
        test=test,
        geometry=geometry,
        stats="gcn-minmax",
        stats_key=key,
        source_size=min(size_hw(size)),  # OE images are cached square at about this side
        stored_size=size,
        train_paths=train,
        skipped=skipped,
    )
