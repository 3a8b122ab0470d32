"""Warnings as one plain line each: ``fcdd train: warning: ...``, shown once, no terminal colours.

Libraries colour some warnings with ANSI codes (MLflow's yellow ones) that show up as ``\\x1b[33m``
in a log file, and some repeat one warning per class or per batch. The command line, the DVC stages
and the Prefect flows print warnings through :func:`one_line_warnings`.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Our own packages: their warnings need no origin; anyone else's are named by their top package.
OWN_PACKAGES = ("fcdd", "pipelines")
_HIDDEN: list[re.Pattern] = []  # warnings that say nothing to a user of fcdd (see hide_warning)


def hide_warning(pattern: str) -> None:
    """Drop warnings whose plain text matches ``pattern`` (from its start) inside
    :func:`one_line_warnings`. For advice to the code that calls a library, not to its user: a
    ``warnings.filterwarnings`` cannot do it where the library resets the filters around its call."""
    _HIDDEN.append(re.compile(pattern))


def plain(text: str) -> str:
    """``text`` without terminal colour or cursor codes, on one line."""
    return " ".join(ANSI.sub("", str(text)).split())


def origin(filename: str) -> str | None:
    """The top-level package that warned (``mlflow``), None for our own code or a script."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            top = rest[0].removesuffix(".py") if rest else ""
            return None if top in OWN_PACKAGES else top or None
    return None


@contextlib.contextmanager
def one_line_warnings(prefix: str, stream=None) -> Iterator[None]:
    """Within the block, each distinct warning is printed once as ``<prefix>: warning: <text>``
    (``(from <package>)`` for another library's), without ANSI codes."""
    seen: set[str] = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = plain(message)
        if text in seen or any(p.match(text) for p in _HIDDEN):
            return
        seen.add(text)
        source = origin(str(filename))
        label = f"{text} (from {source})" if source else text
        print(f"{prefix}: warning: {label}", file=stream or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
