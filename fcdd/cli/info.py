"""``fcdd info``: what a model file, exported folder or registered model holds."""

from __future__ import annotations

import argparse

import yaml

from fcdd.cli.common import add_tracking_arg, load_model


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info", help="what a model file holds", description="Print a model's network, data and metrics."
    )
    p.add_argument("model", help="model.pt file, exported folder or MLflow URI")
    add_tracking_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcdd.model_info import model_info

    det = load_model(args.model, "cpu", args.tracking_uri)
    print(yaml.safe_dump(model_info(det), sort_keys=False).rstrip())
    return 0
