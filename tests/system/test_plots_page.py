"""`dvc plots show` of the evaluate stage, looked at in headless Chromium: one ROC chart per class
titled by it, one heatmap grid per class, one column that fits the window (nothing overflows
sideways). DVC's page loads Vega from a CDN; the test serves the same libraries from the
django-js-lib-vega-embed package (the dev extra) so that it runs offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcdd.data.datasets.fmnist import FMNIST_CLASSES
from fcdd.data.training_set import slug
from fcdd.heatmaps import heatmap_grid
from pipelines.stages import common
from pipelines.stages.evaluate import write_auc_bars, write_roc_points

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
VEGA = {"/npm/vega@": "vega5.js", "/npm/vega-lite@": "vega-lite5.js", "/npm/vega-embed@": "vega-embed6.js"}


def _plots_repo(repo: Path, classes: list[str], heatmap_count: int = 16) -> None:
    """A DVC repository with this checkout's dvc.yaml and plot settings, and evaluate outputs of
    ``classes`` as the stage writes them (grids drawn by fcdd.heatmaps at the default image count)."""
    repo.mkdir()
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(repo), "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=repo, check=True, env=env)
    shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy2(REPO / "params.yaml", repo / "params.yaml")  # dvc.yaml's ${...}
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(REPO / "pipelines" / "plots", repo / "pipelines" / "plots")
    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1):
        for i, cls in enumerate(classes):
            run = repo / common.EVAL_RUNS / slug(cls) / f"seed{seed}"
            run.mkdir(parents=True)
            fpr = np.sort(rng.random(40))
            (run / "roc_image.csv").write_text(
                "fpr,tpr\n" + "".join(f"{a},{min(1.0, a + 0.1 * i)}\n" for a in fpr)
            )
            rows.append({"class": cls, "seed": seed, "image_auc": 0.6 + 0.03 * i})
    (repo / common.HEATMAP_GRIDS).mkdir(parents=True)
    n = 2 * heatmap_count
    images = [rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(n)]
    heat = rng.random((n, 28, 28)).astype(np.float32)
    grid = heatmap_grid(
        images, heat, rng.random(n), np.arange(n) % 2, tmp := repo / "grid.png", max_images=heatmap_count
    )
    for cls in classes:  # the same picture for every class: the page's layout is what is tested
        shutil.copyfile(grid, repo / common.HEATMAP_GRIDS / f"{slug(cls)}.png")
    tmp.unlink()
    here = Path.cwd()
    try:
        import os

        os.chdir(repo)
        write_roc_points(common.ROC_POINTS, rows)
        write_auc_bars(common.AUC_BARS, {c: {"image_auc": 0.6 + 0.03 * i} for i, c in enumerate(classes)})
    finally:
        os.chdir(here)
    subprocess.run([str(VENV_BIN / "dvc"), "plots", "show", "-q"], cwd=repo, check=True, env=env)


@pytest.mark.slow
def test_plots_page_one_chart_and_grid_per_class_fits_the_window(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    vega = pytest.importorskip("js_lib_vega_embed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no system Chromium")
    static = Path(vega.__file__).parent / "static" / "js_lib_vega_embed"
    classes = list(FMNIST_CLASSES)
    repo = tmp_path / "repo"
    _plots_repo(repo, classes)
    page_file = repo / "dvc_plots" / "index.html"

    def serve(route):
        name = next((f for key, f in VEGA.items() if key in route.request.url), None)
        if name is None:
            return route.abort()
        return route.fulfill(path=str(static / name), content_type="application/javascript")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("https://cdn.jsdelivr.net/**", serve)
        page.goto(page_file.as_uri())
        page.wait_for_selector(".vega-embed svg", timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "plots.png"), full_page=True)
        sizes = page.evaluate(
            "() => ({scroll: document.documentElement.scrollWidth, window: window.innerWidth,"
            " height: document.documentElement.scrollHeight,"
            " images: Array.from(document.images).map(i => [i.getBoundingClientRect().right, i.naturalWidth]),"
            " text: Array.from(document.querySelectorAll('.vega-embed svg text')).map(t => t.textContent)})"
        )
        offline_note = page.is_visible("#fcdd-charts-offline")
        browser.close()
    assert not errors, errors
    assert not offline_note  # the scripts loaded: no note
    # nothing overflows sideways: the page is as wide as the window, every grid inside it
    assert sizes["scroll"] <= sizes["window"], sizes["scroll"]
    assert len(sizes["images"]) == len(classes)  # one heatmap grid per class, not one per figure
    assert all(right <= sizes["window"] for right, _ in sizes["images"])
    assert max(natural for _, natural in sizes["images"]) > sizes["window"]  # the grids were scaled down
    # one ROC chart per class, titled by the class
    assert "ROC per class (image level)" in sizes["text"]
    assert all(cls in sizes["text"] for cls in classes), sizes["text"]
    html = page_file.read_text()
    assert all(f"heatmaps/{slug(c)}.png" in html for c in classes)


@pytest.mark.slow
def test_plots_page_without_the_vega_scripts_says_why_its_charts_are_blank(tmp_path):
    """Offline (the CDN unreachable), the charts cannot draw: the page says so in a note above them,
    and the heatmap grids still show."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no system Chromium")
    repo = tmp_path / "repo"
    _plots_repo(repo, ["trouser", "bag"], heatmap_count=4)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("https://**", lambda route: route.abort())  # no internet
        page.goto((repo / "dvc_plots" / "index.html").as_uri())
        page.wait_for_load_state("load")
        note = page.inner_text("#fcdd-charts-offline") if page.is_visible("#fcdd-charts-offline") else ""
        charts = page.locator(".vega-embed svg").count()
        grids = page.evaluate("() => Array.from(document.images).filter(i => i.naturalWidth > 0).length")
        browser.close()
    assert "need the Vega scripts from cdn.jsdelivr.net, which did not load" in note
    assert charts == 0 and grids == 2
