"""Synthetic anomalies (docs/synthetic-anomalies.md): Perlin (DRAEM) and CutPaste generators, their
per-sample sources and batched injection, the mix in anomalies.kind and its one-line errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch.utils._python_dispatch import TorchDispatchMode

from fcdd.config import Config, ConfigError, explain_config, load_config
from fcdd.data import cutpaste as CP
from fcdd.data import perlin as P
from fcdd.data.anomalies import Confetti, build_anomaly_source
from fcdd.data.anomaly_kinds import anomaly_shares, kind_text
from fcdd.data.batch_augment import device_augment
from fcdd.data.datasets import dataset_spec
from fcdd.data.synthetic import (
    CODES,
    BatchInjector,
    CutPaste,
    Perlin,
    SyntheticMix,
    TexturePool,
    batch_injector,
)
from fcdd.data.training_set import TensorStore, TrainingSet
from fcdd.training.loading import make_loader

torch.set_num_threads(1)
CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, c: int = 3, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen(seed))


# ---------------------------------------------------------------- Perlin noise and masks


def test_perlin_noise_rotated_a_quarter_turn_is_the_field_turned():
    """Same gradients, angle 90°: the noise of a square image is the angle-0 noise rotated by 90°
    (pixel centres map onto pixel centres), so the field is sampled at exactly rotated coordinates."""
    cells = torch.tensor([[4.0, 4.0]])
    flat = P.perlin_noise(40, 40, cells, torch.tensor([0.0]), gen(3))[0]
    turned = P.perlin_noise(40, 40, cells, torch.tensor([90.0]), gen(3))[0]
    assert torch.allclose(turned, torch.rot90(flat, 1, (0, 1)), atol=1e-5) or torch.allclose(
        turned, torch.rot90(flat, -1, (0, 1)), atol=1e-5
    )
    assert not torch.allclose(turned, flat, atol=1e-3)


@pytest.mark.parametrize("cells", [(1, 1), (2, 8), (32, 32)])
def test_perlin_noise_is_smooth_bounded_and_has_the_cells_frequency(cells):
    h, w = 64, 96
    noise = P.perlin_noise(h, w, torch.tensor([cells], dtype=torch.float32), torch.tensor([0.0]), gen(1))[0]
    assert noise.shape == (h, w) and noise.abs().max() <= math.sqrt(2) + 1e-5
    steps = (noise.diff(dim=0).abs().max(), noise.diff(dim=1).abs().max())
    # gradients have unit length: one pixel moves the noise by at most ~ sqrt(2) * 1.9 / pixels-per-cell
    for step, per_cell in zip(steps, (h / cells[0], w / cells[1]), strict=True):
        assert step <= 2.7 / per_cell + 1e-4
    # zero crossings grow with the number of cells
    signs = (noise[h // 2, :-1] * noise[h // 2, 1:] < 0).sum()
    assert signs <= 2 * cells[1] + 2


def test_perlin_masks_are_draems_threshold_and_never_smaller_than_min_area():
    n, h, w = 200, 60, 80
    masks = P.perlin_masks(n, h, w, gen(7))
    assert masks.dtype == torch.bool and masks.shape == (n, 1, h, w)
    area = masks.float().mean((1, 2, 3))
    assert (area >= P.MIN_AREA - 1e-9).all()
    # the same draws, redone: where noise > 0.5 covers MIN_AREA the mask is exactly that set
    g = gen(7)
    exponents = torch.floor(torch.rand((n, 2), generator=g) * P.SCALE_EXPONENTS)
    angles = -P.MAX_ROTATION + 2 * P.MAX_ROTATION * torch.rand(n, generator=g)
    noise = P.perlin_noise(h, w, torch.pow(2.0, exponents), angles, g)
    above = (noise > P.THRESHOLD).float().mean((1, 2))
    big = above >= math.ceil(P.MIN_AREA * h * w) / (h * w)
    assert big.sum() > n // 2
    assert torch.equal(masks[big, 0], noise[big] > P.THRESHOLD)
    # the others were raised to (at least) the minimum area, the largest noise values
    small = ~big
    for i in small.nonzero().flatten()[:10]:
        chosen = noise[i][masks[i, 0]]
        assert chosen.min() >= noise[i][~masks[i, 0]].max()


def test_perlin_mask_scales_follow_draem():
    """k in 0..5 per axis: coarse blobs for 1 cell, fine speckle for 32 (their boundary length)."""
    g = gen(0)
    exps = torch.floor(torch.rand((4000, 2), generator=g) * P.SCALE_EXPONENTS)
    assert set(exps.flatten().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}


# ---------------------------------------------------------------- the texture operations


@pytest.mark.parametrize("c", [1, 3])
def test_texture_operations_keep_range_shape_and_draw_per_sample(c):
    x = images(5, c, 32, 40).float() / 255
    for draw, apply in P.TEXTURE_OPERATIONS:
        params = draw(5, c, gen(1), CPU)
        assert all(p.shape[0] == 5 for p in params)
        y = apply(x, *params)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 + 1e-6, apply.__name__


def test_equalize_is_pils_and_autocontrast_within_one_grey_level():
    a = np.random.default_rng(0).integers(40, 200, (1, 3, 50, 60)).astype(np.uint8)
    x = torch.from_numpy(a).float() / 255
    pil = Image.fromarray(a[0].transpose(1, 2, 0))
    ours = (P._equalize(x) * 255).round().byte()[0].permute(1, 2, 0).numpy()
    assert np.array_equal(ours, np.asarray(ImageOps.equalize(pil)))
    for cut in (0.0, 0.05, 0.15):
        ours = (P._autocontrast(x, torch.tensor([[cut]])) * 255).round()[0].permute(1, 2, 0).numpy()
        theirs = np.asarray(ImageOps.autocontrast(pil, cutoff=cut * 100)).astype(np.float32)
        assert np.abs(ours - theirs).max() <= 1


def test_sharpness_is_pils_within_one_grey_level():
    a = np.random.default_rng(1).integers(0, 256, (1, 3, 30, 40)).astype(np.uint8)
    x = torch.from_numpy(a).float() / 255
    for factor in (0.0, 0.5, 1.7):
        ours = (P._sharpness(x, torch.tensor([[[[factor]]]])) * 255).round()[0].permute(1, 2, 0).numpy()
        pil = ImageEnhance.Sharpness(Image.fromarray(a[0].transpose(1, 2, 0))).enhance(factor)
        assert np.abs(ours - np.asarray(pil).astype(np.float32)).max() <= 1


def test_invert_posterize_solarize_values():
    x = torch.tensor([0.0, 0.2, 0.6, 1.0]).view(1, 1, 1, 4)
    assert torch.allclose(P._invert(x), 1 - x)
    assert torch.equal(
        P._posterize(x, torch.tensor([[[[1.0]]]])), torch.tensor([0, 0, 128, 128]).view(1, 1, 1, 4) / 255
    )
    solar = P._solarize(x, torch.tensor([[[[True]]]]), torch.tensor([[[[0.5]]]]))
    assert torch.allclose(solar, torch.tensor([0.0, 0.2, 0.4, 0.0]).view(1, 1, 1, 4))


def test_texture_augmentation_draws_the_same_stream_whatever_the_content():
    """Every operation's parameters are drawn for every sample: the generator ends in the same
    state for any input, so a batch's later draws do not depend on image content or choices."""
    g1, g2 = gen(5), gen(5)
    P.augment_textures(images(4).float() / 255, g1)
    P.augment_textures(torch.zeros(4, 3, 48, 64), g2)
    assert torch.equal(g1.get_state(), g2.get_state())


