"""Anomaly sources: confetti noise statistics, Outlier Exposure, real anomalies, semi-supervised split."""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd.config import Config
from fcdd.data import confetti as C
from fcdd.data.anomalies import (
    Confetti,
    OutlierExposure,
    RealAnomalies,
    build_anomaly_source,
    oe_exclusions,
    select_semi_supervised,
)
from fcdd.data.outlier_exposure import name_labels
from fcdd.errors import DataError

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def config(**anomalies) -> Config:
    cfg = Config()
    for key, value in anomalies.items():
        setattr(cfg.anomalies, key, value)
    return cfg


# ---------------------------------------------------------------- confetti


def test_square_sampling_follows_bernoulli_rate_conditioned_on_one():
    rng = np.random.default_rng(0)
    h = w = 240
    for p in (C.COLOUR_P, C.GREY_P):
        counts = np.array([len(C.sample_squares(h, w, 3, p, True, rng)) for _ in range(3000)])
        lam = h * w * p
        expected = lam / (1 - math.exp(-lam))  # Poisson(λ) given at least one
        assert counts.min() >= 1
        assert abs(counts.mean() - expected) < 0.06, (p, counts.mean(), expected)


def test_square_parameters_ranges():
    rng = np.random.default_rng(1)
    squares = [C.sample_squares(100, 100, 3, 5e-3, True, rng) for _ in range(40)]
    sides = np.concatenate([s.sides for s in squares])
    angles = np.concatenate([s.angles for s in squares])
    values = np.concatenate([s.values for s in squares])
    assert sides.min() == C.MIN_SIDE and sides.max() == C.MAX_SIDE
    assert np.abs(angles).max() <= 45 and angles.min() < -40 and angles.max() > 40
    assert values.min() >= -256 and values.max() < 0 and values.max() >= -10
    assert len(np.unique(values[:, 0])) > 50  # one random value per square and channel
    assert not np.array_equal(values[:, 0], values[:, 1])
    grey = C.sample_squares(100, 100, 3, 5e-3, False, rng)
    assert (grey.values == -255).all()


@pytest.mark.parametrize("side", [8, 9, 31, 54])
def test_square_region_is_side_by_side_unrotated_and_keeps_area_rotated(side):
    _, _, inside = C.square_region(200, 200, 100, 100, side, 0.0)
    rows, cols = np.nonzero(inside)
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    assert inside.sum() == side * side
    ys, xs, rotated = C.square_region(200, 200, 100, 100, side, 30.0)
    assert abs(rotated.sum() - side * side) <= 4 * side  # pixel-centre sampling of a rotated square
    rows, cols = np.nonzero(rotated)
    extent = rows.max() - rows.min() + 1
    assert side < extent <= math.ceil(side * (math.cos(math.radians(30)) + math.sin(math.radians(30)))) + 1


def test_painted_blobs_have_sizes_within_range():
    rng = np.random.default_rng(2)
    for _ in range(20):
        squares = C.sample_squares(240, 240, 1, C.COLOUR_P, True, rng)
        for i in range(len(squares)):
            canvas = np.zeros((400, 400, 1), np.float32)
            one = C.Squares(
                *(
                    np.array([a[i]])
                    for a in (squares.rows + 80, squares.cols + 80, squares.sides, squares.angles)
                ),
                squares.values[i : i + 1],
            )
            C.paint_squares(canvas, one)
            area = (canvas[..., 0] != 0).sum()
            side = squares.sides[i]
            assert C.MIN_SIDE <= side <= C.MAX_SIDE
            assert abs(area - side * side) <= 4 * side


