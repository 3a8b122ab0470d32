"""The MLflow pages a person opens after a tracked `fcdd train`, in a real browser (headless
Chromium driven by Playwright) against `mlflow server` on a loopback port: the run page (the
heatmap figure, the training data under "Datasets", the training curves first), the registered
version's page (the model card and the heatmap) and the logged model's page (its versions).

FCDD_SCREENSHOTS=DIR keeps a screenshot of each page there (docs/images/ holds the documented ones).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from app_helpers import CHROMIUM
from net_helpers import free_port

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("playwright")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} to drive"),
]


@pytest.fixture(scope="module")
def tracked(defect_folder, make_folder_config, tmp_path_factory):
    """A tiny tracked, calibrated `fcdd train` (folder data, 32 px CNN) into an SQLite store."""
    from fcdd.cli.main import main

    work = tmp_path_factory.mktemp("mlflow-pages")
    store = f"sqlite:///{work / 'mlruns.db'}"
    cfg = make_folder_config(
        defect_folder,
        work,
        "train.epochs=3",
        "tracking.enabled=true",
        f"tracking.uri={store}",
        f"tracking.artifact_location={work / 'mlartifacts'}",
        "tracking.onnx=false",
        "evaluation.calibration=12",
    )
    data = cfg.to_dict()
    data.pop("preset")
    (work / "params.yaml").write_text(yaml.safe_dump(data))
    old = Path.cwd()
    os.chdir(work)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["train", "--params", str(work / "params.yaml")]) == 0
    finally:
        os.chdir(old)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    client = mlflow.MlflowClient(store)
    (version,) = client.search_model_versions("name='fcdd-folder-tiles'")
    return {"work": work, "store": store, "version": version, "run": client.get_run(version.run_id)}


@pytest.fixture(scope="module")
def server(tracked):
    """`mlflow server` on the store, as a user starts it (`mlflow ui` is the same server)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job workers: a page server only
    exe = Path(sys.executable).with_name("mlflow")
    args = [str(exe), "server", "--backend-store-uri", tracked["store"], "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*args, "--port", str(port), "--workers", "1"],
        cwd=tracked["work"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).read()
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not start in 300 s"
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.set_default_timeout(120_000)  # a shared CI machine can be slow; failures stay failures
        yield pg
        browser.close()


def _open(page, url: str, ready: str) -> None:
    page.goto(url)
    page.get_by_text(ready).first.wait_for()
    with contextlib.suppress(Exception):  # MLflow's assistant side panel, where the UI opens it
        page.locator("button:near(:text('MLflow Assistant'))").last.click(timeout=2000)


def _shot(page, name: str) -> None:
    if os.environ.get("FCDD_SCREENSHOTS"):
        page.wait_for_timeout(1500)
        page.screenshot(path=str(Path(os.environ["FCDD_SCREENSHOTS"]) / name))


def _shown_image(page, src_part: str) -> None:
    """An <img> whose source contains src_part has loaded (a real PNG, not a broken link)."""
    image = page.locator(f"img[src*='{src_part}']").first
    image.wait_for(state="attached")
    image.scroll_into_view_if_needed()
    page.wait_for_function(
        "part => [...document.images].some(i => i.src.includes(part) && i.complete && i.naturalWidth > 100)",
        arg=src_part,
    )


def test_run_page_shows_heatmaps_datasets_and_training_curves_first(tracked, server, page):
    run = tracked["run"]
    url = f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    _open(page, url, "heatmaps of test images")
    with contextlib.suppress(Exception):  # the description is folded at first
        page.get_by_text("Show more").first.click(timeout=5000)
    _shown_image(page, "figures%2Fheatmaps_local.png")
    _shot(page, "mlflow-run.png")
    body = page.inner_text("body")
    assert "folder/tiles" in body  # Datasets: the training data, by name
    metrics = page.locator(
        "text=/^(train\\/loss|train\\/lr|image_auc|n_test|calibration_n)$/"
    ).all_inner_texts()
    assert (
        metrics[:2] == ["train/loss", "train/lr"]
        and "n_test" not in metrics
        and "calibration_n" not in metrics
    )
    page.goto(url + "/model-metrics")
    page.get_by_text("train/loss").first.wait_for()
    first_chart = page.locator("text=/^(loss|lr|image_auc|a0\\.01_far|aupro)$/").first.inner_text()
    assert first_chart == "loss"  # the metrics tab opens on the training curves


def test_registered_version_page_shows_the_model_card_and_heatmaps(tracked, server, page):
    version = tracked["version"]
    _open(page, f"{server}/#/models/{version.name}/versions/{version.version}", "Recommended alpha")
    body = page.inner_text("body")
    for text in (
        "FCDD anomaly detector for class tiles of the folder data",
        "Image AUC",
        "12 held-out good images",
        "smallest usable alpha 0.0769",
        f"mlflow models serve -m models:/{version.name}/{version.version} --env-manager local",
        f"fcdd predict path/to/images --model models:/{version.name}/{version.version}",
    ):
        assert text in body, text
    assert "n_test=" not in body and "metric.n_test" not in body
    _shown_image(page, "figures%2Fheatmaps_local.png")
    _shot(page, "mlflow-version.png")


def test_logged_model_page_lists_its_registered_version_and_its_data(tracked, server, page):
    version, run = tracked["version"], tracked["run"]
    model_id = version.source.removeprefix("models:/")
    url = f"{server}/#/experiments/{run.info.experiment_id}/models/{model_id}"
    _open(page, url, "Model versions")
    _shot(page, "mlflow-logged-model.png")
    section = page.get_by_text("Model versions").first.locator("xpath=ancestor::*[3]")
    text = section.inner_text()
    assert version.name in text and f"v{version.version}" in text, text
    assert "Not registered" not in page.inner_text("body")
    # "Datasets used": the data its metrics were measured on (the model's metrics name it)
    datasets = page.get_by_text("Datasets used").first.locator("xpath=ancestor::*[3]").inner_text()
    assert "folder/tiles" in datasets, datasets