# ---------------------------------------------------------------- Perlin anomalies


@pytest.mark.parametrize("shape", [(3, 48, 64), (1, 40, 40), (3, 33, 71)])
def test_perlin_anomalies_change_exactly_the_mask_by_draems_blend(shape, monkeypatch):
    """With an unchanged white texture and a black image, the blend (1 - beta) * 255 with
    beta < 0.8 is at least 51 inside the mask and 0 outside: the mask is exactly the anomaly."""
    monkeypatch.setattr(P, "augment_textures", lambda x, generator=None: x)
    c, h, w = shape
    black = torch.zeros((6, c, h, w), dtype=torch.uint8)
    white = torch.full((6, c, h, w), 255, dtype=torch.uint8)
    out, masks = P.perlin_anomalies(black, white, gen(2))
    assert out.dtype == torch.uint8 and out.shape == black.shape and masks.shape == (6, 1, h, w)
    inside = masks.expand_as(out)
    assert (out[~inside] == 0).all()
    assert (out[inside] >= round(255 * (1 - P.BETA_MAX))).all()
    assert (out[inside] <= 255).all()
    betas = 1 - out.float().amax((1, 2, 3)) / 255
    assert (betas >= -1e-6).all() and (betas <= P.BETA_MAX + 1e-2).all()