def test_blur_is_normalised_gaussian_25_sigma_5():
    impulse = np.zeros((61, 61, 1), np.float32)
    impulse[30, 30] = 1.0
    out = C.gaussian_blur(impulse)[..., 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    support = np.nonzero(out > 0)
    assert support[0].min() == 30 - 12 and support[0].max() == 30 + 12
    x = np.arange(-12, 13)
    g = np.exp(-(x**2) / 50.0)
    assert out[30, 18:43] == pytest.approx(g * g[12] / g.sum() ** 2, rel=1e-4)


def test_windowed_blur_equals_the_full_reflect_padded_convolution():
    """Only the window around the squares is computed: the result equals the whole depthwise
    convolution with reflected borders, also for squares on the border (their reflections count)."""
    import torch

    x = np.arange(25, dtype=np.float32) - 12
    k = torch.from_numpy(np.exp(-(x**2) / 50.0) / np.exp(-(x**2) / 50.0).sum())
    rng = np.random.default_rng(0)
    for height, width, rows, cols in [
        (240, 240, (0, 30), (100, 160)),
        (64, 100, (40, 64), (0, 100)),
        (30, 30, (5, 9), (5, 9)),
    ]:
        noise = np.zeros((height, width, 3), np.float32)
        noise[slice(*rows), slice(*cols)] = rng.integers(-256, 0, (rows[1] - rows[0], cols[1] - cols[0], 3))
        t = torch.nn.functional.pad(
            torch.from_numpy(noise.transpose(2, 0, 1).copy())[None], (12,) * 4, mode="reflect"
        )
        t = torch.nn.functional.conv2d(t, k.view(1, 1, 25, 1).repeat(3, 1, 1, 1), groups=3)
        full = torch.nn.functional.conv2d(t, k.view(1, 1, 1, 25).repeat(3, 1, 1, 1), groups=3)[0].numpy()
        out = C.gaussian_blur(noise)
        np.testing.assert_allclose(out, full.transpose(1, 2, 0), atol=2e-4, rtol=0)
        block, (top, bottom, left, right) = C.blur_window(noise)
        assert block.shape == (bottom - top, right - left, 3)
        if height == 240:  # squares in rows 0-30: the window is a band, not the whole image
            assert (bottom - top) * (right - left) < height * width / 4
    assert C.blur_window(np.zeros((40, 40, 3), np.float32))[0].size == 0


def test_confetti_darkens_bright_images_and_clamps():
    rng = np.random.default_rng(3)
    image = np.full((120, 120, 3), 200, np.uint8)
    out, changed = C.apply_confetti(image, rng)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out <= image).all() and changed.any()  # negative noise only
    assert out.min() == 0  # -255 grey squares on 200 clamp to 0
    assert ((out != image).any(axis=2) == changed).all()


def test_confetti_negates_noise_on_black_images():
    rng = np.random.default_rng(4)
    black = np.zeros((120, 120), np.uint8)
    out, changed = C.apply_confetti(black, rng)
    assert out.shape == black.shape and out.max() > 0 and changed.any()  # brightened instead
    white = np.full((120, 120), 255, np.uint8)
    out, _ = C.apply_confetti(white, np.random.default_rng(4))
    assert out.min() < 200  # darkening changes plenty: no negation


def test_confetti_changes_at_least_one_square_of_each_kind(monkeypatch):
    seen = []
    original = C.sample_squares

    def spy(*args, **kwargs):
        squares = original(*args, **kwargs)
        seen.append((args[4], len(squares)))
        return squares

    monkeypatch.setattr(C, "sample_squares", spy)
    rng = np.random.default_rng(5)
    for _ in range(10):
        C.apply_confetti(np.full((64, 64, 3), 128, np.uint8), rng)
    colours = [n for colour, n in seen if colour]
    greys = [n for colour, n in seen if not colour]
    assert len(colours) == len(greys) == 10 and min(colours) >= 1 and min(greys) >= 1


def test_confetti_source_is_deterministic_and_keeps_mode_and_size():
    image = Image.fromarray(np.random.default_rng(6).integers(0, 256, (240, 240, 3), dtype=np.uint8))
    a, mask_a = Confetti("changed")(image, np.random.default_rng(7))
    b, mask_b = Confetti("changed")(image, np.random.default_rng(7))
    c, _ = Confetti("changed")(image, np.random.default_rng(8))
    assert a.mode == "RGB" and a.size == image.size
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert mask_a.dtype == bool and mask_a.shape == (240, 240) and 0 < mask_a.mean() < 1
    grey, ones = Confetti("ones")(image.convert("L"), np.random.default_rng(7))
    assert grey.mode == "L" and ones.all() and ones.shape == (240, 240)
    with pytest.raises(ValueError, match="mode 'RGBA'"):
        Confetti()(image.convert("RGBA"), np.random.default_rng(0))


