"""Peak memory of the served model (pipelines/pyfunc.py) per request megapixel: picks the default
per-request pixel budget (pyfunc.DEFAULT_MAX_REQUEST_PIXELS) that fits 2 GB.

Each case runs in a fresh process: model loaded, one warm-up request, peak RSS reset (Linux
clear_refs), then one request of K random-noise PNGs (base64, as over HTTP) whose response is
serialised to JSON as the scoring server does. Reports the peak above the warm process.

    python benchmarks/bench_serve_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import base64, io, json, sys
import numpy as np, torch
from PIL import Image
from fcdd.testing import tiny_detector
from pipelines import pyfunc
from mlflow.pyfunc.scoring_server import predictions_to_json

net, count, side, fmt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(2)
if net == "cnn28":
    det = tiny_detector()
else:
    from fcdd.anomaly_map import ReceptiveFieldUpsampler
    from fcdd.config import Config, ModelConfig
    from fcdd.detector import Detector
    from fcdd.models import build_model
    model = build_model(Config(model=ModelConfig(net="vgg11_bn", input_size=224, pretrained=False)), in_channels=3)
    pre = {"input_size": 224, "channels": 3, "resize": None, "crop": None, "stored": 240,
           "normalisation": {"kind": "meanstd", "mean": [0.5] * 3, "std": [0.25] * 3}}
    det = Detector(model, ReceptiveFieldUpsampler(model.receptive_field, 8.0, 224), pre, {"net": {"net": "vgg11_bn"}})
m = pyfunc.FCDDPyfunc()
m.detector, m.max_pixels, m.max_request_pixels = det, 1 << 40, 1 << 40
rng = np.random.default_rng(0)
def frame(k, s):
    cells = []
    for _ in range(k):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
        cells.append(base64.b64encode(buf.getvalue()).decode())
    return pyfunc.pd.DataFrame({"image": cells})
predictions_to_json(m.predict(None, frame(1, 64), {"heatmap_format": fmt}), io.StringIO())
request = frame(count, side)
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")
before = rss("VmRSS:")
out = io.StringIO()
predictions_to_json(m.predict(None, request, {"heatmap_format": fmt}), out)
print(json.dumps({"peak_mb": rss("VmHWM:") - before}))
"""


def measure(net: str, count: int, side: int, fmt: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, net, str(count), str(side), fmt],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-800:])
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    from fcdd.testing.benchmark import header, table_head, table_row

    print(header(None, "the MLflow pyfunc: peak memory per request"))
    cases = (
        [("cnn28", 2, 512, "npy")]
        if args.quick
        else [
            ("cnn28", 4, 2048, "npy"),
            ("cnn28", 4, 2048, "list"),
            ("cnn28", 4, 2048, "none"),
            ("vgg11_bn", 4, 2048, "npy"),
            ("vgg11_bn", 64, 224, "npy"),
        ]
    )
    columns = [
        "net",
        "images",
        "side",
        "heatmap_format",
        "megapixels",
        "peak above idle (MB)",
        "MB per megapixel",
    ]
    print("\n" + table_head(columns))
    for net, count, side, fmt in cases:
        mpx = count * side * side / 1e6
        peak = measure(net, count, side, fmt)
        print(
            table_row([net, count, side, fmt, f"{mpx:.1f}", f"{peak:.0f}", f"{peak / mpx:.1f}"]), flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
