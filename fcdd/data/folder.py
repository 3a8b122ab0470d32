"""Image-file helpers (reading, listing, caching at the stored size) and the user-folder dataset.

Folder dataset (cfg.data.folder): ``nominal`` / ``anomalous`` / ``masks`` are directories or glob
patterns relative to cfg.data.root. Files matched by ``masks`` are never images. A mask belongs to
the image with the same stem (+ ``mask_suffix``), preferably in the same directory. The nominal
images are split into train/test with the run seed (``test_ratio`` to test); the defect type of an
anomalous image is the name of its folder (with parent names where two folders share that name).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcdd.errors import DataError
from fcdd.data.geometry import resolve_input_hw, scaled_hw, size_hw, size_value, warn_aspect
from fcdd.data.image_io import image_size, read_image
from fcdd.data.training_set import RawData, TensorStore, TestData, slug

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def open_image(path: str | Path) -> Image.Image:
    """Fully decoded 8-bit "L"/"RGB" image (fcdd.data.image_io rules); DataError naming the file."""
    return read_image(path)


def open_mask(path: str | Path, threshold: int = 127) -> np.ndarray:
    """bool (h, w): pixel > threshold on the 8-bit scale (16-bit masks scale first; colour masks
    are converted to grey)."""
    return np.asarray(read_image(path).convert("L")) > threshold


def rgb_array(path: str | Path) -> np.ndarray:
    return np.asarray(open_image(path).convert("RGB"))


def skip_or_fail(path: str, reason: str, strict: bool, skipped: list[dict[str, str]]) -> None:
    """A file that is not an image: DataError in strict mode, else a warning and a summary entry."""
    if strict:
        raise DataError(f"{path}: {reason} (data.strict is on)")
    warnings.warn(f"skipping {path}: {reason}", stacklevel=3)
    skipped.append({"path": path, "reason": reason})


def list_images(directory: str | Path, strict: bool, skipped: list[dict[str, str]]) -> list[str]:
    """Sorted image files directly inside ``directory``; other files are skipped (or fail)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: no such directory")
    out = []
    for p in sorted(d.iterdir()):
        if p.is_dir():
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(str(p))
        else:
            skip_or_fail(str(p), "not an image file (unknown extension)", strict, skipped)
    return out