def test_perlin_anomalies_keep_pixels_outside_the_mask_and_repeat_with_the_seed():
    x, t = images(8), images(8, seed=1)
    out, masks = P.perlin_anomalies(x, t, gen(4))
    outside = ~masks.expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert (out != x).any()
    again, masks_again = P.perlin_anomalies(x, t, gen(4))
    assert torch.equal(again, out) and torch.equal(masks_again, masks)
    other, other_masks = P.perlin_anomalies(x, t, gen(5))
    assert not torch.equal(other_masks, masks)


def test_perlin_textures_of_another_size_are_resized():
    out, masks = P.perlin_anomalies(images(2, h=40, w=56), images(2, h=20, w=20), gen(0))
    assert out.shape == (2, 3, 40, 56) and masks.shape == (2, 1, 40, 56)


def test_perlin_rejects_bad_input_in_one_line():
    with pytest.raises(ValueError, match="uint8 images"):
        P.perlin_anomalies(images(2).float(), images(2), gen(0))
    with pytest.raises(ValueError, match="textures"):
        P.perlin_anomalies(images(2), images(3), gen(0))


# ---------------------------------------------------------------- CutPaste


def _no_jitter(monkeypatch):
    monkeypatch.setattr(CP, "_jitter_patches", lambda x, masks, jitter: x)


def _find_source(image: torch.Tensor, patch: torch.Tensor) -> list[tuple[int, int]]:
    ph, pw = patch.shape[-2:]
    h, w = image.shape[-2:]
    return [
        (y, x)
        for y in range(h - ph + 1)
        for x in range(w - pw + 1)
        if torch.equal(image[:, y : y + ph, x : x + pw], patch)
    ]


@pytest.mark.parametrize("c", [1, 3])
def test_cutpaste_pastes_a_rectangle_of_the_same_image_with_its_exact_mask(c, monkeypatch):
    _no_jitter(monkeypatch)
    x = images(12, c, 40, 56, seed=3)
    out, masks = CP.cutpaste_anomalies(x, False, gen(1))
    assert masks.shape == (12, 1, 40, 56) and masks.dtype == torch.bool
    for i in range(12):
        m = masks[i, 0]
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        top, left = int(rows[0]), int(cols[0])
        ph, pw = len(rows), len(cols)
        assert m.sum() == ph * pw and torch.equal(
            m[top : top + ph, left : left + pw], torch.ones(ph, pw, dtype=torch.bool)
        )
        area = ph * pw / (40 * 56)
        assert 0.02 * 0.8 <= area <= 0.15 * 1.2
        assert 0.3 * 0.75 <= pw / ph <= 1 / 0.3 / 0.75 or min(ph, pw) in (40, 56)
        assert torch.equal(out[i][:, ~m], x[i][:, ~m])  # nothing outside the mask changes
        assert _find_source(x[i], out[i][:, top : top + ph, left : left + pw])  # a piece of the image


