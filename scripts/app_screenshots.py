"""Screenshots of the inspection page for the docs: Inspect (gallery + detail), Compare, and a
verdict being drawn. Start the page first (fcdd app MODEL_A MODEL_B ...), then:

    python scripts/app_screenshots.py http://127.0.0.1:7860/ --compare MODEL_B IMAGES... --out docs/images
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--compare", required=True, help="the second model's ref, as the picker lists it")
    ap.add_argument("--alpha-step", type=int, default=13, help="slider position (13: alpha 0.15)")
    ap.add_argument("--out", default="docs/images")
    args = ap.parse_args()
    out = Path(args.out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(args.url)
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#files", args.images)
        page.wait_for_function(
            f"document.querySelector('#progress-text').textContent.startsWith('Scored {len(args.images)} of')",
            timeout=300_000,
        )
        page.eval_on_selector(
            "#alpha", f"el => {{ el.value = {args.alpha_step}; el.dispatchEvent(new Event('input')); }}"
        )
        page.locator("figure.thumb").nth(0).click()
        page.wait_for_selector("#viewer-a[data-shown]")
        time.sleep(1)
        page.screenshot(path=str(out / "app_inspect.png"))
        page.click("#tab-compare")
        page.select_option("#model-b", args.compare)
        page.wait_for_function(
            f"document.querySelectorAll('#compare-table td.b img').length === {len(args.images)}",
            timeout=300_000,
        )
        page.wait_for_selector("#viewer-cb[data-shown]")
        time.sleep(1)
        page.screenshot(path=str(out / "app_compare.png"))
        browser.close()


if __name__ == "__main__":
    main()