def files_key(paths: list[str], *extra: Any) -> str:
    """Hash of paths, sizes and modification times: a cache is rebuilt when the raw data changes."""
    h = hashlib.sha1(repr(extra).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached_arrays(
    cache_dir: str | Path,
    name: str,
    images: list[str],
    masks: list[str | None],
    size: int | list[int],
    threshold: int = 127,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [N, H, W, 3], antialiased) and masks (bool [N, H, W], nearest) resized to
    ``size`` (an int: square, or [H, W]) and cached as .npy in cache_dir (the raw folder may be
    read-only)."""
    h, w = size_hw(size)
    key = files_key(images + [m for m in masks if m], size, threshold, masks)
    folder = Path(cache_dir) / "images" / f"{slug(name)}-{h if h == w else f'{h}x{w}'}-{key}"
    img_file, mask_file = folder / "images.npy", folder / "masks.npy"
    if img_file.is_file() and mask_file.is_file():
        return np.load(img_file, mmap_mode="r"), np.load(mask_file, mmap_mode="r")
    imgs = np.zeros((len(images), h, w, 3), dtype=np.uint8)
    msks = np.zeros((len(images), h, w), dtype=bool)
    for n, (path, mask_path) in enumerate(zip(images, masks, strict=True)):
        im = open_image(path).convert("RGB")
        imgs[n] = np.asarray(im.resize((w, h), Image.BILINEAR, reducing_gap=None))
        if mask_path:
            m = open_mask(mask_path, threshold)
            if m.shape != (im.height, im.width):
                raise DataError(
                    f"{mask_path}: mask is {m.shape[1]}x{m.shape[0]} but its image {path} is {im.width}x{im.height}"
                )
            msks[n] = np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
    folder.mkdir(parents=True, exist_ok=True)
    for f, a in ((img_file, imgs), (mask_file, msks)):
        tmp = f.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, a)
        os.replace(tmp, f)
    (folder / "files.json").write_text(json.dumps({"images": images, "masks": masks}, indent=1))
    return imgs, msks


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
        full_mask=partial(_full_mask, paths, mask_paths, threshold) if has_masks else None,
        mask_known=np.asarray(known, dtype=bool) if has_masks else None,
        mask_note=None if has_masks else mask_note,
    )


def masks_cover(
    where: str, paths: list[str], labels: list[int], mask_paths: list[str | None]
) -> tuple[bool, str | None]:
    """(has_masks, why not) for a test split: pixel metrics need a mask for at least one anomalous
    image; anomalous images without one are left out of them (one warning says how many)."""
    unmasked = [p for p, y, m in zip(paths, labels, mask_paths, strict=True) if y and m is None]
    anomalous = sum(int(y) for y in labels)
    if not anomalous:
        return False, None
    if len(unmasked) == anomalous:
        note = f"{where}: none of the {anomalous} anomalous test images has a mask: pixel metrics are off"
        warnings.warn(note, stacklevel=3)
        return False, note
    if unmasked:
        warnings.warn(
            f"{where}: {len(unmasked)} of {anomalous} anomalous test images have no mask (e.g. {unmasked[0]}): "
            f"pixel metrics use the {anomalous - len(unmasked)} that have one and the nominal images",
            stacklevel=3,
        )
    return True, None


def _path_rgb(paths: list[str], j: int) -> np.ndarray:
    return rgb_array(paths[j])


def _path_size(paths: list[str], j: int) -> tuple[int, int]:
    return image_size(paths[j])


def _full_mask(paths: list[str], mask_paths: list[str | None], threshold: int, j: int) -> np.ndarray:
    mp = mask_paths[j]
    return open_mask(mp, threshold) if mp else np.zeros(image_size(paths[j]), dtype=bool)


def file_metadata(paths: list[str]) -> dict[str, Any]:
    """raw_image / original_size of TestData read from the original files (picklable partials)."""
    return {"raw_image": partial(_path_rgb, paths), "original_size": partial(_path_size, paths)}


def _expand(root: Path, entries: list[str], what: str) -> list[str]:
    """Files named by directories or glob patterns (relative to root)."""
    out: list[str] = []
    for entry in entries:
        hits = [Path(h) for h in sorted(glob.glob(str(root / entry), recursive=True))]
        files = [f for h in hits for f in (sorted(h.iterdir()) if h.is_dir() else [h]) if f.is_file()]
        if not files:
            raise DataError(f"data.folder.{what}: {entry!r} matches no file under {root}")
        out += [str(f) for f in files]
    return list(dict.fromkeys(out))  # keep order, drop duplicates


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


def load_folder(cfg: Any, cls: str, seed: int) -> RawData:
    fc, root = cfg.data.folder, Path(cfg.data.root)
    name = folder_class_name(cfg)
    if cls != name:
        raise DataError(f"unknown folder class {cls!r}; known classes: {name}")
    if not root.is_dir():
        raise DataError(f"data.root {root}: no such directory")
    if not fc.nominal:
        raise DataError("data.folder.nominal: give at least one directory or glob pattern of nominal images")
    skipped: list[dict[str, str]] = []
    mask_files = _expand(root, fc.masks, "masks") if fc.masks else []
    mask_set = set(mask_files)

    def images_of(entries: list[str], what: str) -> list[str]:
        out = []
        for f in _expand(root, entries, what):
            if f in mask_set:
                continue
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                out.append(f)
            else:
                skip_or_fail(f, "not an image file (unknown extension)", cfg.data.strict, skipped)
        return out

    nominal = images_of(fc.nominal, "nominal")
    nominal_set = set(nominal)
    anomalous = [f for f in images_of(fc.anomalous, "anomalous") if f not in nominal_set]
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


def resized_geometry(cfg: Any, what: str, train: list[str], test: list[str]) -> dict[str, Any]:
    """MVTec/folder: images stored at ``stored`` (docs/method.md §4: 240; the short side of a rectangle, which
    keeps the input's aspect ratio), then resized to input_size at test time, no crop. ``stored``
    lets inference on a user's image take the same two steps. The input size comes from
    model.input_size and data.resize (fcdd.data.geometry); a resize that distorts images warns
    once for ``what``."""
    sizes = [image_size(p) for p in train + test]  # header reads, no decoding
    hw = resolve_input_hw(cfg, sizes[: len(train)])
    warn_aspect(what, train + test, sizes, hw)
    size = size_value(hw)
    stored = size_value(scaled_hw(hw, int(cfg.data.stored_size)))
    return {"input_size": size, "resize": size, "crop": None, "stored": stored}
