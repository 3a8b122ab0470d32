"""The inspection page on the cases of `fcdd predict`'s edges (issues 28, 27.4, 22): truncated and
foreign files are messages while the server goes on, GIFs are images, server folders list what they
cannot read, the model's fixed colour scale is the default, flagged images always get an outline,
and a calibration too small to hold alpha says so; on the server and in a real browser."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from app_helpers import CHROMIUM, rgb_png, running_app, train_tiny  # noqa: E402
from edge_files import png_bytes  # noqa: E402
from PIL import Image  # noqa: E402

from fcdd.app.catalog import ALPHA_STEPS  # noqa: E402
from fcdd.detector import Detector  # noqa: E402
from tests.pipeline.test_app_server import _finished, _job, _upload, serve  # noqa: E402, F401
from tests.unit.test_predict_edges import calibrated_model  # noqa: E402


def _probe_files(tmp_path: Path) -> dict[str, Path]:
    a = np.random.default_rng(2).integers(1, 256, (40, 36), dtype=np.uint8)
    files = {
        "cut.png": tmp_path / "cut.png",
        "drawing.png": tmp_path / "drawing.eps",
        "anim.gif": tmp_path / "a.gif",
    }
    files["cut.png"].write_bytes(png_bytes(a, rows=10))
    Image.fromarray(np.stack([a] * 3, -1)).save(files["drawing.png"], format="EPS")
    Image.fromarray(a).save(files["anim.gif"])
    files["good.png"] = rgb_png(tmp_path / "good.png")
    return files


def test_truncated_and_foreign_files_are_messages_and_gifs_are_scored(serve, tmp_path):  # noqa: F811
    model = calibrated_model(tmp_path / "m" / "model.pt", n=20, pixel_max=1e6)
    client = serve([model])
    job = _job(client, model)
    files = _probe_files(tmp_path)
    for name, path in files.items():
        assert _upload(client, job, path, name).status_code == 200
    done = _finished(client, job, model, len(files))
    by_name = {i["name"]: i for i in done["items"].values()}
    assert by_name["cut.png"]["error"].startswith("not a readable image (truncated")
    assert "not one of PNG, JPEG" in by_name["drawing.png"]["error"]
    assert {by_name["anim.gif"]["i"], by_name["good.png"]["i"]} <= set(done["results"])
    assert client.get("/api/setup").status_code == 200  # alive
    # the model's own colour scale and the alpha table's warnings, as fcdd predict has them
    from fcdd.decisions import alpha_warning
    from fcdd.overlay import model_scale

    card = client.get("/api/model", params={"ref": str(model)}).json()
    scale = model_scale(Detector.load(model).meta)
    assert card["scale"] == [scale.low, scale.span, scale.source]
    rows = {r["alpha"]: r for r in card["alphas"]}
    assert rows[0.05]["warning"] == alpha_warning({"n": 20}, 0.05) and rows[0.5]["warning"] is None
    # the download: every flagged image has a mask, and says how it was cut
    import csv
    import zipfile

    z = zipfile.ZipFile(
        io.BytesIO(client.get(f"/api/jobs/{job}/download", params={"ref": str(model), "alpha": 0.5}).content)
    )
    scored = list(csv.DictReader(io.StringIO(z.read("scores.csv").decode())))
    flagged = [r for r in scored if r["anomalous"] == "True"]
    assert flagged and all(r["mask_note"].startswith("no pixel above") for r in flagged)
    assert all((np.asarray(Image.open(io.BytesIO(z.read(r["mask"])))) > 0).any() for r in flagged)
    assert {r["path"] for r in csv.DictReader(io.StringIO(z.read("failures.csv").decode()))} == {
        "cut.png",
        "drawing.png",
    }


def test_server_folders_list_names_that_are_not_utf8_and_unreadable_folders(serve, tmp_path, monkeypatch):  # noqa: F811
    model = calibrated_model(tmp_path / "m" / "model.pt")
    root = tmp_path / "images"
    (root / "lot" / "locked").mkdir(parents=True)
    rgb_png(root / "lot" / "a.png")
    rgb_png(root / "lot" / "locked" / "b.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(os.fsencode(root / "lot"), b"caf\xe9.png"))
    locked = root / "lot" / "locked"
    if os.geteuid() == 0:  # root reads any folder: the kernel's answer to anyone else, simulated
        real = os.scandir

        def scandir(path="."):
            if Path(os.fsdecode(path)) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        client = serve([model], images_root=root.resolve())
        job = _job(client, model)
        answer = client.post(f"/api/jobs/{job}/folder", json={"path": "lot"}).json()
        assert answer == {"added": 1, "found": 1, "failed": 2}
        done = _finished(client, job, model, 3)
        errors = {i["name"]: i["error"] for i in done["items"].values() if i["error"]}
        assert errors == {
            "lot/caf\\xe9.png": "file name is not valid UTF-8 (shown with \\x escapes); rename the file to score it",
            "lot/locked": "folder not readable (Permission denied)",
        }
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} to drive")
def test_the_page_shows_the_probes_the_model_scale_and_the_warning(
    defect_folder, make_folder_config, tmp_path
):
    from playwright.sync_api import sync_playwright

    model = train_tiny(defect_folder, make_folder_config, tmp_path / "run")  # n = 15 calibration images
    files = _probe_files(tmp_path)
    uploads = [*files.values(), *(defect_folder / "defect" / f"d0{k}.png" for k in range(3))]
    with running_app(str(model), "--labels", str(tmp_path / "labels"), cwd=tmp_path) as (url, _):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#files", [str(f) for f in uploads])
            page.wait_for_function(
                "document.querySelector('#progress-text').textContent.includes('2 failed')"
                f" && document.querySelector('#progress-text').textContent.startsWith('Scored {len(uploads) - 2} of')"
            )
            messages = page.text_content("#messages")
            assert "cut.png: not a readable image (truncated" in messages and "drawing.eps" in messages
            assert page.input_value("#scale") == "model"  # the model's fixed scale by default
            page.wait_for_selector("#viewer-a[data-shown]")
            assert "model scale (q0.99 of 15 good images' highest pixel)" in page.inner_text(
                "#viewer-a .caption"
            )
            at = ALPHA_STEPS.index(0.05)
            page.eval_on_selector(
                "#alpha", f"el => {{ el.value = {at}; el.dispatchEvent(new Event('input')); }}"
            )
            from fcdd.decisions import alpha_warning  # here: the code before fails on what the page shows

            assert alpha_warning({"n": 15}, 0.05) in page.inner_text("#summary")
            page.eval_on_selector(
                "#alpha", "el => { el.value = el.max; el.dispatchEvent(new Event('input')); }"
            )
            flagged = page.locator("figure.thumb.flagged")
            assert flagged.count() > 0
            for k in range(flagged.count()):  # every flagged image shows a mask outline
                flagged.nth(k).click()
                page.wait_for_function("document.querySelector('#viewer-a').dataset.shown !== undefined")
                drawn = page.eval_on_selector(
                    "#viewer-a canvas.outline",
                    "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                    " let n = 0; for (let k = 3; k < d.length; k += 4) n += d[k] > 0; return n; }",
                )
                assert drawn > 0
            browser.close()
            assert not errors, errors