def test_cutpaste_area_and_aspect_follow_the_paper():
    g = gen(0)
    h, w = torch.tensor([256.0]), 256
    hs, ws = [], []
    for _ in range(400):
        ph, pw, angle = CP.patch_sizes(1, 256, w, torch.tensor([False]), g, CPU)
        hs.append(float(ph)), ws.append(float(pw))
        assert float(angle) == 0.0
    area = np.array(hs) * np.array(ws) / (256 * 256)
    aspect = np.array(ws) / np.array(hs)
    assert area.min() >= 0.018 and area.max() <= 0.152 and area.mean() == pytest.approx(0.085, abs=0.01)
    assert aspect.min() >= 0.28 and aspect.max() <= 1 / 0.28
    assert abs(np.log(aspect).mean()) < 0.1  # log-uniform, symmetric about 1
    del h


def test_scar_is_a_thin_rotated_strip_of_scaled_size(monkeypatch):
    _no_jitter(monkeypatch)
    x = images(40, 3, 256, 256, seed=2)
    out, masks = CP.cutpaste_anomalies(x, True, gen(3))
    area = masks.float().sum((1, 2, 3))
    assert (area >= 2 * 10 * 0.7).all() and (area <= 16 * 25 * 1.15).all()
    assert torch.equal(out[~masks.expand_as(x)], x[~masks.expand_as(x)])
    rotated = [
        i
        for i in range(40)
        if masks[i, 0].float().sum() < masks[i, 0].any(1).sum() * masks[i, 0].any(0).sum() * 0.9
    ]
    assert len(rotated) > 20  # most scars are tilted: their box is larger than the strip
    half = CP.cutpaste_anomalies(images(40, 3, 128, 128, seed=2), True, gen(3))[1].float().sum((1, 2, 3))
    assert half.mean() < area.mean() / 2.5  # sizes scale with the image side (area ~ side²)


def test_cutpaste_on_tiny_images_and_per_sample_scar_choice():
    out, masks = CP.cutpaste_anomalies(images(4, 1, 28, 28), torch.tensor([True, False, True, False]), gen(0))
    assert out.shape == (4, 1, 28, 28) and (masks.sum((1, 2, 3)) >= 1).all()


def test_cutpaste_jitters_the_patch_within_a_tenth():
    x = torch.full((16, 3, 64, 64), 128, dtype=torch.uint8)
    out, masks = CP.cutpaste_anomalies(x, False, gen(0))
    changed = (out.float() - 128).abs()[masks.expand_as(out)]
    assert changed.max() <= 128 * 0.1 + 2 and changed.max() > 0


def test_cutpaste_contrast_pivots_on_the_patch_not_the_image(monkeypatch):
    """Contrast only, factor 0: the patch becomes its own mean grey (torchvision on the cut patch),
    whatever the rest of the image is."""
    x = torch.zeros(4, 3, 64, 64, dtype=torch.uint8)
    x[:, :, :, 32:] = 200  # right half bright, left half black
    order = torch.tensor([[1, 0, 2, 3]] * 4)
    factors = [torch.ones(4, 1, 1, 1), torch.zeros(4, 1, 1, 1), torch.ones(4, 1, 1, 1)]
    monkeypatch.setattr(CP, "_jitter_draws", lambda n, g, d: (order, factors, torch.zeros(4)))
    out, masks = CP.cutpaste_anomalies(x, False, gen(0))
    values = []
    for i in range(4):
        m = masks[i, 0]
        patch = out[i, :, m].float()
        assert patch.max() - patch.min() <= 1  # one grey: the patch's mean
        ph, pw = int(m.any(1).sum()), int(m.any(0).sum())
        window_means = torch.nn.functional.avg_pool2d(x[i : i + 1, :1].float(), (ph, pw), stride=1)
        assert ((window_means - patch.mean()).abs() <= 1).any()  # the mean of a cut rectangle
        values.append(float(patch.mean()))
    assert any(abs(v - 100) > 2 for v in values)  # not the whole image's mean grey


def test_cutpaste_repeats_with_the_seed():
    x = images(6)
    a, ma = CP.cutpaste_anomalies(x, False, gen(9))
    b, mb = CP.cutpaste_anomalies(x, False, gen(9))
    assert torch.equal(a, b) and torch.equal(ma, mb)


