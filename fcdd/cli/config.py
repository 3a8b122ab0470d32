"""``fcdd config``: the resolved configuration, or where each value came from (--explain)."""

from __future__ import annotations

import argparse
import json

import yaml

from fcdd.cli.common import add_config_args, config_from_args, params_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "config",
        help="print the resolved configuration",
        description="Print params.yaml after presets/overrides; --explain says where each value came from.",
    )
    add_config_args(p)
    p.add_argument(
        "--explain",
        action="store_true",
        help="one line per value: the value and its source (default, preset NAME, FILE (section), override)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.explain:
        print(yaml.safe_dump(config_from_args(args).to_dict(), sort_keys=False).rstrip())
        return 0
    from fcdd.config import explain_config

    rows = explain_config(params_path(args), args.override, args.preset)
    width = max(len(k) for k, _, _ in rows)
    for key, value, where in rows:
        shown = json.dumps(value)
        print(f"{key:<{width}}  {shown:<24} {where}")
    return 0
