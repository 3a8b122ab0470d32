"""``fcdd init``: a params file for your own data, with only the presets you choose."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcdd.cli.common import CLIError


def add_parser(sub) -> None:
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
        "--presets-from",
        help="a params file whose `presets:` section replaces fcdd's presets of the same names "
        "(default: ./params.yaml where it exists; fcdd's own presets otherwise)",
    )
    p.add_argument("--classes", nargs="+", help="class name(s) (data.classes)")
    p.add_argument("--nominal", nargs="+", help="folder: defect-free image folders/globs under --root")
    p.add_argument("--anomalous", nargs="+", help="folder: defective image folders/globs (test only)")
    p.add_argument("--masks", nargs="+", help="folder: mask folders/globs, matched to images by stem")
    p.add_argument("--mask-suffix", help="folder: mask stem = image stem + suffix, e.g. _mask")
    p.add_argument(
        "--tracking",
        choices=("on", "off"),
        help="write tracking.enabled (default: on where MLflow is installed, else off)",
    )
    p.add_argument(
        "--resize",
        choices=("auto", "fixed", "keep_aspect"),
        default="auto",
        help="data.resize: auto (default) picks keep_aspect where the nominal images are not square",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from fcdd.init_params import default_presets, init_params

    out = Path(args.out)
    if out.is_dir():
        raise CLIError(f"--out {out}: is a folder; name the file to write, e.g. --out {out / 'params.yaml'}")
    if out.exists() and not args.force:
        raise CLIError(f"{out}: exists; give another --out or --force to overwrite it")
    # fcdd's presets; a ./params.yaml (or --presets-from) defining presets of its own replaces those
    here = Path("params.yaml")
    implicit = here if here.is_file() and here.resolve() != out.resolve() else None  # not the file replaced
    source = args.presets_from or implicit
    presets = args.preset or default_presets(args.dataset, cpu=not torch.cuda.is_available())
    folder = {
        "nominal": args.nominal,
        "anomalous": args.anomalous,
        "masks": args.masks,
        "mask_suffix": args.mask_suffix,
    }
    tracking = None if args.tracking is None else args.tracking == "on"
    written = init_params(
        args.dataset, args.root, presets, source, out, args.classes, folder, tracking, args.resize
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(written.text)
    print(f"wrote {out} (presets {', '.join(presets)}); check it: fcdd config --params {out} --explain")
    for note in written.notes:
        print(f"  {note}")
    print(f"train: fcdd train --params {out}")
    return 0
