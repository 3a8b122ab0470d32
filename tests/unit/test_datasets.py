"""Datasets on tiny generated data in every layout, and on ../shared/data when present."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd.config import Config
from fcdd.data import (
    DataError,
    build_datasets,
    class_names,
    dataset_spec,
    describe,
    seeded_subset,
    stratified_subset,
)
from fcdd.data.datasets.fmnist import FMNIST_CLASSES
from fcdd.data.datasets.imagenet30 import IMAGENET30
from fcdd.data.training_set import TensorStore, TrainingSet

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def config(tmp_path: Path, dataset: str, root: Path | str, input_size: int, **data) -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.cache_dir = dataset, str(root), str(tmp_path / "cache")
    cfg.model.input_size = input_size
    cfg.anomalies.kind = "none"
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def augmented_item(train_set, i: int) -> dict:
    """Item i as training sees it: with a batch transform (data.batch_augment) items stay uint8 at
    the stored size and the loader's collate augments them; this runs that collate on one item."""
    batch = train_set.collate([train_set[i]])
    return {k: v[0] for k, v in batch.items()}


# ---------------------------------------------------------------- generated layouts


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fmnist_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, per_class in (("train", 5), ("t10k", 2)):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 256, (len(labels), 28, 28))
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def cifar_zip(tmp_path: Path) -> Path:
    from fcdd.data.datasets.cifar10 import CIFAR10_CLASSES

    rng = np.random.default_rng(0)
    path = tmp_path / "cifar.zip"
    with zipfile.ZipFile(path, "w") as z:
        for split, n in (("train", 4), ("test", 3)):
            for name in CIFAR10_CLASSES:
                for i in range(n):
                    z.writestr(
                        f"{split}/{name}/{i:04d}.jpg", jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                    )
    return path