# ---------------------------------------------------------------- sources, the mix, batched injection


def _store(n: int = 10, c: int = 3, side: int = 40) -> TensorStore:
    a = images(n, c, side, side, seed=11).permute(0, 2, 3, 1).numpy()
    return TensorStore(a if c == 3 else a[..., 0])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_sources_keep_mode_and_size_and_repeat_with_the_rng(mode):
    c = 1 if mode == "L" else 3
    pool = TexturePool(_store(c=c), np.arange(5))
    image = Image.fromarray(np.asarray(images(1, c, 40, 52)[0].permute(1, 2, 0).squeeze(-1)))
    for source in (Perlin(pool), CutPaste(False), CutPaste(True)):
        out, mask = source(image, np.random.default_rng(3))
        assert out.mode == mode and out.size == image.size
        assert mask.dtype == bool and mask.shape == (52, 40)[::-1] and mask.any()
        again, mask_again = source(image, np.random.default_rng(3))
        assert np.array_equal(np.asarray(again), np.asarray(out)) and np.array_equal(mask, mask_again)
        diff = np.asarray(out) != np.asarray(image)
        assert not (diff.reshape(*mask.shape, -1).any(-1) & ~mask).any()  # changes only inside the mask
        pickle.loads(pickle.dumps(source))  # DataLoader workers


def test_texture_pool_draws_only_the_kept_images():
    store = _store(10)
    pool = TexturePool(store, np.array([2, 7]))
    drawn = {bytes(pool.draw(np.random.default_rng(i)).numpy()) for i in range(30)}
    assert drawn == {bytes(store.uint8(2).numpy()), bytes(store.uint8(7).numpy())}


def test_the_mix_draws_each_kind_with_its_share():
    mix = SyntheticMix({"perlin": 0.5, "scar": 0.2, "confetti": 0.3}, {"perlin": 1, "scar": 2, "confetti": 3})
    picks = [mix.choose(u) for u in np.linspace(0, 1, 10000, endpoint=False)]
    shares = {k: picks.count(k) / len(picks) for k in mix.kinds}
    assert shares == pytest.approx({"confetti": 0.3, "perlin": 0.5, "scar": 0.2}, abs=1e-3)
    assert (
        kind_text({"perlin": 0.5, "scar": 0.5}) == "perlin 0.5 + scar 0.5" and kind_text("perlin") == "perlin"
    )


def test_build_anomaly_source_registers_the_new_kinds():
    cfg = Config()
    nominal = (_store(), np.arange(10))
    for kind, cls in (("perlin", Perlin), ("cutpaste", CutPaste), ("scar", CutPaste)):
        cfg.anomalies.kind = kind
        assert isinstance(build_anomaly_source(cfg, 3, 40, 0, nominal=nominal), cls)
    cfg.anomalies.kind = {"perlin": 0.5, "confetti": 0.5}
    mix = build_anomaly_source(cfg, 3, 40, 0, nominal=nominal)
    assert isinstance(mix, SyntheticMix) and isinstance(mix.sources["confetti"], Confetti)
    assert batch_injector(mix).fallback is mix.sources["confetti"]
    cfg.anomalies.kind = "confetti"
    assert batch_injector(build_anomaly_source(cfg, 3, 40, 0)) is None  # existing kinds: unchanged path


