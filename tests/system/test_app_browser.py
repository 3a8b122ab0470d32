"""`fcdd app` in a real browser (headless Chromium driven by Playwright): started as a user starts
it on two trained, calibrated models, it shows heatmaps and scores for 8-bit and 16-bit uploads,
decides at the alpha of the slider, compares the two models, and writes verdicts to the labels
folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from app_helpers import CHROMIUM, png16, rgb_png, running_app, train_tiny
from PIL import Image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} to drive"),
]


@pytest.fixture(scope="module")
def models(defect_folder, make_folder_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("app-models")
    return [train_tiny(defect_folder, make_folder_config, out / f"s{seed}", seed=seed) for seed in (0, 1)]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(
            300_000
        )  # a CI machine shared with other jobs can be slow; failures stay failures
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
        browser.close()
        assert not errors, errors


def _flagged(page) -> int:
    return page.locator("figure.thumb.flagged").count()


def _set_alpha_step(page, step: str) -> None:
    page.eval_on_selector("#alpha", f"el => {{ el.value = {step}; el.dispatchEvent(new Event('input')); }}")


def test_inspect_decide_compare_and_record_a_verdict(models, defect_folder, page, tmp_path):
    uploads = [defect_folder / "defect" / f"d0{k}.png" for k in range(3)] + [
        defect_folder / "good" / "g00.png"
    ]
    uploads += [png16(tmp_path / "deep16.png", size=(48, 48)), rgb_png(tmp_path / "part.png", seed=3)]
    labels = tmp_path / "labels"
    with running_app(*map(str, models), "--labels", str(labels), cwd=tmp_path) as (url, _):
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#files", [str(p) for p in uploads])
        page.wait_for_function(
            f"document.querySelector('#progress-text').textContent.startsWith('Scored {len(uploads)} of')"
        )
        page.wait_for_selector("#viewer-a[data-shown]")
        # a heatmap is drawn from the model's map (32 x 32 for this net), and the score is shown
        painted = page.eval_on_selector(
            "#viewer-a canvas.heat",
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let k = 3; k < d.length; k += 4) n += d[k] > 0; return [c.width, c.height, n]; }",
        )
        assert painted == [32, 32, 32 * 32]
        assert "score" in page.inner_text("#viewer-a .caption") and "p-value" in page.inner_text("#facts")
        assert "deep16.png: 16-bit image" in page.text_content("#messages")
        assert page.locator("figure.thumb").count() == len(uploads)
        # the alpha slider decides: nothing below 1/(n+1), some images at alpha 0.5
        _set_alpha_step(page, "el.max")
        assert page.input_value("#alpha") and page.inner_text("#alpha-out") == "0.5"
        many = _flagged(page)
        summary_high = page.inner_text("#summary")
        _set_alpha_step(page, "0")
        assert _flagged(page) == 0 < many and "no image can be flagged" in page.inner_text("#summary")
        assert page.inner_text("#summary") != summary_high
        _set_alpha_step(page, "el.max")
        page.screenshot(path=str(tmp_path / "inspect.png"))
        # compare: the second model scores the same images, side by side
        page.click("#tab-compare")
        page.select_option("#model-b", str(models[1]))
        page.wait_for_function(
            f"document.querySelectorAll('#compare-table td.b img').length === {len(uploads)}"
        )
        page.wait_for_selector("#viewer-cb[data-shown]")
        cards = page.inner_text("#cards")
        assert str(models[0]) in cards and str(models[1]) in cards and "calibration n" in cards
        assert "they disagree on" in page.inner_text("#compare-summary")
        page.screenshot(path=str(tmp_path / "compare.png"))
        # a verdict: the selected image is a false alarm; then a missed defect with a drawn mask
        page.click("#tab-inspect")
        page.locator("figure.thumb").nth(0).click()
        page.wait_for_selector("#viewer-a[data-shown]")
        page.click("#false-alarm")
        page.wait_for_function("document.querySelector('#feedback-status').textContent.startsWith('Saved')")
        page.locator("figure.thumb").nth(1).click()
        page.wait_for_function("document.querySelector('#viewer-a').dataset.shown !== undefined")
        page.click("#draw")
        box = page.locator("#viewer-a canvas.draw").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=8)
        page.mouse.up()
        page.click("#missed-defect")
        page.wait_for_function(
            "document.querySelector('#feedback-status').textContent.includes('missed defect')"
        )
    with open(labels / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["verdict"] for r in rows] == ["false_alarm", "missed_defect"]
    assert (labels / rows[0]["image"]).is_file() and rows[0]["image"].startswith("good/")
    assert rows[0]["model"] == str(models[0]) and rows[0]["alpha"] == "0.5" and rows[0]["decision"]
    mask = np.asarray(Image.open(labels / rows[1]["mask"]))
    image = Image.open(labels / rows[1]["image"])
    assert mask.shape == (image.height, image.width) and 0 < (mask > 0).mean() < 0.5
