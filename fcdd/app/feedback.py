"""Verdicts from the page, written as a folder dataset: a "false alarm" is a good image, a "missed
defect" a defective one with an optional mask. The labels folder reads as

    fcdd init --dataset folder --root LABELS --nominal good --anomalous defect --masks masks --mask-suffix _mask

(or add its sub-folders to an existing folder dataset's globs), so the next ``dvc add`` / ``dvc repro``
trains and evaluates on them. ``labels.csv`` keeps every verdict in order (one row each, appended).
The page refuses a labels folder inside a model's own folder; it never writes to the registry.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcdd.data.image_io import IMAGE_EXTENSIONS, read_image
from fcdd.errors import DataError, UsageError

VERDICTS = {"false_alarm": "good", "missed_defect": "defect"}  # verdict -> sub-folder
MASK_FOLDER, MASK_SUFFIX = "masks", "_mask"
FIELDS = ["time", "verdict", "image", "mask", "source", "model", "score", "p_value", "alpha", "decision"]
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "PPM": ".ppm"}


class FeedbackError(UsageError):
    """A verdict that cannot be recorded; the message says why."""


def check_labels_folder(labels: Path, model_folders: list[Path]) -> Path:
    """The labels folder, refused when it lies inside a model's own folder."""
    labels = labels.resolve()
    for folder in model_folders:
        folder = folder.resolve()
        if labels == folder or labels.is_relative_to(folder):
            raise FeedbackError(
                f"--labels {labels}: inside the model's folder {folder}; verdicts are never written "
                "there: choose another folder"
            )
    return labels


def record(
    labels: Path, source: Path, name: str, verdict: str, mask_png: bytes | None, context: dict[str, Any]
) -> dict[str, Any]:
    """Copy the image (its original bytes) into ``good/`` or ``defect/``, the mask (0/255 PNG, the
    image's size) into ``masks/``, and append a row to labels.csv. An image judged again moves to
    the new verdict's folder (the CSV keeps both rows)."""
    if verdict not in VERDICTS:
        raise FeedbackError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
    data = source.read_bytes()
    stem = f"{_safe_stem(name)}-{hashlib.sha256(data).hexdigest()[:10]}"
    image = read_image(data, name=name)  # size check against the mask; readable, as the scorer found
    mask = _mask(mask_png, (image.height, image.width), name) if verdict == "missed_defect" else None
    suffix = _suffix(name, data)
    with _locked(labels):
        replaced = []
        for sub in VERDICTS.values():
            old = labels / sub / f"{stem}{suffix}"
            if old.exists() and sub != VERDICTS[verdict]:
                old.unlink()
                replaced.append(f"{sub}/{old.name}")
        old_mask = labels / MASK_FOLDER / f"{stem}{MASK_SUFFIX}.png"
        if old_mask.exists() and mask is None:
            old_mask.unlink()  # a mask without its defect image would stop the folder dataset
            replaced.append(f"{MASK_FOLDER}/{old_mask.name}")
        image_rel = f"{VERDICTS[verdict]}/{stem}{suffix}"
        (labels / VERDICTS[verdict]).mkdir(parents=True, exist_ok=True)
        _write(labels / image_rel, data)
        mask_rel = ""
        if mask is not None:
            mask_rel = f"{MASK_FOLDER}/{stem}{MASK_SUFFIX}.png"
            (labels / MASK_FOLDER).mkdir(exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buf, format="PNG")
            _write(labels / mask_rel, buf.getvalue())
        row = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "verdict": verdict,
            "image": image_rel,
            "mask": mask_rel,
            "source": name,
            **{k: context.get(k, "") for k in FIELDS[5:]},
        }
        rows = _append(labels / "labels.csv", row)
    return {
        "image": image_rel,
        "mask": mask_rel or None,
        "row": rows,
        "replaced": replaced,
        "labels": str(labels),
    }


def _mask(data: bytes | None, size: tuple[int, int], name: str) -> np.ndarray | None:
    """The drawn or uploaded mask as bool (h, w); None for none or an empty one."""
    if not data:
        return None
    try:
        mask = np.asarray(read_image(data, name=f"mask of {name}").convert("L")) > 127
    except DataError as e:
        raise FeedbackError(str(e)) from None
    if mask.shape != size:
        raise FeedbackError(
            f"mask of {name}: {mask.shape[1]}x{mask.shape[0]} pixels, but the image is {size[1]}x{size[0]}"
        )
    return mask if mask.any() else None


def _suffix(name: str, data: bytes) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return suffix
    with Image.open(io.BytesIO(data)) as im:
        return FORMAT_SUFFIX.get(im.format or "", ".png")


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"
    return stem[:80]


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class _locked:
    """An exclusive lock on the labels folder (two pages, or two servers, may write to it)."""

    def __init__(self, labels: Path):
        labels.mkdir(parents=True, exist_ok=True)
        self.path = labels / ".labels.lock"

    def __enter__(self):
        self.handle = open(self.path, "a+")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _append(path: Path, row: dict[str, Any]) -> int:
    """Append one row (the header first in a new file); returns the number of rows now."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))
