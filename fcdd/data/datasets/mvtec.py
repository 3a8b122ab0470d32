"""MVTec AD (and any folder in its layout): cfg.data.root holds category folders, the class is one.

Layout: <category>/train/good/*, <category>/test/<defect>/*, <category>/ground_truth/<defect>/
<stem>_mask.png (or <stem>.png). Images and masks are cached at cfg.data.stored_size in
cfg.data.cache_dir; full-resolution masks are read from the originals for pixel AUC. Masks are
optional per category: without ground_truth/ pixel metrics are off; defect images without a mask
are left out of the pixel metrics (a warning says how many).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcdd.data.augment import StoredImageAugment
from fcdd.data.files import cached_arrays, files_key, list_images, masks_cover, resized_geometry
from fcdd.data.geometry import size_hw
from fcdd.data.spec import DatasetSpec
from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.data.training_set import RawData

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
# docs/method.md §4: stored at 240 px, a random crop of 224 or a resize to 224, one of two colour
# jitters, and relative Gaussian noise 0.1 with probability 1/2 (the folder dataset trains alike).
STORED_AUGMENT = StoredImageAugment(
    jitters=((0.04, 0.04, 0.04, 0.04), (0.005, 0.0005, 0.0005, 0.0005)), noise=0.1, noise_p=0.5
)


class MVTecAD(DatasetSpec):
    name = "mvtec"
    title = "MVTec-AD"
    sigma, quantile = 12.0, 0.99  # docs/method.md §3
    has_maps = True
    any_size = True
    cpu_preset = "cpu_mvtec"
    augment = STORED_AUGMENT
    oe_exclude = MVTEC_CATEGORIES

    def class_names(self, cfg: Any) -> list[str]:
        return mvtec_class_names(cfg.data.root)

    def load(self, cfg: Any, cls: str, seed: int) -> RawData:
        return load_mvtec(cfg, cls, seed)


DATASET = MVTecAD()


def mvtec_class_names(root: str | Path) -> list[str]:
    """Category folders under root (those with train/good), sorted."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"data.root {r}: no such directory (expected folders of MVTec-AD categories)")
    names = sorted(p.name for p in r.iterdir() if (p / "train" / "good").is_dir())
    if not names:
        raise DataError(f"data.root {r}: no category folder with train/good (MVTec-AD layout)")
    return names


def _find_mask(gt_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask.png", f"{stem}.png"):
        if (gt_dir / name).is_file():
            return gt_dir / name
    return None


def load_mvtec(cfg: Any, cls: str, seed: int) -> RawData:
    from fcdd.data.training_set import RawData, TensorStore, file_test_data

    root = Path(cfg.data.root)
    names = mvtec_class_names(root)
    if cls not in names:
        raise DataError(f"unknown MVTec-AD category {cls!r} under {root}; known: {', '.join(names)}")
    base, strict, skipped = root / cls, cfg.data.strict, []
    train = list_images(base / "train" / "good", strict, skipped)
    if not train:
        raise DataError(f"{base / 'train' / 'good'}: empty class, no training images")
    test_dir = base / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: no such directory (MVTec-AD layout needs test/<defect>/)")
    paths, masks, labels, defects = [], [], [], []
    for d in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        files = list_images(d, strict, skipped)
        gt_dir = base / "ground_truth" / d.name
        for f in files:
            mask = None if d.name == "good" else _find_mask(gt_dir, Path(f).stem)
            paths.append(f)
            masks.append(str(mask) if mask else None)
            labels.append(int(d.name != "good"))
            defects.append(d.name)
        if gt_dir.is_dir():
            stems = {Path(f).stem for f in files}
            for m in sorted(gt_dir.iterdir()):
                stem = m.stem[: -len("_mask")] if m.stem.endswith("_mask") else m.stem
                if m.is_file() and stem not in stems:
                    raise DataError(f"{m}: mask without image (no {d}/{stem}.*)")
    if not paths:
        raise DataError(f"{test_dir}: no test images")
    if (base / "ground_truth").is_dir():
        has_masks, mask_note = masks_cover(f"{base / 'ground_truth'}", paths, labels, masks)
    else:  # a category without pixel annotations: image AUC on its own test split only
        has_masks, mask_note = False, f"{base}: no ground_truth/ folder: pixel metrics are off"
        warnings.warn(mask_note, stacklevel=2)
    geometry = resized_geometry(cfg, f"mvtec {cls}", train, paths)
    size = geometry["stored"]
    train_imgs, _ = cached_arrays(cfg.data.cache_dir, f"mvtec-{cls}-train", train, [None] * len(train), size)
    test_imgs, test_masks = cached_arrays(cfg.data.cache_dir, f"mvtec-{cls}-test", paths, masks, size)
    test = file_test_data(paths, labels, defects, test_imgs, test_masks, masks, 127, has_masks, mask_note)
    return RawData(
        name="mvtec",
        cls=cls,
        classes=names,
        channels=3,
        train=TensorStore(train_imgs),
        test=test,
        geometry=geometry,
        stats="gcn-minmax",
        stats_key=f"mvtec|{cls}|{root.resolve()}|files={files_key(train)}",
        source_size=min(size_hw(size)),  # OE images are cached square at about this side
        stored_size=size,
        train_paths=train,
        skipped=skipped,
    )
