"""``fcdd evaluate``: a trained model scored again on its test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcdd.cli.common import CLIError, add_config_args, add_tracking_arg, fmt_metrics, load_model
from fcdd.paths import writable_folder


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained model on its test set",
        description="Score the test set of the model's dataset and class: image AUC, pixel AUC and AUPRO where "
        "masks exist, scores.csv, ROC curves and heatmap figures. The split (dataset, root, folder spec, limits, "
        "semi-supervised split) is rebuilt from the configuration stored in the model, from any folder; "
        "--params, --preset, -o and --root override it explicitly.",
    )
    p.add_argument("model", help="a model.pt file, or an MLflow URI such as models:/fcdd-mvtec-grid@champion")
    add_tracking_arg(p)
    add_config_args(p)
    p.add_argument(
        "--root", help="raw data folder (default: the model's data.root, as given or as resolved at training)"
    )
    p.add_argument("--out", default=None, help="output folder (default: evaluation/<dataset>/<class>)")
    # The model's stored configuration rebuilds its split; a params file applies only when named.
    p.set_defaults(func=run, params=None)


def run(args: argparse.Namespace) -> int:
    from fcdd.experiment import class_slug
    from fcdd.model_evaluation import evaluate_model, model_config

    if args.out:
        writable_folder(args.out, "--out", CLIError)  # before the model loads
    det = load_model(args.model, "auto", args.tracking_uri, exported=False)
    meta = det.meta
    cfg = model_config(meta, args.model, args.params, args.override, args.preset, args.root)
    out = Path(args.out or Path("evaluation") / meta["dataset"] / class_slug(meta["class"]))
    writable_folder(out, "--out" if args.out else "the output folder (--out)", CLIError)  # before scoring
    writable_folder(cfg.data.cache_dir, "data.cache_dir")  # the test split's resized copies go there
    metrics, artifacts = evaluate_model(det, cfg, out)
    print(fmt_metrics(metrics))
    print(f"wrote {out / 'metrics.json'}, {len(artifacts)} artifacts in {out}")
    return 0