def textured(size: int, rng: np.random.Generator, square: tuple[int, int, int] | None = None) -> np.ndarray:
    image = rng.integers(20, 60, (size, size, 3), dtype=np.uint8)
    if square:
        y, x, s = square
        image[y : y + s, x : x + s] = 250
    return image


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def square_mask(size: int, square: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    y, x, s = square
    mask[y : y + s, x : x + s] = 255
    return mask


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """Category 'widget': 6 train/good, 2 test/good, 2 test/scratch (_mask.png), 1 test/dent (<stem>.png)."""
    rng = np.random.default_rng(0)
    root, size = tmp_path / "mvtec", 40
    base = root / "widget"
    for i in range(6):
        save(base / "train" / "good" / f"{i:03d}.png", textured(size, rng))
    for i in range(2):
        save(base / "test" / "good" / f"{i:03d}.png", textured(size, rng))
    for defect, n, suffix in (("scratch", 2, "_mask"), ("dent", 1, "")):
        for i in range(n):
            sq = (4 + 10 * i, 8, 12)
            save(base / "test" / defect / f"{i:03d}.png", textured(size, rng, sq))
            save(base / "ground_truth" / defect / f"{i:03d}{suffix}.png", square_mask(size, sq))
    (root / "not_a_category").mkdir()
    return root


def mvtec_cfg(tmp_path: Path, root: Path, **data) -> Config:
    return config(tmp_path, "mvtec", root, 28, stored_size=30, **data)


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """10 nominal images in ok/, 3 defects in bad/ with masks <stem>_m.png in masks/, a README."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tiles"
    for i in range(10):
        save(root / "ok" / f"n{i}.jpg", textured(36, rng))
    for i in range(3):
        sq = (5, 5 + 8 * i, 10)
        save(root / "bad" / f"d{i}.png", textured(48, rng, sq))
        save(root / "masks" / f"d{i}_m.png", square_mask(48, sq))
    (root / "ok" / "README.txt").write_text("not an image")
    return root


def folder_cfg(tmp_path: Path, root: Path, **data) -> Config:
    cfg = config(tmp_path, "folder", root, 28, stored_size=30, **data)
    cfg.data.folder.nominal, cfg.data.folder.anomalous = ["ok"], ["bad/*.png"]
    cfg.data.folder.masks, cfg.data.folder.mask_suffix = ["masks"], "_m"
    cfg.data.folder.test_ratio = 0.3
    return cfg


# ---------------------------------------------------------------- Fashion-MNIST


def test_fmnist_one_vs_rest_counts_labels_and_stats(tmp_path, fmnist_root):
    bundle = build_datasets(config(tmp_path, "fmnist", fmnist_root, 28), "Bag", seed=0)
    assert bundle.name == "fmnist" and bundle.classes[8] == "bag"
    assert len(bundle.train) == 5 and len(bundle.test) == 20
    assert bundle.test.labels.tolist().count(0) == 2 and bundle.test.labels.sum() == 18
    types = bundle.summary["test"]["defect_types"]  # the 18 anomalous images, 2 of each other class
    assert "good" not in types and "bag" not in types and len(types) == 9 and set(types.values()) == {2}
    item = bundle.train[0]
    assert item["image"].shape == (1, 28, 28) and item["label"].item() == 0 and item["mask"].sum() == 0
    norm = bundle.preprocess["normalisation"]
    assert norm["kind"] == "gcn-minmax" and norm["min"] < 0 < norm["max"]
    from fcdd.data.datasets.fmnist import load_split
    from fcdd.data.normalisation import gcn

    x, y = load_split(config(tmp_path, "fmnist", fmnist_root, 28), "train")
    expected = gcn(torch.from_numpy(x[y == 8]).float().unsqueeze(1) / 255)  # the nominal class only
    assert norm["min"] == pytest.approx(expected.min().item()) and norm["max"] == pytest.approx(
        expected.max().item()
    )
    cache = json.loads((tmp_path / "cache" / "normalisation.json").read_text())
    assert any(k.startswith("fmnist|bag|") for k in cache)
    test_image = bundle.test[0]["image"]
    assert test_image.min() >= -0.5 and test_image.max() <= 1.5  # scaled with the class's min/max
    json.dumps(bundle.preprocess)  # must be JSON-serialisable
    assert bundle.test.raw_image(0).shape == (28, 28, 3) and bundle.test.full_mask(0).shape == (28, 28)


def test_loaded_summary_counts_defect_types_over_anomalous_images_only(tmp_path, fmnist_root):
    bundle = build_datasets(config(tmp_path, "fmnist", fmnist_root, 28), "bag", seed=0)
    test_line = describe(bundle.summary).splitlines()[1]
    assert test_line.startswith("  test 2 good, 18 defective: ankle-boot 2, coat 2, dress 2,")
    assert "good 2" not in test_line and "bag" not in test_line
    assert sum(bundle.summary["test"]["defect_types"].values()) == bundle.summary["test"]["anomalous"]


def test_fmnist_torchvision_raw_layout_uncompressed(tmp_path, fmnist_root):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fmnist_root.iterdir():
        (raw / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    bundle = build_datasets(config(tmp_path, "fmnist", tmp_path / "tv", 28), "0", 0)
    assert bundle.summary["class"] == "t-shirt-top" and len(bundle.train) == 5 and len(bundle.test) == 20


@pytest.mark.parametrize("alias", ["ankle-boot", "Ankle boot", "9", "ANKLE_BOOT"])
def test_fmnist_class_aliases(tmp_path, fmnist_root, alias):
    assert (
        build_datasets(config(tmp_path, "fmnist", fmnist_root, 28), alias, 0).summary["class"] == "ankle-boot"
    )


def test_fmnist_unknown_class_lists_the_known_ones(tmp_path, fmnist_root):
    with pytest.raises(
        DataError, match="unknown Fashion-MNIST class 'hat'; known classes: t-shirt-top, trouser"
    ):
        build_datasets(config(tmp_path, "fmnist", fmnist_root, 28), "hat", 0)


def test_fmnist_truncated_file_is_named(tmp_path, fmnist_root):
    path = fmnist_root / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: truncated"):
        build_datasets(config(tmp_path, "fmnist", fmnist_root, 28), "bag", 0)


def test_missing_root_and_input_size_mismatch(tmp_path, fmnist_root):
    with pytest.raises(DataError, match="no Fashion-MNIST files"):
        build_datasets(config(tmp_path, "fmnist", tmp_path / "nowhere", 28), "bag", 0)
    with pytest.raises(DataError, match="28x28 inputs but model.input_size is 32"):
        build_datasets(config(tmp_path, "fmnist", fmnist_root, 32), "bag", 0)


def test_class_names_per_dataset(tmp_path, mvtec_root):
    assert len(class_names(config(tmp_path, "fmnist", "x", 28))) == len(FMNIST_CLASSES)
    assert class_names(config(tmp_path, "cifar10", "x", 32))[0] == "airplane"
    assert len(class_names(config(tmp_path, "imagenet30", "x", 224))) == 30
    assert class_names(mvtec_cfg(tmp_path, mvtec_root)) == ["widget"]
    assert class_names(config(tmp_path, "folder", "x", 28)) == ["folder"]
    assert class_names(config(tmp_path, "folder", "x", 28, classes=["tiles"])) == ["tiles"]
    assert all("/" not in n for n in class_names(config(tmp_path, "fmnist", "x", 28)))


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fmnist_debian_files(tmp_path):
    bundle = build_datasets(config(tmp_path, "fmnist", DEBIAN_FMNIST, 28), "trouser", 0)
    assert len(bundle.train) == 6000 and len(bundle.test) == 10000
    assert int((bundle.test.labels == 0).sum()) == 1000


# ---------------------------------------------------------------- CIFAR-10


def test_cifar_zip_counts_stats_and_stratified_test_limit(tmp_path, cifar_zip):
    cfg = config(tmp_path, "cifar10", cifar_zip, 32)
    bundle = build_datasets(cfg, "cat", 0)
    assert len(bundle.train) == 4 and len(bundle.test) == 30
    assert bundle.test.labels.tolist().count(0) == 3
    assert bundle.test.paths[0].endswith("test/airplane/0000.jpg")
    norm = bundle.preprocess["normalisation"]
    assert norm["kind"] == "meanstd" and len(norm["mean"]) == 3 and all(s > 0 for s in norm["std"])
    cfg.data.test_limit, cfg.data.train_limit = 10, 2
    small = build_datasets(cfg, "cat", 0)
    assert len(small.test) == 10 and small.test.labels.tolist().count(0) == 1 and len(small.train) == 2
    again = build_datasets(cfg, "cat", 0)
    assert again.test.paths == small.test.paths
    assert build_datasets(cfg, "cat", 1).test.paths != small.test.paths


def test_cifar_bad_zip_and_bad_jpeg(tmp_path, cifar_zip):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip: not a readable zip"):
        build_datasets(config(tmp_path, "cifar10", bad, 32), "cat", 0)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(cifar_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n)[:50] if n == "test/dog/0001.jpg" else src.read(n))
    with pytest.raises(DataError, match="test/dog/0001.jpg: not a readable image .unreadable or truncated"):
        build_datasets(config(tmp_path, "cifar10", broken, 32), "cat", 0)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cifar10_jpeg.zip").is_file(), reason="../shared/data absent")
def test_cifar_real_zip(tmp_path):
    bundle = build_datasets(config(tmp_path, "cifar10", SHARED / "cifar10_jpeg.zip", 32), "ship", 0)
    assert len(bundle.train) == 5000 and len(bundle.test) == 10000
    assert int((bundle.test.labels == 0).sum()) == 1000


# ---------------------------------------------------------------- ImageNet-30


def test_imagenet30_folder_by_wnid_and_name(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    for k, (name, wnid) in enumerate(IMAGENET30):
        folder = wnid if k % 2 else name.replace(" ", "_")  # both spellings are accepted
        save(root / "val" / folder / "v0.jpg", textured(20, rng))
    for i in range(3):
        save(root / "train" / "n02690373" / f"t{i}.jpg", textured(30, rng))
    cfg = config(tmp_path, "imagenet30", root, 32)
    bundle = build_datasets(cfg, "airliner", 0)
    assert len(bundle.train) == 3 and len(bundle.test) == 30 and bundle.test.labels.sum() == 29
    assert bundle.preprocess["resize"] == round(32 * 256 / 224) and bundle.preprocess["crop"] == 32
    assert bundle.test[0]["image"].shape == (3, 32, 32) and bundle.train[0]["image"].shape == (3, 32, 32)
    (root / "val" / "n09472597" / "v0.jpg").unlink()  # volcano, stored under its wnid
    (root / "val" / "n09472597").rmdir()
    with pytest.raises(DataError, match="missing ImageNet-30 classes: volcano"):
        build_datasets(cfg, "airliner", 0)


# ---------------------------------------------------------------- MVTec-AD layout


def test_mvtec_counts_masks_and_cache(tmp_path, mvtec_root):
    bundle = build_datasets(mvtec_cfg(tmp_path, mvtec_root), "widget", 0)
    test = bundle.test
    assert len(bundle.train) == 6 and len(test) == 5 and test.has_masks
    assert test.defect_types == ["dent", "good", "good", "scratch", "scratch"]
    assert bundle.summary["test"]["defect_types"] == {"dent": 1, "scratch": 2}  # anomalous only
    assert bundle.preprocess == {**bundle.preprocess, "input_size": 28, "channels": 3, "crop": None}
    full = test.full_mask(3)
    assert full.shape == (40, 40) == test.original_size(3) and full.sum() == 144  # 12x12 square
    assert not test.full_mask(1).any() and test.raw_image(0).shape == (40, 40, 3)
    item = test[3]
    assert item["mask"].shape == (1, 28, 28) and item["image"].shape == (3, 28, 28)
    grey = item["image"].mean(0)
    bright = grey > (grey.min() + grey.max()) / 2  # the square is the bright part of the image
    mask = item["mask"][0] > 0
    assert (bright & mask).sum() / (bright | mask).sum() > 0.8
    assert list((tmp_path / "cache" / "images").glob("*/images.npy"))


def test_mvtec_errors_name_the_file(tmp_path, mvtec_root):
    cfg = mvtec_cfg(tmp_path, mvtec_root)
    with pytest.raises(DataError, match="unknown MVTec-AD category 'gizmo'.*known: widget"):
        build_datasets(cfg, "gizmo", 0)
    mask = mvtec_root / "widget" / "ground_truth" / "dent" / "000.png"
    Image.new("L", (20, 20)).save(mask)
    with pytest.raises(DataError, match="000.png: mask is 20x20 but its image .*dent/000.png is 40x40"):
        build_datasets(cfg, "widget", 0)
    mask.unlink()  # a defect image without its mask: left out of the pixel metrics (tests/unit/test_mvtec_masks.py)
    with pytest.warns(UserWarning, match="1 of 3 anomalous test images have no mask .*dent/000.png"):
        assert build_datasets(cfg, "widget", 0).test.has_masks
    save(mask, square_mask(40, (0, 0, 4)))
    save(mask.parent / "007.png", square_mask(40, (0, 0, 4)))
    with pytest.raises(DataError, match="007.png: mask without image"):
        build_datasets(cfg, "widget", 0)


def test_mvtec_truncated_image_empty_class_and_non_image(tmp_path, mvtec_root):
    cfg = mvtec_cfg(tmp_path, mvtec_root)
    good = mvtec_root / "widget" / "train" / "good"
    (good / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="notes.txt"):
        bundle = build_datasets(cfg, "widget", 0)
    assert bundle.summary["skipped"][0]["path"].endswith("notes.txt")
    cfg.data.strict = True
    with pytest.raises(DataError, match="notes.txt: not an image file"):
        build_datasets(cfg, "widget", 0)
    (good / "notes.txt").unlink()
    first = good / "000.png"
    first.write_bytes(first.read_bytes()[:60])
    with pytest.raises(DataError, match="000.png: not a readable image .unreadable or truncated"):
        build_datasets(cfg, "widget", 0)
    for f in good.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="empty class"):
        build_datasets(cfg, "widget", 0)


def test_mvtec_confetti_injection_through_build_datasets(tmp_path, mvtec_root):
    cfg = mvtec_cfg(tmp_path, mvtec_root)
    cfg.anomalies.kind, cfg.anomalies.probability = "confetti", 1.0
    bundle = build_datasets(cfg, "widget", 0)
    torch.manual_seed(0)
    item = augmented_item(bundle.train, 0)
    assert item["label"].item() == 1 and item["mask"].shape == (1, 28, 28) and item["mask"].min() == 1.0
    assert bundle.summary["train"]["anomaly_kind"] == "confetti"


def test_semi_needs_masks(tmp_path, fmnist_root):
    cfg = config(tmp_path, "fmnist", fmnist_root, 28)
    cfg.anomalies.kind = "semi"
    with pytest.raises(DataError, match="semi needs anomalous test images with masks"):
        build_datasets(cfg, "bag", 0)


def test_mvtec_semi_moves_k_per_defect_type_out_of_the_test_set(tmp_path, mvtec_root):
    cfg = mvtec_cfg(tmp_path, mvtec_root)
    cfg.anomalies.kind, cfg.anomalies.semi_k, cfg.anomalies.probability = "semi", 1, 1.0
    bundle = build_datasets(cfg, "widget", 0)
    moved = bundle.summary["moved_to_train"]
    assert len(moved) == 2 and bundle.summary["train"]["real_anomalies"] == 2
    assert not set(moved) & set(bundle.test.paths) and len(bundle.test) == 3
    torch.manual_seed(0)
    item = augmented_item(bundle.train, 0)
    assert item["label"].item() == 1 and 0 < item["mask"].mean() < 0.5  # a real defect mask, not all ones


@pytest.mark.parametrize(
    "root, cls, train, test, anomalous",
    [("mvtec_ad_subset", "grid", 25, 14, 11), ("hazelnut_toy", "hazelnut", 28, 23, 17)],
)
def test_mvtec_real_data(tmp_path, root, cls, train, test, anomalous):
    if not (SHARED / root / cls).is_dir():
        pytest.skip("../shared/data absent")
    cfg = config(tmp_path, "mvtec", SHARED / root, 224)
    bundle = build_datasets(cfg, cls, 0)
    assert (
        len(bundle.train) == train and len(bundle.test) == test and int(bundle.test.labels.sum()) == anomalous
    )
    for i in (int(np.flatnonzero(bundle.test.labels)[-1]), int(np.flatnonzero(bundle.test.labels == 0)[0])):
        full = bundle.test.full_mask(i)
        assert full.shape == bundle.test.original_size(i)
        assert full.any() == bool(bundle.test[i]["mask"].any()) == bool(bundle.test.labels[i])


# ---------------------------------------------------------------- folder datasets


def test_folder_split_masks_and_skipped_files(tmp_path, folder_root):
    cfg = folder_cfg(tmp_path, folder_root)
    with pytest.warns(UserWarning, match="README.txt"):
        bundle = build_datasets(cfg, "folder", 0)
    assert len(bundle.train) == 7 and len(bundle.test) == 6 and bundle.test.has_masks
    assert bundle.summary["test"]["defect_types"] == {"bad": 3}
    assert bundle.summary["skipped"] and bundle.summary["skipped"][0]["path"].endswith("README.txt")
    i = bundle.test.paths.index(str(folder_root / "bad" / "d1.png"))
    assert bundle.test.full_mask(i).sum() == 100 and bundle.test.full_mask(i)[5, 13]
    assert bundle.test.original_size(i) == (48, 48)
    with pytest.warns(UserWarning):
        again = build_datasets(cfg, "folder", 0)
        other = build_datasets(cfg, "folder", 1)
    assert again.test.paths == bundle.test.paths and other.test.paths != bundle.test.paths
    with pytest.raises(DataError, match="unknown folder class 'tiles'; known classes: folder"):
        build_datasets(cfg, "tiles", 0)


def test_folder_errors(tmp_path, folder_root):
    cfg = folder_cfg(tmp_path, folder_root, strict=True)
    with pytest.raises(DataError, match="README.txt: not an image file"):
        build_datasets(cfg, "folder", 0)
    (folder_root / "ok" / "README.txt").unlink()
    save(folder_root / "masks" / "zz_m.png", square_mask(48, (0, 0, 3)))
    with pytest.raises(DataError, match="zz_m.png: mask without image"):
        build_datasets(cfg, "folder", 0)
    (folder_root / "masks" / "zz_m.png").unlink()
    cfg.data.folder.anomalous = ["missing/*.png"]
    with pytest.raises(DataError, match="data.folder.anomalous: 'missing/\\*.png' matches no file"):
        build_datasets(cfg, "folder", 0)


def test_masks_named_by_the_folder_they_share_with_their_images_are_a_one_line_error(tmp_path):
    """Masks beside their images (MT_Crack/Imgs: x.jpg and its mask x.png) named by the folder: every
    image would be taken as a mask; the error says so and how to name the masks instead."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tiles"
    for i in range(4):
        save(root / "free" / f"n{i}.jpg", textured(36, rng))
    for i in range(2):
        save(root / "crack" / f"d{i}.jpg", textured(36, rng, (5, 5, 8)))
        save(root / "crack" / f"d{i}.png", square_mask(36, (5, 5, 8)))
    cfg = config(tmp_path, "folder", root, 28, stored_size=30)
    cfg.data.folder.nominal, cfg.data.folder.anomalous = ["free"], ["crack"]
    cfg.data.folder.masks, cfg.data.folder.mask_suffix = ["crack"], ""
    with pytest.raises(
        DataError,
        match=r"data.folder.anomalous: every image of 'crack' is also matched by "
        r"data.folder.masks \['crack'\].*give masks as a pattern \('crack/\*.png'\)",
    ):
        build_datasets(cfg, "folder", 0)
    cfg.data.folder.masks = ["crack/*.png"]  # the remedy the message names
    bundle = build_datasets(cfg, "folder", 0)
    assert bundle.summary["test"]["defect_types"] == {"crack": 2} and bundle.test.has_masks
    assert len(bundle.train) + len(bundle.test) == 6


def test_good_images_beside_their_masks_are_refused_not_trained_on(tmp_path):
    """MT_Free/Imgs holds x.jpg and its (empty) mask x.png: the folder as nominal would train on the
    masks as good images; refused in one line naming a pair and the pattern that keeps the images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tiles"
    for i in range(4):
        save(root / "free" / f"n{i}.jpg", textured(36, rng))
        save(root / "free" / f"n{i}.png", square_mask(36, (0, 0, 0)))
        save(root / "crack" / f"d{i}.jpg", textured(36, rng, (5, 5, 8)))
    cfg = config(tmp_path, "folder", root, 28, stored_size=30)
    cfg.data.folder.nominal, cfg.data.folder.anomalous = ["free"], ["crack"]
    cfg.data.folder.masks = []
    with pytest.raises(
        DataError,
        match=r"data.folder.nominal: .*free/n0.jpg and .*free/n0.png share a stem "
        r"\(4 such pairs\): masks among the images\? .*'free/\*.jpg'",
    ):
        build_datasets(cfg, "folder", 0)
    cfg.data.folder.nominal = ["free/*.jpg"]
    bundle = build_datasets(cfg, "folder", 0)
    assert len(bundle.train) + bundle.test.labels.tolist().count(0) == 4
    assert all(path.endswith(".jpg") for path in bundle.test.paths)


def test_folder_defect_type_is_the_last_folder_name_unless_two_collide(tmp_path, folder_root):
    rng = np.random.default_rng(1)
    for sub in ("test/broken_large", "lot1/crack", "lot2/crack", "MT_Fray/Imgs", "MT_Crack/Imgs"):
        save(folder_root / sub / "x.png", textured(48, rng, (5, 5, 10)))
    cfg = folder_cfg(tmp_path, folder_root)
    cfg.data.folder.anomalous = ["bad/*.png", "test/*", "lot*/crack", "MT_*/Imgs"]
    with pytest.warns(UserWarning, match="5 of 8 anomalous test images have no mask"):  # the new ones
        bundle = build_datasets(cfg, "folder", 0)
    unmasked = [Path(p).name == "x.png" for p in bundle.test.paths]
    assert bundle.test.has_masks and bundle.test.mask_known.tolist() == [not u for u in unmasked]
    assert bundle.summary["test"]["defect_types"] == {
        "bad": 3, "broken_large": 1, "lot1/crack": 1, "lot2/crack": 1, "MT_Crack/Imgs": 1, "MT_Fray/Imgs": 1,
    }  # fmt: skip
    i = bundle.test.paths.index(str(folder_root / "test" / "broken_large" / "x.png"))
    assert bundle.test.defect_types[i] == "broken_large"
    from fcdd.data.datasets.folder import defect_type_names

    assert defect_type_names(["x", "a/x", "b/y", "."]) == {
        "x": "x",
        "a/x": "a/x",
        "b/y": "y",
        ".": "anomalous",
    }


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "magnetic_tile").is_dir(), reason="../shared/data absent")
def test_folder_magnetic_tile(tmp_path):
    cfg = config(tmp_path, "folder", SHARED / "magnetic_tile", 224)
    defects = ["Blowhole", "Break", "Crack", "Fray", "Uneven"]
    cfg.data.folder.nominal = ["MT_Free/Imgs/*.jpg"]
    cfg.data.folder.anomalous = [f"MT_{d}/Imgs/*.jpg" for d in defects]
    cfg.data.folder.masks = ["MT_*/Imgs/*.png"]
    bundle = build_datasets(cfg, "folder", 0)
    assert len(bundle.train) + bundle.summary["test"]["nominal"] == 952
    assert bundle.summary["test"]["anomalous"] == 115 + 85 + 57 + 32 + 103 and bundle.test.has_masks
    i = int(np.flatnonzero(bundle.test.labels)[0])
    assert bundle.test.full_mask(i).shape == bundle.test.original_size(i) and bundle.test.full_mask(i).any()


# ---------------------------------------------------------------- injection and subsets


class SquareSource:
    """A fake anomaly source: a bright square at a random place, and its mask."""

    def __call__(self, image: Image.Image, rng: np.random.Generator):
        a = np.array(image)
        y, x = rng.integers(0, a.shape[0] - 8, 2)
        a[y : y + 8, x : x + 8] = 255
        mask = np.zeros(a.shape[:2], dtype=bool)
        mask[y : y + 8, x : x + 8] = True
        return Image.fromarray(a), mask


def training_set(probability: float) -> TrainingSet:
    images = TensorStore(np.full((40, 28, 28), 10, dtype=np.uint8))
    pre = {"input_size": 28, "channels": 1, "resize": None, "crop": None, "normalisation": {"kind": "none"}}
    return TrainingSet(
        images, dataset_spec("fmnist").train_transform(pre), 1, SquareSource(), probability, seed=3
    )


def test_injection_replaces_samples_with_aligned_anomalies():
    ts = training_set(0.5)
    torch.manual_seed(0)
    items = [ts[i % len(ts)] for i in range(200)]
    anomalous = [it for it in items if it["label"].item() == 1]
    assert 70 < len(anomalous) < 130
    for it in items:
        bright = it["image"][0] > 0.5
        assert torch.equal(bright, it["mask"][0] > 0)  # the mask moved with the square
        assert bool(bright.any()) == (it["label"].item() == 1)
    assert all(it["label"].item() == 0 for it in (training_set(0.0)[i] for i in range(20)))


def test_injection_is_deterministic_given_the_seed_and_workers():
    ts = training_set(0.5)

    def epoch(seed: int, workers: int) -> torch.Tensor:
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(ts, batch_size=8, num_workers=workers)
        return torch.cat([b["image"] for b in loader])

    assert torch.equal(epoch(0, 0), epoch(0, 0))
    assert not torch.equal(epoch(0, 0), epoch(1, 0))
    torch.manual_seed(0)
    first, second = (
        torch.cat([b["label"] for b in torch.utils.data.DataLoader(ts, batch_size=8)]) for _ in range(2)
    )
    assert not torch.equal(first, second)  # each epoch draws new anomalies


def test_injection_with_worker_processes_is_reproducible():
    ts = training_set(0.5)

    def epoch() -> torch.Tensor:
        torch.manual_seed(4)
        return torch.cat([b["image"] for b in torch.utils.data.DataLoader(ts, batch_size=8, num_workers=2)])

    assert torch.equal(epoch(), epoch())


def test_datasets_pickle_for_spawned_workers(tmp_path, mvtec_root, fmnist_root):
    for bundle in (
        build_datasets(mvtec_cfg(tmp_path, mvtec_root), "widget", 0),
        build_datasets(config(tmp_path, "fmnist", fmnist_root, 28), "bag", 0),
    ):
        test = pickle.loads(pickle.dumps(bundle.test))
        train = pickle.loads(pickle.dumps(bundle.train))
        i = len(test) - 1
        assert torch.equal(test[i]["image"], bundle.test[i]["image"])
        assert np.array_equal(test.full_mask(i), bundle.test.full_mask(i))
        assert test.raw_image(i).shape[2] == 3 and train[0]["image"].shape == bundle.train[0]["image"].shape


def test_source_with_a_wrong_mask_is_an_error():
    ts = training_set(1.0)
    ts.source = lambda image, rng: (image, np.zeros((3, 3), dtype=bool))
    with pytest.raises(DataError, match="mask \\(3, 3\\) != image \\(28, 28\\)"):
        ts[0]


def test_subsets_are_seeded_and_stratified():
    assert seeded_subset(10, None, 0).tolist() == list(range(10))
    assert (
        seeded_subset(10, 4, 0).tolist()
        == seeded_subset(10, 4, 0).tolist()
        != seeded_subset(10, 4, 1).tolist()
    )
    labels = np.array([0] * 10 + [1] * 90)
    keep = stratified_subset(np.arange(100), labels, 20, 0)
    assert len(keep) == 20 and (labels[keep] == 0).sum() == 2
    assert (labels[stratified_subset(np.arange(100), labels, 3, 0)] == 0).sum() == 1  # every label kept
    with pytest.raises(DataError, match="test_limit must be at least 1"):
        stratified_subset(np.arange(100), labels, 0, 0)
