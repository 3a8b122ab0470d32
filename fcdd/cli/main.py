"""The parser of the ``fcdd`` command (one sub-parser per command module) and ``main``."""

from __future__ import annotations

import argparse
import sys
import warnings

from fcdd.app import command as app
from fcdd.cli import config, evaluate, export, info, init, predict, train
from fcdd.errors import FCDDError

COMMANDS = (train, evaluate, predict, export, info, config, init, app)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcdd",
        description="FCDD: explainable one-class anomaly detection (Liznerski et al., ICLR 2021).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    # Warnings as one line each ("fcdd train: warning: ..."), not file:line and source.
    show = warnings.showwarning
    warnings.showwarning = lambda message, *_a, **_k: print(
        f"fcdd {args.command}: warning: {message}", file=sys.stderr
    )
    try:
        return args.func(args)
    except (FCDDError, FileNotFoundError) as e:
        print(f"fcdd {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fcdd {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
