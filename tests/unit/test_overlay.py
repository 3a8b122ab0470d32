"""Overlays you can read (issue 27.4) and decisions you can trust (issue 22): the model's fixed
colour scale, the legend, band-by-band writing identical to the whole-image formulas, masks that are
never empty for a flagged image, and the warning for a calibration too small to hold alpha."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcdd import heatmaps as figs
from fcdd.cli import main
from fcdd.detector import Detector, to_pil
from fcdd.scoring import full_heatmap
from fcdd.testing import tiny_detector
from tests.unit.test_predict_edges import calibrated_model, write_images

torch.set_num_threads(1)


def rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_band_by_band_output_equals_the_whole_image_formulas(tmp_path):
    from fcdd import overlay
    from fcdd.pixel_grid import grid

    rng = np.random.default_rng(0)
    up = rng.random((28, 28)).astype(np.float32)
    for size in [(97, 131), (20, 17), (600, 7)]:
        full = full_heatmap(up, size)
        r, c = grid(up.shape, size)
        assert np.array_equal(up[r][:, c], full)
        image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        scale = overlay.ColourScale(0.1, 0.7, "model")
        overlay.BAND_PIXELS, saved = 3 * size[1] + 5, overlay.BAND_PIXELS  # several bands per image
        try:
            overlay.write_overlay(tmp_path / "o.png", image, up, scale, [("score 1", "black")])
        finally:
            overlay.BAND_PIXELS = saved
        got = np.asarray(Image.open(tmp_path / "o.png"))
        expected = figs.overlay(np.asarray(image), np.clip((full - 0.1) / 0.7, 0, 1))
        assert np.array_equal(got[: size[0], : size[1]], expected)
        assert got.shape[0] > size[0] and got.shape[1] == max(size[1], overlay.LEGEND_MIN_WIDTH)
    # the colour table is jet's, entry for entry
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.array_equal(overlay.colour(x), figs.colorize(x[None])[0])


def test_the_default_colour_scale_is_the_models_and_the_same_in_every_call(tmp_path, capsys):
    from fcdd import overlay

    model = calibrated_model(tmp_path / "model.pt")
    det = Detector.load(model)
    paths = write_images(tmp_path / "in", 3, size=(50, 44))
    hot = tmp_path / "hot" / "hot.png"  # an image far off the others: moves a shared scale
    hot.parent.mkdir()
    Image.fromarray(np.full((50, 44), 255, np.uint8)).save(hot)
    outs = []
    for k, inputs in enumerate(([paths[0]], [paths[0], hot, *paths[1:]])):
        out = tmp_path / f"out{k}"
        assert (
            main(["predict", "--model", str(model), "--out", str(out), "--alpha", "0.2", *map(str, inputs)])
            == 0
        )
        outs.append(np.asarray(Image.open(out / f"0000_{paths[0].stem}_heatmap.png")))
    assert np.array_equal(outs[0], outs[1])  # the same image, the same colours, whatever came with it
    scale = overlay.model_scale(det.meta)
    cal = det.meta["calibration"]
    assert scale.low == 0.0 and scale.span == pytest.approx(np.quantile(cal["pixel_max"], 0.99))
    up = det.score([paths[0]], full_size=False).heatmaps[0]
    expected = figs.overlay(
        np.asarray(to_pil(paths[0]).convert("RGB")), scale.unit(full_heatmap(up, (50, 44)))
    )
    assert np.array_equal(outs[0][:50, :44], expected)
    legend = outs[0][50:]
    assert legend.shape[0] >= 30 and (legend == 255).mean() > 0.5  # white band with text and the bar
    assert len({tuple(p) for p in legend.reshape(-1, 3)}) > 50  # the colour bar's many colours
    # global and local stay as options and differ from the model scale here
    out = tmp_path / "global"
    argv = ["predict", "--model", str(model), "--out", str(out), "--alpha", "0.2", "--normalisation"]
    assert main([*argv, "global", str(paths[0]), str(hot)]) == 0
    assert not np.array_equal(np.asarray(Image.open(out / f"0000_{paths[0].stem}_heatmap.png")), outs[0])


def test_a_model_without_calibration_falls_back_to_the_calls_scale_and_says_so(tmp_path, capsys):
    model = tiny_detector().save(tmp_path / "model.pt")
    write_images(tmp_path / "in", 2)
    assert main(["predict", "--model", str(model), "--out", str(tmp_path / "o"), str(tmp_path / "in")]) == 0
    err = capsys.readouterr().err
    assert "note: the model holds no colour scale (no calibration): heatmaps use this call's (global)" in err


def test_small_calibrations_warn_with_their_false_alarm_range(tmp_path, capsys):
    from fcdd.decisions import alpha_warning, far_range

    # n = 20 at alpha 0.05: rank 1 of 21, Beta(1, 20); a 20-image calibration once gave 0.145
    low, high = far_range(0.05, 20)
    assert low == pytest.approx(1 - 0.975 ** (1 / 20)) and high == pytest.approx(1 - 0.025 ** (1 / 20))
    assert low < 0.145 < high
    assert alpha_warning({"n": 20}, 0.05).startswith(
        "only n = 20 calibration images: at alpha 0.05 the false-alarm rate of this calibration can be "
        "anywhere in 0.00127-0.168 (95 % range over calibration draws, up to 3.4x alpha)"
    )
    assert alpha_warning({"n": 2000}, 0.05) is None and alpha_warning({"n": 2000}, 0.01) is None
    assert "no image can be flagged" in alpha_warning({"n": 20}, 0.01)
    model = calibrated_model(tmp_path / "model.pt", n=20)
    write_images(tmp_path / "in", 2)
    argv = [
        "predict",
        "--model",
        str(model),
        "--out",
        str(tmp_path / "o"),
        "--alpha",
        "0.05",
        str(tmp_path / "in"),
    ]
    assert main(argv) == 0
    assert f"warning: {alpha_warning({'n': 20}, 0.05)}\n" in capsys.readouterr().err


def test_a_flagged_image_always_gets_a_mask_and_says_how_it_was_cut(tmp_path):
    # A calibration whose good images had hotter pixels than any new image: the calibrated pixel
    # threshold marks nothing, yet images are flagged by their scores.
    from fcdd.decisions import mask_rule
    from fcdd.pixel_grid import values_at_size

    model = calibrated_model(tmp_path / "model.pt", pixel_max=1e6)
    det = Detector.load(model)
    paths = write_images(tmp_path / "in", 4, size=(61, 45), seed=3)
    out = tmp_path / "o"
    assert (
        main(["predict", "--model", str(model), "--out", str(out), "--alpha", "0.9", str(tmp_path / "in")])
        == 0
    )
    flagged = [r for r in rows(out / "scores.csv") if r["anomalous"] == "True"]
    assert flagged
    ups = dict(zip(map(str, paths), det.score(paths, full_size=False).heatmaps, strict=True))
    for r in flagged:
        mask = np.asarray(Image.open(out / r["mask"])) > 0
        assert mask.shape == (61, 45) and mask.any()
        assert r["mask_note"].startswith("no pixel above the calibrated pixel threshold 1e+06")
        up = ups[r["path"]]
        q = np.quantile(values_at_size(up, (61, 45)), 0.97)
        assert np.array_equal(mask, full_heatmap(up, (61, 45)) >= q)  # its most anomalous region
    # with a threshold some pixels pass, the calibrated cut stays as it was
    cal = det.meta["calibration"] | {"pixel_max": [0.0] * det.meta["calibration"]["n"]}
    rule = mask_rule(ups[flagged[0]["path"]], cal, 0.9, 0.97)
    assert rule.threshold == 0.0 and not rule.inclusive and rule.note == ""


def test_masks_are_cut_from_the_values_an_image_shows(tmp_path):
    """An image smaller than the map: the rule reads the values nearest resizing keeps, so its mask
    is never empty either."""
    from fcdd import overlay
    from fcdd.decisions import mask_rule
    from fcdd.pixel_grid import values_at_size

    up = np.zeros((28, 28), np.float32)
    up[1, 1] = 5.0  # one hot cell that a 10x10 image never samples
    size = (10, 10)
    values = values_at_size(up, size)
    assert values.max() == 0.0
    rule = mask_rule(values, {"n": 3, "image_scores": [0, 0, 0], "pixel_max": [1, 1, 1]}, 0.5, 0.97)
    buf = io.BytesIO()
    overlay.write_mask(buf, up, size, rule)
    assert (np.asarray(Image.open(buf)) > 0).any()