def test_batch_injector_injects_coded_items_only_with_exact_masks():
    cfg = Config()
    cfg.anomalies.kind = {"perlin": 0.4, "cutpaste": 0.3, "scar": 0.3}
    source = build_anomaly_source(cfg, 3, 40, 0, nominal=(_store(), np.arange(10)))
    inject = BatchInjector(source)
    x = images(8, 3, 40, 40)
    codes = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    masks = torch.zeros(8, 1, 40, 40, dtype=torch.bool)
    out, m = inject(x, masks, codes, images(8, 3, 40, 40, seed=5), gen(0))
    assert torch.equal(out[codes == 0], x[codes == 0]) and not m[codes == 0].any()
    assert all(m[i].any() for i in range(8) if codes[i])
    assert torch.equal(out[~m.expand_as(x)], x[~m.expand_as(x)])
    assert m[2].sum() > m[3].sum()  # a CutPaste rectangle (>= 2 % of the image) against a scar


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def test_batched_injection_has_no_per_sample_python_loop():
    """Speed sanity: the number of tensor operations for a batch does not grow with its size (on the
    CPU it grows with how many of the ten texture operations the batch chose, up to all of them)."""
    cfg = Config()
    cfg.anomalies.kind = {"perlin": 0.5, "cutpaste": 0.25, "scar": 0.25}
    inject = BatchInjector(build_anomaly_source(cfg, 3, 40, 0, nominal=(_store(), np.arange(10))))
    counts = []
    for n in (128, 512):
        codes = torch.tensor([1, 2, 3, 1] * (n // 4))
        with _CountOps() as ops:
            inject(images(n, 3, 24, 24), None, codes, images(n, 3, 24, 24, seed=1), gen(0))
        counts.append(ops.count)
    assert counts[0] == counts[1]


# ---------------------------------------------------------------- the training set, batched path


def _training_set(kind, batched: bool, n: int = 12, probability: float = 0.5) -> TrainingSet:
    cfg = Config()
    cfg.anomalies.kind = kind
    store = _store(n, 3, 36)
    preprocess = {"input_size": 32, "normalisation": {"kind": "none"}, "resize": None, "crop": None}
    source = build_anomaly_source(cfg, 3, 32, 0, nominal=(store, np.arange(n)))
    return TrainingSet(
        store,
        dataset_spec("mvtec").train_transform(preprocess, 36),
        3,
        source=source,
        probability=probability,
        seed=0,
        batch_transform=dataset_spec("mvtec").batch_transform(preprocess) if batched else None,
        injector=batch_injector(source),
    )


def _loader_cfg(augment_on: str = "loader") -> Config:
    cfg = Config()
    cfg.data.num_workers, cfg.data.augment_on, cfg.train.batch_size = 0, augment_on, 6
    return cfg


@pytest.mark.parametrize("batched", [False, True])
def test_training_batches_mark_anomalies_with_their_masks(batched):
    ts = _training_set({"perlin": 0.5, "cutpaste": 0.25, "confetti": 0.25}, batched, probability=0.7)
    if batched:
        assert ts.injector is not None and ts.injector.fallback is not None
    seen = 0
    for batch in make_loader(ts, _loader_cfg(), CPU, seed=3, keys=("image", "label", "mask")):
        assert batch["image"].shape == (batch["label"].shape[0], 3, 32, 32)
        has = batch["mask"].flatten(1).amax(1)
        assert torch.equal(has > 0, batch["label"] == 1)  # every anomaly has a region, nominals none
        seen += int(batch["label"].sum())
    assert seen > 0


def test_batched_path_repeats_with_the_seed_on_loader_and_device():
    ts = _training_set({"perlin": 0.5, "scar": 0.5}, True, probability=1.0)

    def run(augment_on: str) -> list[torch.Tensor]:
        cfg = _loader_cfg(augment_on)
        aug = device_augment(ts, augment_on, CPU)
        out = []
        for b in make_loader(ts, cfg, CPU, seed=4, keys=("image", "label", "mask")):
            b = b if aug is None else aug(b)
            assert "synthetic" not in b and "texture" not in b
            out.append(torch.cat([b["image"], b["mask"]], 1))
        return out

    for augment_on in ("loader", "device"):
        first, second = run(augment_on), run(augment_on)
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(b[:, 3:].flatten(1).amax(1).all() for b in run("device"))  # probability 1: all anomalous


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA sync debug mode needs a GPU")
def test_device_injection_does_not_sync_on_cuda():
    cuda = torch.device("cuda")
    ts = _training_set({"perlin": 0.4, "cutpaste": 0.3, "scar": 0.3}, True, probability=1.0)
    batch = next(iter(make_loader(ts, _loader_cfg("device"), cuda, seed=0, keys=("image", "label", "mask"))))
    batch = {k: v.pin_memory() for k, v in batch.items()}
    aug = device_augment(ts, "auto", cuda)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        b = aug(dict(batch))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert b["mask"].flatten(1).amax(1).all().item()


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "{perlin: 0.5, cutpaste: 0.4}",
            "anomalies.kind: the shares of a mix must sum to 1, got 0.9 (perlin 0.5, cutpaste 0.4)",
        ),
        (
            "{perlin: 0.5, oe: 0.5}",
            "anomalies.kind: 'oe' cannot be part of a mix; a mix takes confetti, perlin, cutpaste, scar",
        ),
        ("{perlin: x, cutpaste: 0.5}", "anomalies.kind.perlin: expected a number, got 'x'"),
        ("{perlin: -0.5, cutpaste: 1.5}", "anomalies.kind.perlin: a share must be in [0, 1], got -0.5"),
        ("{}", "anomalies.kind: an empty mix"),
        (
            "perlinn",
            "anomalies.kind: 'perlinn' is not one of oe, confetti, perlin, cutpaste, scar, semi, none",
        ),
    ],
)
def test_bad_kinds_are_one_line_errors(value, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"anomalies.kind={value}"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_mix_is_one_value_later_layers_replace_it_whole(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "preset: [synth]\n"
        "presets:\n  synth: {anomalies: {kind: {perlin: 0.5, cutpaste: 0.5}}}\n"
        "anomalies: {kind: {scar: 1}}\n"
    )
    cfg = load_config(params)
    assert cfg.anomalies.kind == {"scar": 1.0}
    assert load_config(params, ["anomalies.kind=confetti"]).anomalies.kind == "confetti"
    assert load_config(params, ["anomalies.kind.perlin=1"]).anomalies.kind == {"perlin": 1.0}
    with pytest.raises(ConfigError, match="must sum to 1, got 0.6"):
        load_config(params, ["anomalies.kind.perlin=0.6"])
    rows = {key: where for key, _, where in explain_config(params)}
    assert rows["anomalies.kind.scar"].startswith(str(params))
    flat = load_config(params, ["anomalies.kind={perlin: 0.25, scar: 0.75}"]).flat()
    assert flat["anomalies.kind.perlin"] == 0.25 and flat["anomalies.kind.scar"] == 0.75
    assert anomaly_shares("perlin") == {"perlin": 1.0}
    assert CODES == {"perlin": 1, "cutpaste": 2, "scar": 3}


def test_a_preset_after_mvtec_semi_cannot_replace_its_real_defects(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "presets:\n"
        "  base: {anomalies: {kind: confetti}}\n"
        "  semi: {anomalies: {kind: semi, semi_k: 1}}\n"
        "  cpu: {anomalies: {kind: {perlin: 0.5, scar: 0.5}}, train: {epochs: 2}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(params, preset=["base", "semi", "cpu"])
    assert str(err.value) == (
        "preset cpu (listed after preset semi) replaces its anomalies.kind semi with {'perlin': 0.5, 'scar': 0.5}; "
        "list semi last in preset, e.g. [mvtec, cpu_mvtec, mvtec_semi]"
    )
    assert load_config(params, preset=["base", "cpu", "semi"]).anomalies.kind == "semi"
    assert (
        load_config(params, preset=["semi"], overrides=["anomalies.kind=perlin"]).anomalies.kind == "perlin"
    )


def test_the_random_init_presets_train_the_recommended_recipe():
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    recipe = {"cutpaste": 0.5, "scar": 0.5}
    for presets, dataset in (
        (["mvtec", "cpu_mvtec"], "mvtec"),
        (["folder"], "folder"),
        (["folder", "cpu_mvtec"], "folder"),
    ):
        cfg = load_config(params, [f"data.dataset={dataset}"], preset=presets)
        assert (cfg.anomalies.kind, cfg.train.bn_recalibration, cfg.model.pretrained) == (
            recipe,
            "nominal",
            False,
        )
    paper = load_config(params, ["data.dataset=mvtec"], preset=["mvtec"])  # pretrained: the paper's protocol
    assert (paper.anomalies.kind, paper.train.bn_recalibration, paper.model.pretrained) == (
        "confetti",
        "off",
        True,
    )
    semi = load_config(params, ["data.dataset=mvtec"], preset=["mvtec", "cpu_mvtec", "mvtec_semi"])
    assert semi.anomalies.kind == "semi"


def test_off_in_yaml_switches_the_presets_batchnorm_re_estimation_off(tmp_path):
    # YAML reads a bare `off` as false; the text keys whose choices include "off" take it back
    params = tmp_path / "p.yaml"
    params.write_text("train: {bn_recalibration: off, compile: off}\n")
    cfg = load_config(params)
    assert (cfg.train.bn_recalibration, cfg.train.compile) == ("off", "off")
    assert load_config(None, ["train.bn_recalibration=off"]).train.bn_recalibration == "off"
    with pytest.raises(ConfigError, match="train.bn_recalibration: 'on' is not one of off, nominal, train"):
        load_config(None, ["train.bn_recalibration=yes"])


def _bench_synthetic():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_synthetic.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_synthetic_table_and_goals_say_what_one_seed_measured():
    bs = _bench_synthetic()

    def row(s, recipe, bn, image, pixel):
        return {"set": s, "recipe": recipe, "seed": "0", "bn": bn, "image_auc": str(image), "pixel_auc": str(pixel),
                "aupro": "0.5", "separation_auc": "0.9", "train_s": "60", "error": ""}  # fmt: skip

    sets = ["grid", "hazelnut"]
    rows = [row("grid", "confetti", "off", 0.5, 0.7), row("hazelnut", "confetti", "off", 0.9, 0.8),
            row("grid", "mix", "nominal", 0.9, 0.9), row("hazelnut", "mix", "nominal", 0.85, 0.95)]  # fmt: skip
    table = bs.format_table(rows, sets)
    # one seed: a value without a std; the three-set means in bold
    assert (
        "| mix | nominal | 0.900 | 0.900 | 0.500 | 0.850 | 0.950 | 0.500 | **0.875** | **0.925** |" in table
    )
    goals = bs.goals(rows, sets, "mix", "nominal")
    assert "mean image_auc 0.700 -> 0.875 (+0.175, goal +0.10: met)" in goals
    assert "mean pixel_auc 0.750 -> 0.925 (+0.175, goal +0.05: met)" in goals
    assert "LOSES on hazelnut image_auc: 0.900 -> 0.850 (one seed: no std)" in goals
    rows.append(row("grid", "cutpaste", "off", 0.3, 0.6))
    rows.append(row("hazelnut", "cutpaste", "off", 0.9, 0.6))
    inverted = bs.goals(rows, sets, "cutpaste", "off")
    assert "INVERTED image scores on grid: mean image AUC 0.300" in inverted and "missed by" in inverted


def test_bench_image_score_table_compares_the_mean_and_the_maximum_per_set():
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("bench_image_score", bench / "bench_image_score.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))

    def row(s, seed, by_mean, by_max):
        return {
            "set": s,
            "recipe": "mix",
            "seed": seed,
            "bn": "nominal",
            "image_auc_mean": by_mean,
            "image_auc_max": by_max,
        }

    rows = [row("grid", "0", 0.2, 0.8), row("grid", "1", 0.4, 0.9), row("hazelnut", "0", 1.0, 0.9)]
    table = module.table(rows)
    # two seeds: mean ± sample std; one seed: the value alone; the mean over the sets in bold
    assert "| mix | mean | 0.300 ± 0.141 | 1.000 | **0.650** |" in table
    assert "| mix | max | 0.850 ± 0.071 | 0.900 | **0.875** |" in table
    assert table.splitlines()[0] == "| recipe | image score | grid | hazelnut | **mean of the sets** |"