# ---------------------------------------------------------------- outlier exposure

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "ship": (0, 0, 255), "lizard": (255, 255, 0)}


def make_folder(root: Path, per_class: int = 3, size: tuple[int, int] = (40, 30)) -> Path:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, colour).save(root / name / f"{i}.png")
    (root / "README.txt").write_text("not an image")
    return root


def make_zip(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
    return path


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_oe_from_folder_and_zip(tmp_path, packed, channels):
    folder = make_folder(tmp_path / "oe")
    source = str(make_zip(folder, tmp_path / "oe.zip") if packed else folder)
    oe = OutlierExposure.from_source(source, channels, 16, seed=0)
    assert len(oe) == 12 and oe.images.shape == (12, 32, 32, channels)  # cache side 2·16
    mode = "L" if channels == 1 else "RGB"
    nominal = Image.new(mode, (20, 24))
    image, mask = oe(nominal, np.random.default_rng(0))
    assert image.mode == mode and image.size == (20, 24)
    assert mask.shape == (24, 20) and mask.dtype == bool and mask.all()
    rgb, _ = oe(Image.new("RGB", (8, 8)), np.random.default_rng(0))
    assert rgb.mode == "RGB"  # follows the nominal image's mode
    loaded = pickle.loads(pickle.dumps(oe))
    assert np.array_equal(loaded.images, oe.images)


def test_oe_draws_are_deterministic_and_cover_the_set(tmp_path):
    oe = OutlierExposure.from_source(str(make_folder(tmp_path)), 3, 8, seed=0)
    draws = [oe.draw(np.random.default_rng(11))[0] for _ in range(3)]
    assert len(set(draws)) == 1
    rng = np.random.default_rng(0)
    assert {oe.draw(rng)[0] for _ in range(300)} == set(range(len(oe)))


def test_oe_limit_keeps_a_fixed_seeded_subset(tmp_path):
    folder = str(make_folder(tmp_path, per_class=5))
    a = OutlierExposure.from_source(folder, 3, 8, seed=1, limit=6)
    b = OutlierExposure.from_source(folder, 3, 8, seed=1, limit=6)
    c = OutlierExposure.from_source(folder, 3, 8, seed=2, limit=6)
    assert len(a) == 6 and a.names == b.names and a.names != c.names
    assert len(OutlierExposure.from_source(folder, 3, 8, seed=1, limit=1000)) == 20
    with pytest.raises(DataError, match="oe_limit"):
        OutlierExposure.from_source(folder, 3, 8, seed=1, limit=0)


def test_oe_never_draws_excluded_classes(tmp_path):
    folder = str(make_folder(tmp_path, per_class=4))
    oe = OutlierExposure.from_source(folder, 3, 8, seed=0, exclude={"Cat", "ship"})
    assert len(oe) == 8 and all(n.split("/")[0] in ("dog", "lizard") for n in oe.names)
    rng = np.random.default_rng(0)
    for _ in range(200):
        image, _ = oe(Image.new("RGB", (8, 8)), rng)
        colour = tuple(np.asarray(image)[4, 4])
        assert colour in (COLOURS["dog"], COLOURS["lizard"]), colour


def test_oe_excludes_imagenet_test_classes_by_wnid_and_name(tmp_path):
    names = [
        "n01698640_American_alligator",
        "n01689811_alligator_lizard",
        "n02690373_something",
        "n04133789_sandal",
    ]
    for i, name in enumerate(names):
        Image.new("RGB", (10, 10), (i * 60, 0, 0)).save(tmp_path / f"{name}.jpg")
    oe = OutlierExposure.from_source(str(tmp_path), 3, 8, seed=0, exclude=oe_exclusions("imagenet30"))
    assert oe.names == ["n01689811_alligator_lizard.jpg", "n04133789_sandal.jpg"]
    assert "sandal" in name_labels("n04133789_sandal.jpg") and "sandal" in oe_exclusions("fmnist")


def test_cifar10_run_rejects_cifar10_as_oe_source(tmp_path):
    cifar = tmp_path / "cifar10"
    for split in ("train", "test"):
        for name in ("airplane", "cat"):
            (cifar / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(cifar / split / name / "0001.jpg")
    cfg = config(kind="oe", oe_source=str(cifar))
    cfg.data.dataset = "cifar10"
    with pytest.raises(DataError, match="test classes"):
        build_anomaly_source(cfg, 3, 32, seed=0)
    cfg.data.dataset, cfg.data.root = "fmnist", str(cifar)
    with pytest.raises(DataError, match="dataset itself"):
        build_anomaly_source(cfg, 1, 28, seed=0)


def test_oe_bad_sources_name_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        OutlierExposure.from_source(str(tmp_path / "nowhere"), 3, 8, seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        OutlierExposure.from_source(str(tmp_path / "empty"), 3, 8, seed=0)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(DataError, match="plain.txt"):
        OutlierExposure.from_source(str(tmp_path / "plain.txt"), 3, 8, seed=0)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    Image.new("L", (5, 5)).save(tmp_path / "broken" / "b.png")
    with pytest.warns(UserWarning, match="a.png"):
        assert len(OutlierExposure.from_source(str(tmp_path / "broken"), 1, 8, seed=0)) == 1
    with pytest.raises(DataError, match="a.png"):
        OutlierExposure.from_source(str(tmp_path / "broken"), 1, 8, seed=0, strict=True)
    with pytest.raises(DataError, match="cifar100"):
        OutlierExposure.from_source(f"cifar100:{tmp_path}", 1, 8, seed=0)


def test_oe_from_cifar100_layout_greyscale(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.zeros((4, 3, 32, 32), np.uint8)
    data[:, 0] = 255  # red images
    with open(folder / "train", "wb") as f:
        pickle.dump({"data": data.reshape(4, -1), "fine_labels": [0, 1, 0, 1]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "cat"]}, f)
    oe = OutlierExposure.from_source(f"cifar100:{tmp_path}", 1, 28, seed=0, exclude={"cat"})
    assert oe.images.shape == (2, 32, 32, 1) and all(n.startswith("apple/") for n in oe.names)
    image, _ = oe(Image.new("L", (28, 28)), np.random.default_rng(0))
    assert image.size == (28, 28) and np.asarray(image)[14, 14] == 76  # PIL luma of pure red


def test_oe_default_imagenet_samples_exclude_imagenet30():
    samples = SHARED / "imagenet1k_samples"
    if not samples.is_dir():
        pytest.skip("shared data not available")
    names = [p.name for p in samples.glob("*.jpg")]
    oe = OutlierExposure.from_source(
        str(samples), 3, 16, seed=0, exclude=oe_exclusions("imagenet30"), limit=None
    )
    assert len(oe) == len(names) - 30 and "n02690373_airliner.jpg" not in oe.names


# ---------------------------------------------------------------- real anomalies, semi-supervised split


def test_real_anomalies_resize_image_bilinear_and_mask_nearest():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 255
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 255
    source = RealAnomalies([(Image.fromarray(image), mask)])
    out, out_mask = source(Image.new("L", (16, 16)), np.random.default_rng(0))
    assert out.mode == "L" and out.size == (16, 16)
    assert out_mask.dtype == bool and out_mask.shape == (16, 16)
    expected = np.zeros((16, 16), bool)
    expected[4:8, 4:8] = True
    assert np.array_equal(out_mask, expected)
    assert pickle.loads(pickle.dumps(source)).masks[0].sum() == 4
    same, same_mask = source(Image.new("RGB", (8, 8)), np.random.default_rng(0))
    assert np.array_equal(np.asarray(same), image) and same_mask.sum() == 4
    with pytest.raises(DataError, match="no real anomalies"):
        RealAnomalies([])
    with pytest.raises(DataError, match="does not match"):
        RealAnomalies([(Image.fromarray(image), np.zeros((4, 4), bool))])


def test_select_semi_supervised_k_per_type_disjoint_complete():
    types = ["good"] * 5 + ["crack"] * 4 + ["hole"] * 1 + ["cut"] * 3
    labels = [0] * 5 + [1] * 8
    train_idx, test_keep = select_semi_supervised(types, labels, k=2, seed=0)
    picked = [types[i] for i in train_idx]
    assert sorted(picked) == ["crack", "crack", "cut", "cut", "hole"]
    assert set(train_idx).isdisjoint(test_keep)
    assert sorted([*train_idx, *test_keep]) == list(range(len(types)))
    again, _ = select_semi_supervised(types, labels, k=2, seed=0)
    assert np.array_equal(train_idx, again)
    seeds = {tuple(select_semi_supervised(types, labels, k=1, seed=s)[0]) for s in range(10)}
    assert len(seeds) > 1
    with pytest.raises(DataError, match="semi_k"):
        select_semi_supervised(types, labels, k=0, seed=0)
    with pytest.raises(DataError, match="5 defect types for 13"):
        select_semi_supervised(types[:5], labels, k=1, seed=0)


def test_build_anomaly_source_kinds(tmp_path):
    assert build_anomaly_source(config(kind="none"), 3, 32, seed=0) is None
    assert isinstance(build_anomaly_source(config(kind="confetti"), 3, 224, seed=0), Confetti)
    assert (
        build_anomaly_source(config(kind="confetti", confetti_gt="changed"), 3, 224, seed=0).gt == "changed"
    )
    pairs = [(Image.new("RGB", (4, 4)), np.ones((4, 4), bool))]
    assert isinstance(
        build_anomaly_source(config(kind="semi"), 3, 32, seed=0, real_anomalies=pairs), RealAnomalies
    )
    with pytest.raises(DataError, match="semi"):
        build_anomaly_source(config(kind="semi"), 3, 32, seed=0)
    folder = make_folder(tmp_path / "oe")
    oe = build_anomaly_source(config(kind="oe", oe_source=str(folder), oe_limit=5), 1, 28, seed=0)
    assert isinstance(oe, OutlierExposure) and len(oe) == 5 and oe.images.shape[-1] == 1
    with pytest.raises(DataError, match="missing"):
        build_anomaly_source(config(kind="oe", oe_source=str(tmp_path / "missing")), 1, 28, seed=0)


def test_oe_from_emnist_letters_layout_is_transposed_upright(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    stored = np.zeros((3, 28, 28), np.uint8)
    stored[:, :, 0] = 255  # the raw files hold letters transposed: a stored column is a row
    header = np.array([0x803, 3, 28, 28], ">i4").tobytes()
    (raw / "emnist-letters-train-images-idx3-ubyte").write_bytes(header + stored.tobytes())
    labels = np.array([1, 2, 3], np.uint8).tobytes()
    (raw / "emnist-letters-train-labels-idx1-ubyte").write_bytes(
        np.array([0x801, 3], ">i4").tobytes() + labels
    )
    oe = OutlierExposure.from_source(f"emnist:{tmp_path}", 3, 28, seed=0, exclude={"b"})
    assert oe.images.shape == (2, 28, 28, 3) and [n.split("/")[0] for n in oe.names] == ["a", "c"]
    image = np.asarray(oe(Image.new("L", (28, 28)), np.random.default_rng(0))[0])
    assert (image[0] == 255).all() and (image[1:] == 0).all()
    with pytest.raises(DataError, match="EMNIST"):
        OutlierExposure.from_source(f"emnist:{tmp_path / 'none'}", 1, 28, seed=0)


# ---------------------------------------------------------------- the OE pool: one choice, disjoint from the test classes


def _pool(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "imagenet1k_samples"
    folder.mkdir()
    for name in names:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / f"{name}.jpg")
    return folder


@pytest.mark.parametrize(
    ("dataset", "instances"),
    [
        ("fmnist", ["n03595614_jersey", "n04370456_sweatshirt", "n04479046_trench_coat",
                    "n04120489_running_shoe", "n03124043_cowboy_boot", "n04133789_sandal"]),
        ("cifar10", ["n02690373_airliner", "n04285008_sports_car", "n02123045_tabby", "n02088364_beagle",
                     "n03417042_garbage_truck", "n01530575_brambling", "n04147183_schooner"]),
    ],
)  # fmt: skip
def test_oe_excludes_imagenet_instances_of_the_test_classes_not_only_their_names(
    tmp_path, dataset, instances
):
    """Issue 22: by name only, a Fashion-MNIST run drew jerseys, trench coats and cowboy boots (only
    "sandal" was left out); the dataset module's wnids of its classes' instances exclude them all."""
    kept = ["n01443537_goldfish", "n03000134_chainlink_fence", "n07747607_orange"]
    folder = _pool(tmp_path, instances + kept)
    oe = OutlierExposure.from_source(str(folder), 1, 28, seed=0, exclude=oe_exclusions(dataset))
    assert sorted(oe.names) == sorted(f"{k}.jpg" for k in kept)
    assert (oe.pool, oe.excluded) == (len(instances) + len(kept), len(instances))


def test_oe_auto_is_one_choice_with_one_fallback(tmp_path, monkeypatch):
    from fcdd.data.oe_pool import FALLBACK, choose_oe_source

    monkeypatch.chdir(tmp_path)
    chosen = choose_oe_source("auto", download=False)
    assert chosen.source == FALLBACK and chosen.download and "no ImageNet-1k sample pool" in chosen.how
    (tmp_path / "data" / "imagenet1k_samples").mkdir(parents=True)
    chosen = choose_oe_source("auto", download=False)
    assert chosen.source == "data/imagenet1k_samples" and not chosen.download
    assert choose_oe_source("some/folder", download=False).how == ""  # given: used as given
    from fcdd.config.sections import AnomalyConfig

    assert AnomalyConfig().oe_source == "auto"
    params = (Path(__file__).resolve().parents[2] / "params.yaml").read_text()
    assert "../" not in params  # no path that exists on one machine only


def test_the_loading_lines_say_which_pool_and_how_many_images_were_excluded(tmp_path, monkeypatch):
    from fcdd.data.bundle import describe

    folder = _pool(tmp_path, ["n03595614_jersey", "n01443537_goldfish", "n07747607_orange"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    folder.rename(tmp_path / "data" / "imagenet1k_samples")
    source = build_anomaly_source(config(kind="oe", oe_source="auto"), 1, 28, seed=0)
    oe = source.summary()
    assert oe == {"source": "data/imagenet1k_samples", "chosen": "auto: the local ImageNet-1k sample pool",
                  "pool": 3, "excluded": 1}  # fmt: skip
    summary = {
        "dataset": "fmnist", "class": "bag", "root": "x",
        "train": {"nominal": 1, "nominal_available": 1, "anomaly_kind": "oe", "anomaly_probability": 0.5,
                  "anomaly_source_images": 2, "oe": oe},
        "test": {"nominal": 1, "anomalous": 1, "defect_types": {}, "has_masks": False},
    }  # fmt: skip
    (line,) = [x for x in describe(summary).splitlines() if "OE pool" in x]
    assert "data/imagenet1k_samples (auto: the local ImageNet-1k sample pool): 1 of 3 images excluded" in line
    assert "instances of Fashion-MNIST's classes" in line


def test_cifar10_filters_imagenet_instances_of_its_classes_and_refuses_its_own_images(tmp_path):
    """CIFAR-10 refuses an OE source holding its own class names (a dataset cannot be its own
    outlier exposure) but filters the ImageNet instances of its classes (a cock is a bird) out of an
    ImageNet pool, as Fashion-MNIST does: the pool is not refused for them."""
    from fcdd.config import Config
    from fcdd.data.anomalies import build_anomaly_source

    pool = _pool(
        tmp_path, ["n01514668_cock", "n02690373_airliner", "n03000134_chainlink_fence", "n07747607_orange"]
    )
    cfg = Config()
    cfg.data.dataset = "cifar10"
    cfg.anomalies.kind = "oe"
    cfg.anomalies.oe_source = str(pool)
    oe = build_anomaly_source(cfg, 3, 32, seed=0)
    assert sorted(oe.names) == ["n03000134_chainlink_fence.jpg", "n07747607_orange.jpg"]
    assert oe.excluded == 2
    own = tmp_path / "cifar-like"
    (own / "airplane").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(own / "airplane" / "0.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cifar-like" / "kept.png")
    cfg.anomalies.oe_source = str(own)
    with pytest.raises(DataError, match="cannot be its own outlier exposure"):
        build_anomaly_source(cfg, 3, 32, seed=0)
