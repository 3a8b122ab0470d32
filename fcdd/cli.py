"""The ``fcdd`` command: train, evaluate, predict, export, info, config, init, app."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import yaml

from fcdd.config import ConfigError, load_config
from fcdd.errors import FCDDError, UsageError


class CLIError(UsageError):
    """A user error: printed as one line, exit status 2."""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="configuration file (default: params.yaml)")
    p.add_argument("--preset", nargs="+", help="presets of params.yaml to apply instead of its `preset` key")
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a setting, e.g. -o train.epochs=3 (repeatable; the value is YAML)",
    )


def _config(args, extra: list[str] = ()):
    params = args.params if Path(args.params).is_file() or args.params != "params.yaml" else None
    return load_config(params, [*args.override, *extra], preset=args.preset)


def _add_tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow store for models:/ URIs (default: $MLFLOW_TRACKING_URI, else tracking.uri of ./params.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcdd",
        description="FCDD: explainable one-class anomaly detection (Liznerski et al., ICLR 2021).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train and evaluate one model per class and seed",
        description="Train FCDD one-vs-rest for each class and seed, evaluate it on the test set and write "
        "runs/<dataset>/<class>/seed<k>/ (model.pt, metrics.json, scores.csv, figures/). "
        "A run folder with a checkpoint of the same settings resumes where it stopped; one of other "
        "settings is an error (--restart discards it).",
    )
    _add_config_args(p)
    p.add_argument(
        "--dataset", help="fmnist | cifar10 | imagenet30 | mvtec | folder (overrides data.dataset)"
    )
    p.add_argument("--root", help="raw data folder or zip (overrides data.root)")
    p.add_argument("--classes", nargs="+", help="classes to train (default: data.classes, else all)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: train.seeds)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard what earlier runs left in the run folders (checkpoint, model, metrics) and train "
        "from scratch; without it a checkpoint resumes only when it was made with the same settings",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained model on its test set",
        description="Score the test set of the model's dataset and class: image AUC, pixel AUC and AUPRO where "
        "masks exist, scores.csv, ROC curves and heatmap figures. The split (dataset, root, folder spec, limits, "
        "semi-supervised split) is rebuilt from the configuration stored in the model, from any folder; "
        "--params, --preset, -o and --root override it explicitly.",
    )
    p.add_argument("model", help="a model.pt file, or an MLflow URI such as models:/fcdd-mvtec-grid@champion")
    _add_tracking_arg(p)
    _add_config_args(p)
    p.add_argument(
        "--root", help="raw data folder (default: the model's data.root, as given or as resolved at training)"
    )
    p.add_argument("--out", default=None, help="output folder (default: evaluation/<dataset>/<class>)")
    # The model's stored configuration rebuilds its split; a params file applies only when named.
    p.set_defaults(func=cmd_evaluate, params=None)

    p = sub.add_parser(
        "predict",
        help="score your own images and write heatmaps",
        description="Score images (files, folders searched recursively, or glob patterns). Writes scores.csv "
        "(one row per image, written as it goes) and a heatmap overlay per image at the image's own resolution. "
        "A file that cannot be read or scored does not stop the call: it is named on stderr and in "
        "failures.csv (path, reason) and the rest is scored.",
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
    _add_tracking_arg(p)
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument(
        "--threshold",
        type=_finite_float,
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
        choices=("global", "local"),
        default="global",
        help="heatmap colour scale: shared by all images of the call (global) or per image (local)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per batch, >= 1 (default 16)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-heatmaps", action="store_true", help="write scores only")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="export a model to ONNX, OpenVINO or TorchScript",
        description="Write the model as one graph: preprocessed batch [B, C, H, W] -> score [B], heatmap "
        "[B, 1, H, W] (net, pseudo-Huber, receptive-field upsampling inside), plus fcdd_export.json with "
        "the preprocessing, sigma, quantile, calibration and file hashes. `fcdd predict --model DIR` and "
        "`fcdd info DIR` read it. Needs the export extra (pip install 'fcdd[export]').",
    )
    p.add_argument("model", help="model.pt file or MLflow URI (models:/NAME@champion)")
    _add_tracking_arg(p)
    p.add_argument("--format", default="onnx", choices=("onnx", "openvino", "torchscript"))
    p.add_argument("--out", required=True, help="output folder (created; its export files are replaced)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "info", help="what a model file holds", description="Print a model's network, data and metrics."
    )
    p.add_argument("model", help="model.pt file, exported folder or MLflow URI")
    _add_tracking_arg(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "config",
        help="print the resolved configuration",
        description="Print params.yaml after presets/overrides; --explain says where each value came from.",
    )
    _add_config_args(p)
    p.add_argument(
        "--explain",
        action="store_true",
        help="one line per value: the value and its source (default, preset NAME, FILE (section), override)",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "init",
        help="write a params file for your own data",
        description="Write a params file holding only your data and the presets you choose (their "
        "definitions copied in) plus commented hints. Unlike a copy of the project's params.yaml, "
        "nothing in it overrides the presets behind your back.",
    )
    p.add_argument("--dataset", required=True, help="folder | mvtec | fmnist | cifar10 | imagenet30")
    p.add_argument("--root", required=True, help="the data folder (or zip)")
    p.add_argument(
        "--preset", nargs="+", help="presets to use (default: the dataset's, plus cpu_mvtec/cpu without CUDA)"
    )
    p.add_argument("--out", default="params.yaml", help="file to write (default: params.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument(
        "--presets-from", help="params file defining the presets (default: ./params.yaml, else --out)"
    )
    p.add_argument("--classes", nargs="+", help="class name(s) (data.classes)")
    p.add_argument("--nominal", nargs="+", help="folder: defect-free image folders/globs under --root")
    p.add_argument("--anomalous", nargs="+", help="folder: defective image folders/globs (test only)")
    p.add_argument("--masks", nargs="+", help="folder: mask folders/globs, matched to images by stem")
    p.add_argument("--mask-suffix", help="folder: mask stem = image stem + suffix, e.g. _mask")
    p.add_argument(
        "--tracking", choices=("on", "off"), help="write tracking.enabled (default: the config's default)"
    )
    p.set_defaults(func=cmd_init)

    from fcdd.app.command import add_parser as add_app_parser

    add_app_parser(sub)
    return parser


# ------------------------------------------------------------------ commands
class EpochLine:
    """One stderr line per finished epoch: the progress bar shows only on a terminal, and a
    redirected `fcdd train` should still say how far it is."""

    def __init__(self, run: str, epochs: int):
        self.run, self.epochs = run, epochs

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        print(
            f"{self.run}: epoch {epoch}/{self.epochs} loss {logs['loss']:.4g}, lr {logs['lr']:.3g}, "
            f"{logs['images_per_s']:.0f} images/s",
            file=sys.stderr,
            flush=True,
        )


def cmd_train(args) -> int:
    from fcdd.data import class_names
    from fcdd.engine import resolve_device
    from fcdd.experiment import canonical_class, class_slug, run_experiment
    from fcdd.metrics import aggregate

    extra = []
    if args.dataset:
        extra.append(f"data.dataset={args.dataset}")
    if args.root:
        extra.append(f"data.root={json.dumps(args.root)}")
    cfg = _config(args, extra)
    classes = args.classes or cfg.data.classes or class_names(cfg)
    for cls in classes:
        canonical_class(cfg, cls)  # an unknown class fails here, before any MLflow run is opened
    seeds = args.seeds or cfg.train.seeds
    tracked = _tracked_runner(cfg)
    resolve_device(cfg.train.device)  # cuda without CUDA: said before anything is opened or loaded
    _check_data_root(cfg)  # a missing root too: before tracking creates its store (mlruns.db)
    rows = []
    for cls in classes:
        for seed in seeds:
            callbacks = EpochLine(f"{cls} seed {seed}", cfg.train.epochs)
            if tracked is None:
                result = run_experiment(cfg, cls, seed, callbacks=callbacks, restart=args.restart)
                m, run_dir, note = result.metrics, result.run_dir, ""
            else:  # the flows' code path: MLflow run, metrics, artifacts, registered version
                m = tracked(cfg, cls, seed, callbacks=callbacks, restart=args.restart)
                run_dir = m["run_dir"]
                note = f"; MLflow run {m.get('mlflow_run_id')}"
                if m.get("model_name"):
                    note += f", registered {m['model_name']} version {m['model_version']}"
                    note += " (champion)" if m.get("champion") else ""
            rows.append(
                {"class": cls, "seed": seed, **{k: m.get(k) for k in ("image_auc", "pixel_auc", "aupro")}}
            )
            print(f"{cls} seed {seed}: " + _fmt_metrics(m) + f"  -> {run_dir}{note}", flush=True)
    summary = aggregate(rows)
    out = Path(cfg.train.output_dir) / cfg.data.dataset
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"mean over {len(classes)} classes: " + _fmt_metrics(summary["mean"]))
    print(f"per-class table: {out / 'summary.json'}  (class folders: {', '.join(map(class_slug, classes))})")
    return 0


def cmd_evaluate(args) -> int:
    import dataclasses

    from fcdd.data import build_datasets
    from fcdd.experiment import class_slug, evaluate
    from fcdd.stored_config import config_from_model

    det = _load_detector(args.model, "auto", args.tracking_uri, exported=False)
    meta = det.meta
    extra = [f"data.root={json.dumps(args.root)}"] if args.root else []
    if "config" in meta:  # the split the model was trained with, from any folder
        cfg = config_from_model(meta, args.model, args.params, [*args.override, *extra], args.preset)
    else:  # a model.pt of an older version: the params file, with the model's dataset and net
        args.params = args.params or "params.yaml"
        extra.append(f"data.dataset={meta['dataset']}")
        extra += [
            f"model.{k}={json.dumps(v)}"
            for k, v in meta["net"].items()
            if k not in ("pretrained", "weights_path")
        ]
        cfg = _config(args, extra)
    # The test split does not depend on the OE pool: do not load it (nor need its path) to evaluate.
    data_cfg = cfg
    if cfg.anomalies.kind == "oe":
        data_cfg = dataclasses.replace(cfg, anomalies=dataclasses.replace(cfg.anomalies, kind="none"))
    data = build_datasets(data_cfg, meta["class"], int(meta.get("seed", 0)))
    out = Path(args.out or Path("evaluation") / meta["dataset"] / class_slug(meta["class"]))
    metrics, artifacts = evaluate(det, data.test, cfg, out, title=f"{meta['dataset']} · {meta['class']}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(_fmt_metrics(metrics))
    print(f"wrote {out / 'metrics.json'}, {len(artifacts)} artifacts in {out}")
    return 0


def cmd_predict(args) -> int:
    from fcdd.predict import predict_files

    alpha = _check_cli_alpha(args.alpha)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is an existing file, not a folder")
    paths = _collect_images(args.inputs)
    det = _load_detector(args.model, _predict_device(args.device), args.tracking_uri)
    calibration = _predict_calibration(det, args.model, args.alpha, alpha)
    flagged = []

    def show(row: dict) -> None:
        decision = ""
        if calibration:
            flagged.append(row["anomalous"])
            decision = f"p={row['p_value']:.4f} {'ANOMALOUS' if row['anomalous'] else 'nominal':9s} "
        print(f"{row['score']:.5f}  {decision}{row.get('label', ''):6s} {row['path']}", flush=True)

    def skipped(path: str, reason: str) -> None:
        print(f"fcdd predict: failed: {path}: {reason}", file=sys.stderr, flush=True)

    def decide(i: int, path: Path, score: float, heatmap) -> dict:
        return _calibrated_decision(calibration, score, heatmap, alpha, out, i, path)

    result = predict_files(
        det,
        paths,
        out,
        batch_size=args.batch_size,
        threshold=args.threshold,
        normalisation=args.normalisation,
        heatmaps=not args.no_heatmaps,
        on_row=show,
        on_failure=skipped,
        decide=decide if calibration else None,
        decision_fields=("p_value", "normalised_score", "anomalous", "mask") if calibration else (),
    )
    if calibration:
        print(
            f"{sum(flagged)} of {len(flagged)} images anomalous at alpha {alpha:g} "
            "(p_value <= alpha; masks beside)"
        )
    print(
        f"wrote {out / 'scores.csv'} ({result.scored} images)"
        + (f" and {result.heatmaps} heatmaps" if result.heatmaps else "")
    )
    if result.failures:
        print(
            f"fcdd predict: {len(result.failures)} of {len(paths)} files failed, listed in "
            f"{out / 'failures.csv'}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_export(args) -> int:
    from fcdd.export import export_detector

    det = _load_detector(args.model, "cpu", args.tracking_uri, exported=False)
    meta_path = export_detector(det, args.format, args.out, source=args.model)
    meta = json.loads(meta_path.read_text())
    c, h, w = meta["input"]["shape"][1:]
    print(
        f"exported {args.model} as {args.format}: {', '.join(meta['files'])} + {meta_path.name} in {args.out} "
        f"(input [B, {c}, {h}, {w}] -> score [B], heatmap [B, 1, {h}, {w}])"
    )
    return 0


def cmd_info(args) -> int:
    from fcdd import calibration as conformal

    det = _load_detector(args.model, "cpu", args.tracking_uri)
    m = det.meta
    if hasattr(det, "export"):  # an exported folder: what its JSON says
        info = det.info() | {"calibration": conformal.summary(m.get("calibration"))}
        print(yaml.safe_dump(info, sort_keys=False).rstrip())
        return 0
    rf = det.model.receptive_field
    info = {
        "dataset": m.get("dataset"),
        "class": m.get("class"),
        "seed": m.get("seed"),
        "net": m.get("net", {}).get("net"),
        "input_size": m.get("input_size"),
        "receptive_field": {"r": rf.r, "j": rf.j, "s": rf.s},
        "sigma": float(det.upsampler.sigma),
        "heatmap_quantile": m.get("quantile"),
        "preprocess": det.preprocess,
        "parameters": sum(p.numel() for p in det.model.parameters()),
        "metrics": m.get("metrics", {}),
        "calibration": conformal.summary(m.get("calibration")),
    }
    print(yaml.safe_dump(info, sort_keys=False).rstrip())
    return 0


def cmd_config(args) -> int:
    if not args.explain:
        print(yaml.safe_dump(_config(args).to_dict(), sort_keys=False).rstrip())
        return 0
    from fcdd.config import explain_config

    params = args.params if Path(args.params).is_file() or args.params != "params.yaml" else None
    rows = explain_config(params, args.override, args.preset)
    width = max(len(k) for k, _, _ in rows)
    for key, value, where in rows:
        shown = json.dumps(value)
        print(f"{key:<{width}}  {shown:<24} {where}")
    return 0


def cmd_init(args) -> int:
    import torch

    from fcdd.init_params import default_presets, init_params

    out = Path(args.out)
    if out.exists() and not args.force:
        raise CLIError(f"{out}: exists; give another --out or --force to overwrite it")
    source = Path(args.presets_from or ("params.yaml" if Path("params.yaml").is_file() else out))
    presets = args.preset or default_presets(args.dataset, cpu=not torch.cuda.is_available())
    folder = {
        "nominal": args.nominal,
        "anomalous": args.anomalous,
        "masks": args.masks,
        "mask_suffix": args.mask_suffix,
    }
    tracking = None if args.tracking is None else args.tracking == "on"
    text = init_params(args.dataset, args.root, presets, source, out, args.classes, folder, tracking)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} (presets {', '.join(presets)}); check it: fcdd config --params {out} --explain")
    print(f"train: fcdd train --params {out}")
    return 0


# ------------------------------------------------------------------ helpers
def _check_data_root(cfg) -> None:
    """data.root must exist unless data.download may fetch it (the loader's own checks follow)."""
    from fcdd.errors import DataError

    root = Path(cfg.data.root).expanduser()
    if cfg.data.download or root.exists():
        return
    where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
    raise DataError(f"data.root {cfg.data.root}: no such file or folder{where}")


def _tracked_runner(cfg):
    """``pipelines.tracking.tracked_experiment`` when ``tracking.enabled`` (fcdd/ itself never
    imports MLflow: the pipelines package is the plug-in); None when tracking is off."""
    if not cfg.tracking.enabled:
        return None
    try:
        from pipelines.tracking import tracked_experiment
    except ImportError as e:
        raise CLIError(
            f"tracking.enabled is true but MLflow tracking is not installed ({e}); "
            "pip install fcdd[pipelines], or train with -o tracking.enabled=false"
        ) from e
    return tracked_experiment


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _predict_device(name: str) -> str:
    """--device checked before the model loads: one line for a missing CUDA or a bad name."""
    from fcdd.engine import resolve_device

    try:
        resolve_device(name)
        return name  # "auto" stays "auto": an exported model then runs on the CPU
    except ConfigError as e:
        raise CLIError(f"--device {str(e).split(': ', 1)[1]}") from e


def _check_cli_alpha(value: float | None) -> float:
    from fcdd import calibration as conformal

    if value is None:
        return conformal.DEFAULT_ALPHA
    try:
        return conformal.check_alpha(value, "--alpha")
    except conformal.CalibrationError as e:
        raise CLIError(str(e)) from None


def _predict_calibration(det, ref: str, given: float | None, alpha: float) -> dict | None:
    """The model's calibration, or None (a note) for models trained without one."""
    from fcdd import calibration as conformal

    calibration = det.meta.get("calibration")
    if not calibration:
        if given is not None:
            raise CLIError(
                f"{ref}: the model has no calibration (trained without evaluation.calibration), so "
                "--alpha cannot be used; retrain with evaluation.calibration or use --threshold"
            )
        print(f"note: {ref} has no calibration: no p-values or masks (use --threshold)", file=sys.stderr)
        return None
    if alpha < conformal.min_alpha(calibration):
        print(
            f"warning: alpha {alpha:g} is below 1/(n+1) = {conformal.min_alpha(calibration):.4g} for "
            f"n = {calibration['n']} calibration images: no image can be flagged",
            file=sys.stderr,
        )
    return calibration


def _calibrated_decision(calibration: dict, score, heatmap, alpha: float, out: Path, i: int, path) -> dict:
    """p-value, normalised score, decision; a mask PNG beside the overlay for anomalous images."""
    from fcdd import calibration as conformal

    p = float(conformal.p_values(calibration["image_scores"], [score])[0])
    row = {"p_value": p, "normalised_score": float(conformal.normalised_score(p)), "anomalous": p <= alpha}
    row["mask"] = ""
    if row["anomalous"]:
        name = f"{i:04d}_{Path(path).stem}_mask.png"
        (out / name).write_bytes(conformal.mask_png(conformal.defect_mask(heatmap, calibration, alpha)))
        row["mask"] = name
    return row


def _load_detector(ref: str, device: str, tracking_uri: str | None = None, exported: bool = True):
    from fcdd.detector import Detector
    from fcdd.engine import resolve_device
    from fcdd.export import find_export

    if find_export(ref) is not None:
        if not exported:
            raise CLIError(f"{ref}: an exported model; this command needs the model.pt it was exported from")
        if device not in ("auto", "cpu"):
            raise CLIError(f"--device {device}: exported models run on the CPU (onnxruntime, OpenVINO)")
        from fcdd.backends import ExportedDetector

        return ExportedDetector.load(ref)
    if Path(ref).suffix in (".onnx", ".xml", ".ts"):
        raise CLIError(f"{ref}: no fcdd_export.json beside it (export with `fcdd export`)")
    dev = resolve_device(device)
    if ref.startswith(("models:/", "runs:/")):
        try:
            import mlflow

            from pipelines.registry import load_detector
        except ImportError as e:
            raise CLIError(
                f"{ref}: loading MLflow models needs the pipelines extra (pip install fcdd[pipelines]): {e}"
            ) from e
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri and Path("params.yaml").is_file():
            uri = load_config("params.yaml").tracking.uri  # the store this project's runs went to
        if uri:
            mlflow.set_tracking_uri(uri)
        try:
            return load_detector(ref).to(dev)
        except ValueError as e:
            raise CLIError(f"{e} (tracking URI: {mlflow.get_tracking_uri()})") from e
    return Detector.load(ref, device=dev)


def _collect_images(inputs: list[str]) -> list[Path]:
    import glob

    from fcdd.data.image_io import IMAGE_EXTENSIONS as IMAGE_SUFFIXES

    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise CLIError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += files
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise CLIError(
                    f"{p}: not an image file (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            found.append(p)
        elif any(c in item for c in "*?["):
            files = sorted(
                Path(f) for f in glob.glob(item, recursive=True) if Path(f).suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise CLIError(f"{item}: pattern matches no image")
            found += files
        else:
            raise CLIError(f"{item}: no such file or folder")
    return found


def _fmt_metrics(m: dict) -> str:
    parts = []
    for key in ("image_auc", "pixel_auc", "aupro"):
        v = m.get(key)
        if isinstance(v, dict):
            v = v.get("mean")
        if v is not None and v == v:
            parts.append(f"{key} {v:.4f}")
    return ", ".join(parts) or "no metrics"


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    # Warnings as one line each ("fcdd train: warning: ..."), not file:line and source.
    show = warnings.showwarning
    warnings.showwarning = lambda message, *_a, **_k: print(
        f"fcdd {args.command}: warning: {message}", file=sys.stderr
    )
    try:
        return args.func(args)
    except (FCDDError, FileNotFoundError) as e:
        print(f"fcdd {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fcdd {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
