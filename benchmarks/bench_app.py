"""The inspection page (`fcdd app`) in headless Chromium, on an exported ONNX model (VGG11-BN at 224,
random weights with a calibration from its own scores: speed does not depend on the weights).

1. Heatmap latency: a fresh browser page opens the app, a 1-megapixel JPEG is uploaded, and the
   clock stops when the first frame with its heatmap is painted (page load included; timed in the
   page, as Playwright's own waiting polls too coarsely for a sub-second page). Beside it, in the same run, the bare
   work: `read_image` + `ExportedDetector.score` of the same file in one process (the page's
   overhead is the difference).
2. Responsiveness while a folder of N images (default 500, 512x512 JPEG) is scored: every second
   the benchmark clicks a scored thumbnail and times until its heatmap is drawn, moves the alpha
   slider and times the page's update, and reads the progress line.

    python benchmarks/bench_app.py                 # 7 latency runs, 500 images
    python benchmarks/bench_app.py --quick         # 2 runs, 40 images (the test)

Needs Chromium at /usr/bin/chromium and the app extra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcdd.backends import ExportedDetector
from fcdd.data.image_io import read_image
from fcdd.export import export_detector
from fcdd.testing import running_app, untrained_detector
from fcdd.testing.benchmark import header, measure, table

CHROMIUM = Path("/usr/bin/chromium")


def make_export(folder: Path) -> Path:
    det = untrained_detector("vgg11_bn", 224, torch.device("cpu"))
    rng = np.random.default_rng(0)
    cal = det.score([rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(20)], batch_size=4)
    det.meta["calibration"] = {
        "n": 20,
        "image_scores": [float(s) for s in cal.scores],
        "pixel_max": [float(h.max()) for h in cal.heatmaps],
    }
    det.meta["quantile"] = 0.99
    export_detector(det, "onnx", folder / "onnx", source="bench")
    return folder / "onnx"


def texture(path: Path, side: int, seed: int) -> Path:
    """A smooth photo-like texture as JPEG (noise would make JPEGs unusually large)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (side // 32 + 1, side // 32 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
    img.save(path, quality=90)
    return path


def bare_latency(export: Path, image: Path, runs: int) -> list[float]:
    det = ExportedDetector.load(export)
    det.score([read_image(image)])  # warm-up
    return measure(lambda: det.score([read_image(image)], full_size=False), warmup=0, repeats=runs).wall


# Installed before the page's own script: the wall-clock time of the first frame painted after the
# viewer shows a heatmap (the next animation frame, then the task after it). Playwright's own
# wait_for_selector polls at up to 500 ms intervals, too coarse to time a sub-second page.
PAINT_PROBE = """
new MutationObserver((_, observer) => {
  const viewer = document.querySelector('#viewer-a');
  if (!viewer || !viewer.hasAttribute('data-shown')) return;
  observer.disconnect();
  requestAnimationFrame(() => setTimeout(() => {
    window.__fcddPainted = performance.timeOrigin + performance.now();
  }, 0));
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-shown']});
"""


def page_latency(browser, url: str, image: Path, runs: int) -> tuple[list[float], list[float]]:
    """Per run: (page ready, heatmap painted) in seconds from just before the page is opened."""
    loads, totals = [], []
    for _ in range(runs + 1):  # the first run warms the server's model up: not counted
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.add_init_script(PAINT_PROBE)
        t0 = time.time()  # wall clock: the page's performance.timeOrigin is one too
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        t1 = time.time()
        page.set_input_files("#files", str(image))
        painted = page.wait_for_function("window.__fcddPainted", timeout=60_000, polling=20).json_value()
        loads.append(t1 - t0)
        totals.append(painted / 1000 - t0)
        context.close()
    return loads[1:], totals[1:]


def responsiveness(browser, url: str, images: list[Path]) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    t0 = time.perf_counter()
    page.set_input_files("#files", [str(p) for p in images])
    clicks, sliders, progress = [], [], []
    n = len(images)
    while not page.inner_text("#progress-text").startswith(f"Scored {n} of"):
        progress.append(page.inner_text("#progress-text"))
        thumbs = page.locator("figure.thumb")
        if thumbs.count() > 1:
            page.evaluate("document.querySelector('#viewer-a').removeAttribute('data-shown')")
            t = time.perf_counter()
            thumbs.nth(thumbs.count() - 1).click()
            page.wait_for_selector("#viewer-a[data-shown]", timeout=60_000)
            clicks.append(time.perf_counter() - t)
            sliders.append(
                page.evaluate(
                    "() => { const el = document.querySelector('#alpha'); const t = performance.now();"
                    " el.value = (+el.value + 1) % (+el.max + 1); el.dispatchEvent(new Event('input'));"
                    " return (performance.now() - t) / 1000; }"
                )
            )
        time.sleep(1.0)
        if time.perf_counter() - t0 > 1800:
            raise RuntimeError("scoring did not finish in 30 minutes")
    total = time.perf_counter() - t0
    page.close()
    return {"total": total, "clicks": clicks, "sliders": sliders, "progress": progress, "n": n}


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{1000 * statistics.median(values):.0f} ms (max {1000 * max(values):.0f}, n={len(values)})"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="heatmap latency runs (median reported)")
    ap.add_argument("--folder-images", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="2 runs, 40 images")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.folder_images = 2, 40
    if not CHROMIUM.exists():
        sys.exit(f"bench_app: no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        tmp = Path(tmp)
        export = make_export(tmp)
        image = texture(tmp / "one_megapixel.jpg", 1024, 0)
        folder = tmp / "folder"
        folder.mkdir()
        images = [texture(folder / f"{k:03d}.jpg", 512, k + 1) for k in range(args.folder_images)]
        bare = bare_latency(export, image, args.runs)
        with running_app(str(export), "--labels", str(tmp / "labels"), cwd=tmp) as (url, _):
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                loads, totals = page_latency(browser, url, image, args.runs)
                resp = responsiveness(browser, url, images)
                browser.close()
    print(header("cpu", "bench_app (the CPU may be shared: medians)"))
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    rate = f"{resp['total']:.1f} s ({resp['n'] / resp['total']:.1f} images/s)"
    rows = [
        ["page load (open to ready)", _ms(loads)],
        ["1-megapixel JPEG: open page, upload, heatmap painted", _ms(totals)],
        ["bare read_image + ExportedDetector.score of the same file", _ms(bare)],
        [f"{resp['n']} images scored through the page", rate],
        ["while scoring: click a thumbnail -> its heatmap drawn", _ms(resp["clicks"])],
        ["while scoring: alpha slider -> page updated", _ms(resp["sliders"])],
    ]
    print(table(["measure", "median"], rows))
    shown = [p for p in resp["progress"] if p.startswith("Scored")]
    print(f"progress lines seen: {len(shown)}, e.g. {shown[len(shown) // 2] if shown else '-'!r}")
    return {"loads": loads, "totals": totals, "bare": bare, **resp}


if __name__ == "__main__":
    main()
