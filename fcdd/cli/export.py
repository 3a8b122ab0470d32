"""``fcdd export``: a model as one ONNX, OpenVINO or TorchScript graph with its fcdd_export.json."""

from __future__ import annotations

import argparse
import json

from fcdd.cli.common import CLIError, add_tracking_arg, load_model
from fcdd.paths import writable_folder


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, OpenVINO or TorchScript",
        description="Write the model as one graph: preprocessed batch [B, C, H, W] -> score [B], heatmap "
        "[B, 1, H, W] (net, pseudo-Huber, receptive-field upsampling inside), plus fcdd_export.json with "
        "the preprocessing, sigma, quantile, calibration and file hashes. `fcdd predict --model DIR` and "
        "`fcdd info DIR` read it. Needs the export extra (pip install 'fcdd[export]').",
    )
    p.add_argument("model", help="model.pt file or MLflow URI (models:/NAME@champion)")
    add_tracking_arg(p)
    p.add_argument("--format", default="onnx", choices=("onnx", "openvino", "torchscript"))
    p.add_argument("--out", required=True, help="output folder (created; its export files are replaced)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcdd.export import export_detector

    writable_folder(args.out, "--out", CLIError)  # before the model loads
    det = load_model(args.model, "cpu", args.tracking_uri, exported=False)
    meta_path = export_detector(det, args.format, args.out, source=args.model)
    meta = json.loads(meta_path.read_text())
    c, h, w = meta["input"]["shape"][1:]
    print(
        f"exported {args.model} as {args.format}: {', '.join(meta['files'])} + {meta_path.name} in {args.out} "
        f"(input [B, {c}, {h}, {w}] -> score [B], heatmap [B, 1, {h}, {w}])"
    )
    return 0
