"""Pixel-wise AUC at MVTec scale: time, peak memory and error of ``fcdd.metrics.PixelAUC``.

    python benchmarks/bench_pixel_auc.py            # 1e8 pixels (100 images of 1000x1000), error on 1e7
    python benchmarks/bench_pixel_auc.py --quick    # 1e7 pixels, error on 1e6

Each measurement runs in its own subprocess so that ``ru_maxrss`` (peak resident memory) belongs
to it alone. Scores look like FCDD's: a 28x28 gamma map upsampled bilinearly to 1000x1000, plus
float64 noise (so the float32 storage is exercised), and a higher level inside elliptical defects.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from fcdd.testing.benchmark import header, table

SIDE = 1000


def synthetic_image(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (float64) and a defect mask for image i; one image in three has a defect."""
    rng = np.random.default_rng(i)
    low = rng.gamma(2.0, 0.5, (28, 28)).astype(np.float32)
    scores = np.asarray(Image.fromarray(low).resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float64)
    scores += rng.normal(0.0, 0.01, scores.shape)
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    if i % 3 == 0:
        cy, cx = rng.integers(150, SIDE - 150, 2)
        ry, rx = rng.integers(30, 140, 2)
        yy, xx = np.ogrid[:SIDE, :SIDE]
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        scores[mask] += rng.uniform(0.2, 1.5)
    return np.maximum(scores, 0.0), mask  # FCDD scores are >= 0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker_stream(n_images: int) -> dict:
    from fcdd.metrics import PixelAUC

    synthetic_image(0)
    baseline = _peak_rss_mb()
    pixel_auc = PixelAUC()
    update_s = 0.0
    for i in range(n_images):
        scores, mask = synthetic_image(i)
        start = time.perf_counter()
        pixel_auc.update(scores, mask)
        update_s += time.perf_counter() - start
    start = time.perf_counter()
    auc = pixel_auc.compute()
    compute_s = time.perf_counter() - start
    start = time.perf_counter()
    fpr, _ = pixel_auc.roc_curve(1000)
    curve_s = time.perf_counter() - start
    n_pos, n_neg = pixel_auc.counts
    return {
        "pixels": n_pos + n_neg,
        "anomalous": n_pos,
        "auc": auc,
        "update_s": update_s,
        "compute_s": compute_s,
        "curve_s": curve_s,
        "curve_points": len(fpr),
        "baseline_mb": baseline,
        "peak_mb": _peak_rss_mb(),
    }


def worker_error(n_images: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from fcdd.metrics import PixelAUC

    pixel_auc = PixelAUC()
    all_scores = np.empty((n_images, SIDE, SIDE))
    all_masks = np.empty((n_images, SIDE, SIDE), dtype=bool)
    for i in range(n_images):
        all_scores[i], all_masks[i] = synthetic_image(i)
        pixel_auc.update(all_scores[i], all_masks[i])
    start = time.perf_counter()
    exact = float(roc_auc_score(all_masks.ravel(), all_scores.ravel()))
    sklearn_s = time.perf_counter() - start
    streamed = pixel_auc.compute()
    return {"pixels": all_scores.size, "streamed": streamed, "exact": exact, "sklearn_s": sklearn_s}


def _run_worker(kind: str, n_images: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--images", str(n_images)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1e7 pixels instead of 1e8")
    parser.add_argument("--worker", choices=["stream", "error"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker_stream(args.images) if args.worker == "stream" else worker_error(args.images)
        print(json.dumps(result))
        return

    n_images, n_error = (10, 1) if args.quick else (100, 10)
    s = _run_worker("stream", n_images)
    title = f"PixelAUC, {n_images} images of {SIDE}x{SIDE} fed one at a time ({s['anomalous']:,} anomalous pixels)"
    print(header(None, title))
    columns = ["pixels", "update s", "compute s", "roc_curve s", "peak RSS MB", "over baseline MB", "AUC"]
    row = [f"{s['pixels']:.0e}", f"{s['update_s']:.2f}", f"{s['compute_s']:.2f}", f"{s['curve_s']:.2f}"]
    row += [f"{s['peak_mb']:.0f}", f"{s['peak_mb'] - s['baseline_mb']:.0f}", f"{s['auc']:.6f}"]
    print(table(columns, [row]))
    e = _run_worker("error", n_error)
    print(f"\nError against sklearn.metrics.roc_auc_score on float64 scores, first {n_error} images")
    columns = ["pixels", "PixelAUC (float32)", "sklearn (float64)", "abs error", "sklearn s"]
    row = [f"{e['pixels']:.0e}", f"{e['streamed']:.10f}", f"{e['exact']:.10f}"]
    row += [f"{abs(e['streamed'] - e['exact']):.1e}", f"{e['sklearn_s']:.2f}"]
    print(table(columns, [row]))


if __name__ == "__main__":
    main()
