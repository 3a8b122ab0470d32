"""``fcdd predict``: score your own images, write scores.csv and heatmap overlays."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcdd.cli.common import CLIError, add_tracking_arg, check_device, finite_float, load_model, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="score your own images and write heatmaps",
        description="Score images (files, folders searched recursively, or glob patterns). Writes scores.csv "
        "(one row per image, written as it goes) and a heatmap overlay per image at the image's own resolution, "
        "with the score (p-value and decision where calibrated) and a colour bar below it. A file that cannot "
        "be read or scored, a name that is not UTF-8 or a sub-folder that cannot be read does not stop the "
        "call: it is named on stderr and in failures.csv (path, reason) and the rest is scored. --out is "
        "locked while a call writes it.",
        epilog="exit status: 0 every image scored; 1 some files failed (the others are scored, see "
        "failures.csv); 2 usage or model error, nothing scored.",
    )
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument(
        "--model",
        required=True,
        help="model.pt file, MLflow URI (models:/NAME@champion), or an exported folder / model.onnx / "
        "model.xml / model.ts (onnxruntime, OpenVINO, TorchScript on the CPU)",
    )
    add_tracking_arg(p)
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument(
        "--threshold",
        type=finite_float,
        help="label images with score > threshold 'defect', else 'good' (a finite number)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="false-alarm level of calibrated decisions: anomalous = p_value <= alpha; a binary mask "
        "PNG per anomalous image (default 0.01; needs a model trained with evaluation.calibration)",
    )
    p.add_argument(
        "--normalisation",
        choices=("model", "global", "local"),
        default="model",
        help="heatmap colour scale: fixed by the model, the same in every call (model, the default: 0 to "
        "the 0.99 quantile of its calibration images' highest pixel score), shared by the images of "
        "this call (global), or per image (local)",
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per batch, >= 1 (default 16)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-heatmaps", action="store_true", help="write scores only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcdd.predict import CalibratedDecisions, predict_files
    from fcdd.predict_inputs import check_output_folder, collect_images, output_lock, shown

    alpha = _alpha(args.alpha)
    out = Path(args.out)
    found = collect_images(args.inputs)
    created = not out.exists()
    check_output_folder(out, found)
    with output_lock(out, created):
        det = load_model(args.model, check_device(args.device), args.tracking_uri)
        calibration = _calibration(det, args.model, args.alpha, alpha)
        q = float(det.meta.get("quantile", 0.97))
        decisions = CalibratedDecisions(calibration, alpha, out, q) if calibration else None
        flagged = []

        def show(row: dict) -> None:
            decision = ""
            if decisions:
                flagged.append(row["anomalous"])
                decision = f"p={row['p_value']:.4f} {'ANOMALOUS' if row['anomalous'] else 'nominal':9s} "
            print(f"{row['score']:.5f}  {decision}{row.get('label', ''):6s} {row['path']}", flush=True)

        def skipped(path: str, reason: str) -> None:
            print(f"fcdd predict: failed: {path}: {reason}", file=sys.stderr, flush=True)

        result = predict_files(
            det,
            found.paths,
            out,
            batch_size=args.batch_size,
            threshold=args.threshold,
            normalisation=args.normalisation,
            heatmaps=not args.no_heatmaps,
            on_row=show,
            on_failure=skipped,
            decide=decisions,
            problems=found.problems,
        )
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    if decisions:
        print(
            f"{sum(flagged)} of {len(flagged)} images anomalous at alpha {alpha:g} "
            "(p_value <= alpha; masks beside)"
        )
    print(
        f"wrote {shown(out / 'scores.csv')} ({result.scored} images)"
        + (f" and {result.heatmaps} heatmaps" if result.heatmaps else "")
    )
    if result.failures:
        total = len(found.paths) + len(found.problems)
        print(
            f"fcdd predict: {len(result.failures)} of {total} files failed, listed in "
            f"{shown(out / 'failures.csv')}",
            file=sys.stderr,
        )
        return 1
    return 0


def _alpha(value: float | None) -> float:
    from fcdd import calibration as conformal

    if value is None:
        return conformal.DEFAULT_ALPHA
    try:
        return conformal.check_alpha(value, "--alpha")
    except conformal.CalibrationError as e:
        raise CLIError(str(e)) from None


def _calibration(det, ref: str, given: float | None, alpha: float) -> dict | None:
    """The model's calibration, or None (a note) for models trained without one."""
    from fcdd.decisions import alpha_warning

    calibration = det.meta.get("calibration")
    if not calibration:
        if given is not None:
            raise CLIError(
                f"{ref}: the model has no calibration (trained without evaluation.calibration), so "
                "--alpha cannot be used; retrain with evaluation.calibration or use --threshold"
            )
        print(f"note: {ref} has no calibration: no p-values or masks (use --threshold)", file=sys.stderr)
        return None
    warning = alpha_warning(calibration, alpha)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return calibration
