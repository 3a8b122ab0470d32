"""The parser of the ``fcdd`` command (one sub-parser per command module) and ``main``."""

from __future__ import annotations

import argparse
import errno
import platform
import sys

from fcdd import __version__
from fcdd.app import command as app
from fcdd.cli import config, evaluate, export, info, init, predict, train
from fcdd.cli.messages import one_line_warnings
from fcdd.errors import FCDDError

COMMANDS = (train, evaluate, predict, export, info, config, init, app)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcdd",
        description="FCDD: explainable one-class anomaly detection (Liznerski et al., ICLR 2021).",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    # Warnings as one line each ("fcdd train: warning: ..."), once, not file:line and source.
    with one_line_warnings(f"fcdd {args.command}"):
        try:
            return args.func(args)
        except (FCDDError, FileNotFoundError) as e:
            print(f"fcdd {args.command}: error: {one_line(e)}", file=sys.stderr)
            return 2
        except (
            OSError
        ) as e:  # a full disk or a read-only place wherever it strikes: one line, not a traceback
            if e.errno not in STORAGE_ERRNOS:
                raise
            print(f"fcdd {args.command}: error: {storage_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"fcdd {args.command}: interrupted", file=sys.stderr)
            return 130


def version_line() -> str:
    """``fcdd --version``: fcdd's version and the PyTorch and Python it runs on (torch not imported
    until asked: its version is read from the installed metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"fcdd {__version__} (torch {torch}, Python {platform.python_version()})"


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def storage_line(e: OSError) -> str:
    """``PATH: no space left on device`` from an OSError of the storage."""
    where = e.filename if e.filename is not None else "writing a file"
    reason = "no space left on the device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror
    return f"{where}: {reason}"


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
