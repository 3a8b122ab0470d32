"""Peak memory of ``fcdd predict`` for N and 4N images: it must not grow with the number of images.
``--large SIDE``: the cost of one large image instead, peak RSS over a SIDExSIDE RGB PNG against a
256 px one, in bytes per pixel (the 50-megapixel limit must fit in 2 GB).

Each count runs in a fresh Python process (``fcdd.cli.main``) that reports its peak resident set
size during the call (VmHWM, reset after the imports); images are random-noise PNGs of --size px, the model is an untrained
cnn28 (memory does not depend on the weights). ``--baseline DIR`` runs the same calls with
PYTHONPATH=DIR beside them (e.g. an export of an older commit), for a comparison in one run.

    python benchmarks/bench_predict_memory.py                    # N=8, 4N=32 images of 1024 px
    python benchmarks/bench_predict_memory.py --quick
    python benchmarks/bench_predict_memory.py --large 7000         # one 49-megapixel image
    git archive <commit> | tar -x -C /tmp/old && python benchmarks/bench_predict_memory.py --baseline /tmp/old
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# The peak is taken over the predict call only: importing torch alone peaks near 1 GB and would hide
# what predict itself holds, so the high-water mark is reset (Linux clear_refs "5") after imports.
CHILD = """
import resource, sys
import torch, fcdd.detector, fcdd.heatmaps
from fcdd.cli import main
try:
    open("/proc/self/clear_refs", "w").write("5")
    def peak_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
except OSError:
    def peak_kb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = main(sys.argv[1:])
print("MAXRSS_KB", peak_kb(), "RC", rc)
"""


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [folder / f"im{i:04d}.png" for i in range(n)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(p, compress_level=1)
    return paths


def write_large(path: Path, side: int) -> Path:
    """A smooth RGB PNG (quick to write; decoding costs the same as for any content)."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.empty((side, side, 3), np.uint8)
    for c, (a, b) in enumerate(((1, 0), (0, 1), (0.5, 0.5))):
        for y0 in range(0, side, 1024):  # a band at a time: the writer's memory stays small too
            rows = ramp[y0 : y0 + 1024, None]
            rgb[y0 : y0 + 1024, :, c] = (a * rows + b * ramp[None]).astype(np.uint8)
    Image.fromarray(rgb).save(path, compress_level=1)
    return path


def tiny_model(path: Path) -> Path:
    from fcdd.testing import tiny_detector

    return tiny_detector().save(path)


def peak_rss_mb(
    model: Path, folder: Path, out: Path, normalisation: str = "global", pythonpath: str | None = None
) -> float:
    """Peak RSS (MB) of one `fcdd predict` process over the images in ``folder``."""
    return run_predict(model, folder, out, normalisation, pythonpath)[0]


def run_predict(
    model: Path, folder: Path, out: Path, normalisation: str = "global", pythonpath: str | None = None
) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one `fcdd predict` process over the images in ``folder``."""
    argv = ["predict", "--model", str(model), "--out", str(out), "--device", "cpu", "--batch-size", "4"]
    argv += ["--normalisation", normalisation, str(folder)]
    # cwd outside any checkout: `python -c` puts the cwd first on sys.path, ahead of PYTHONPATH
    env = dict(os.environ, PYTHONPATH=pythonpath or str(ROOT), OMP_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=out.parent,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("MAXRSS_KB")), None)
    if line is None or not line.endswith("RC 0"):
        raise RuntimeError(f"fcdd predict failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return int(line.split()[1]) / 1024, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--n", type=int, default=8, help="N: the smaller image count (default 8; 4N is the larger)"
    )
    p.add_argument("--size", type=int, default=1024, help="image side in px (default 1024)")
    p.add_argument("--normalisation", choices=("global", "local"), default="global")
    p.add_argument("--baseline", help="a checkout to run beside this one (PYTHONPATH)")
    p.add_argument("--quick", action="store_true", help="N=2 images of 256 px (a smoke run)")
    p.add_argument("--large", type=int, metavar="SIDE", help="one SIDExSIDE image instead (bytes per pixel)")
    args = p.parse_args(argv)
    if args.large:
        return large_image(args)
    n, size = (2, 256) if args.quick else (args.n, args.size)
    from fcdd.testing.benchmark import header, table_head, table_row

    print(header(None, "fcdd predict: peak memory against the number of images"))
    with tempfile.TemporaryDirectory(prefix="fcdd-bench-predict-") as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "model.pt")
        folders = {}
        for count in (n, 4 * n):
            folders[count] = tmp / f"in{count}"
            write_images(folders[count], count, size)
        runs = [("this checkout", None)] + ([("baseline", args.baseline)] if args.baseline else [])
        print(f"\n`fcdd predict --normalisation {args.normalisation}`, {size}x{size} px images, peak RSS\n")
        print(table_head(["code", f"{n} images (MB)", f"{4 * n} images (MB)", "growth per extra image (MB)"]))
        for label, path in runs:
            peak = {
                c: peak_rss_mb(model, f, tmp / f"out-{label}-{c}", args.normalisation, path)
                for c, f in folders.items()
            }
            growth = (peak[4 * n] - peak[n]) / (3 * n)
            print(table_row([label, f"{peak[n]:.0f}", f"{peak[4 * n]:.0f}", f"{growth:.2f}"]), flush=True)
    return 0


def large_image(args) -> int:
    """Peak RSS of one large image against a 256 px one: what one more pixel costs."""
    from fcdd.testing.benchmark import header, table_head, table_row

    print(header(None, "fcdd predict: peak memory of one large image"))
    side = args.large
    with tempfile.TemporaryDirectory(prefix="fcdd-bench-predict-") as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "model.pt")
        for name, s in (("small", 256), ("large", side)):
            (tmp / name).mkdir()
            write_large(tmp / name / "im.png", s)
        runs = [("this checkout", None)] + ([("baseline", args.baseline)] if args.baseline else [])
        print(f"\n`fcdd predict --normalisation {args.normalisation}`, one RGB PNG, peak RSS and wall time\n")
        columns = [
            "code",
            "256x256 (MB)",
            f"{side}x{side} (MB)",
            "bytes per extra pixel",
            f"{side} px wall (s)",
        ]
        print(table_head(columns))
        for label, path in runs:
            small, _ = run_predict(model, tmp / "small", tmp / f"o-{label}-s", args.normalisation, path)
            large, wall = run_predict(model, tmp / "large", tmp / f"o-{label}-l", args.normalisation, path)
            per_pixel = (large - small) * 2**20 / (side * side - 256 * 256)
            print(
                table_row([label, f"{small:.0f}", f"{large:.0f}", f"{per_pixel:.1f}", f"{wall:.1f}"]),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
