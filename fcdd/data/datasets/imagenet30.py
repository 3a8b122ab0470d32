"""ImageNet-30 one-vs-rest (docs/method.md §4) from an ImageNet-style folder.

cfg.data.root holds ``train/<dir>/`` and ``val/<dir>/`` where <dir> is a class's WordNet id
(n12267677) or its name in any spelling ('American_alligator', 'american-alligator'). Training
uses the nominal class's train images; the test set is the val images of all 30 classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcdd.data.augment import ResizeCropAugment
from fcdd.data.files import file_metadata, list_images, open_image
from fcdd.data.geometry import size_hw, size_value
from fcdd.data.names import resolve_class, slug
from fcdd.data.spec import DatasetSpec
from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.data.training_set import RawData

# (name, ImageNet-1k WordNet id), in the order of Hendrycks et al. (2019).
IMAGENET30 = [
    ("acorn", "n12267677"), ("airliner", "n02690373"), ("ambulance", "n02701002"),
    ("American alligator", "n01698640"), ("banjo", "n02787622"), ("barn", "n02793495"),
    ("bikini", "n02837789"), ("digital clock", "n03196217"), ("dragonfly", "n02268443"),
    ("dumbbell", "n03255030"), ("forklift", "n03384352"), ("goblet", "n03443371"),
    ("grand piano", "n03452741"), ("hotdog", "n07697537"), ("hourglass", "n03544143"),
    ("manhole cover", "n03717622"), ("mosque", "n03788195"), ("nail", "n03804744"),
    ("parking meter", "n03891332"), ("pillow", "n03938244"), ("revolver", "n04086273"),
    ("dial telephone", "n03187595"), ("schooner", "n04147183"), ("snowmobile", "n04252077"),
    ("soccer ball", "n04254680"), ("stingray", "n01498041"), ("strawberry", "n07745940"),
    ("tank", "n04389033"), ("toaster", "n04442312"), ("volcano", "n09472597"),
]  # fmt: skip
NAMES = [slug(n) for n, _ in IMAGENET30]
WNID_ALIASES = {w: i for i, (_, w) in enumerate(IMAGENET30)}


class ImageNet30(DatasetSpec):
    name = "imagenet30"
    title = "ImageNet-30"
    classes = tuple(NAMES)
    sigma, quantile = 8.0, 0.97  # docs/method.md §3
    # docs/method.md §4: resize (short side 256 for 224), colour jitter 0.01, flip, crop, noise 0.001
    augment = ResizeCropAugment(jitter=(0.01, 0.01, 0.01, 0.01), noise=0.001)
    oe_exclude = (*(n for n, _ in IMAGENET30), *(w for _, w in IMAGENET30))  # names and wnids

    def load(self, cfg: Any, cls: str, seed: int) -> RawData:
        return load_imagenet30(cfg, cls, seed)


DATASET = ImageNet30()


def class_dir(split_dir: Path, k: int) -> Path | None:
    """The folder of class k: named by its wnid or (any spelling of) its name."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such directory (ImageNet layout root/train|val/<class>/)")
    wanted = {IMAGENET30[k][1], NAMES[k]}
    for d in sorted(split_dir.iterdir()):
        if d.is_dir() and (d.name in wanted or slug(d.name) in wanted):
            return d
    return None


def load_imagenet30(cfg: Any, cls: str, seed: int) -> RawData:
    from fcdd.data.training_set import FileStore, RawData, TestData

    c = resolve_class(cls, NAMES, "ImageNet-30", WNID_ALIASES)
    root, strict, skipped = Path(cfg.data.root), cfg.data.strict, []
    train_dir = class_dir(root / "train", c)
    if train_dir is None:
        raise DataError(f"{root / 'train'}: no folder for class {NAMES[c]} ({IMAGENET30[c][1]})")
    train = list_images(train_dir, strict, skipped)
    if not train:
        raise DataError(f"{train_dir}: empty class, no training images")
    paths, ys, missing = [], [], []
    for k in range(len(IMAGENET30)):
        d = class_dir(root / "val", k)
        if d is None:
            missing.append(f"{NAMES[k]} ({IMAGENET30[k][1]})")
            continue
        files = list_images(d, strict, skipped)
        paths += files
        ys += [k] * len(files)
    if missing:
        raise DataError(f"{root / 'val'}: missing ImageNet-30 classes: {', '.join(missing)}")
    test_y = np.asarray(ys)
    test = TestData(
        images=FileStore(paths, 3, open_image),
        labels=(test_y != c).astype(np.int64),
        defect_types=["good" if y == c else NAMES[y] for y in test_y],
        paths=paths,
        **file_metadata(paths),
    )
    size = size_value(size_hw(cfg.model.input_size))  # [H, W]: a rectangular centre crop
    resize = round(min(size_hw(size)) * 256 / 224)  # the short side, as in the paper's 256 -> 224
    return RawData(
        name="imagenet30",
        cls=NAMES[c],
        classes=list(NAMES),
        channels=3,
        train=FileStore(train, 3, open_image),
        test=test,
        geometry={"input_size": size, "resize": resize, "crop": size},
        stats="imagenet",
        stats_key=f"imagenet30|{NAMES[c]}",
        source_size=resize,
        train_paths=train,
        skipped=skipped,
    )
