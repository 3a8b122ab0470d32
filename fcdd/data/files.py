"""Image files on disk: listing, reading, and the resized copies MVTec-AD, folder and ImageNet-30
data are cached as (at ``data.stored_size``, in ``data.cache_dir``; the raw folder may be read-only).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcdd.data.geometry import resolve_input_hw, scaled_hw, size_hw, size_value, warn_aspect
from fcdd.data.image_io import image_size, is_image_file, read_image
from fcdd.data.names import slug
from fcdd.errors import DataError, shown_path


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
    warnings.warn(f"skipping {shown_path(path)}: {reason}", stacklevel=3)
    skipped.append({"path": shown_path(path), "reason": reason})


def not_an_image(path: str | Path) -> str | None:
    """Why an entry of a folder that is not a plain file is still worth listing as skipped (a folder
    named like an image, a symbolic link that leads nowhere); None for an ordinary file or folder."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "a symbolic link loop, not an image file"
        return "a broken symbolic link (its target is missing)"
    if p.is_dir() and is_image_file(p):
        return "a folder named like an image, not an image file"
    return None


def list_images(directory: str | Path, strict: bool, skipped: list[dict[str, str]]) -> list[str]:
    """Sorted image files directly inside ``directory``; other files are skipped (or fail)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: no such directory")
    out = []
    for p in sorted(d.iterdir()):
        if (reason := not_an_image(p)) is not None:
            skip_or_fail(str(p), reason, strict, skipped)
            continue
        if p.is_dir():
            continue
        if is_image_file(p):
            out.append(str(p))
        else:
            skip_or_fail(str(p), "not an image file (unknown extension)", strict, skipped)
    return out


def files_key(paths: list[str], *extra: Any) -> str:
    """Hash of paths, sizes and modification times: a cache is rebuilt when the raw data changes."""
    h = hashlib.sha1(repr(extra).encode())
    for p in paths:
        st = os.stat(p)
        h.update(os.fsencode(os.path.abspath(p)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())  # any name
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


def original_mask(paths: list[str], mask_paths: list[str | None], threshold: int, j: int) -> np.ndarray:
    """Image j's mask at its original resolution (all False without one); partial() it per test set."""
    mp = mask_paths[j]
    return open_mask(mp, threshold) if mp else np.zeros(image_size(paths[j]), dtype=bool)


def file_metadata(paths: list[str]) -> dict[str, Any]:
    """raw_image / original_size of TestData read from the original files (picklable partials)."""
    return {"raw_image": partial(_path_rgb, paths), "original_size": partial(_path_size, paths)}


def resized_geometry(cfg: Any, what: str, train: list[str], test: list[str]) -> dict[str, Any]:
    """MVTec/folder: images stored at ``stored`` (docs/method.md §4: 240; the short side of a rectangle, which
    keeps the input's aspect ratio), then resized to input_size at test time, no crop. ``stored``
    lets inference on a user's image take the same two steps. The input size comes from
    model.input_size and data.resize (fcdd.data.geometry); a resize that distorts images warns
    once for ``what``."""
    sizes = [image_size(p) for p in train + test]  # header reads, no decoding
    hw = resolve_input_hw(cfg, sizes[: len(train)])
    warn_aspect(what, train + test, sizes, hw, keep_aspect=cfg.data.resize == "keep_aspect")
    size = size_value(hw)
    stored = size_value(scaled_hw(hw, int(cfg.data.stored_size)))
    return {"input_size": size, "resize": size, "crop": None, "stored": stored}
