"""Folders the package writes to, checked before any work: one line naming the key or option, the
path and the problem (an existing file in the way, no permission, a read-only or missing place)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fcdd.errors import ConfigError, FCDDError


def file_in_the_way(path: str | Path) -> Path | None:
    """The path itself or the nearest existing folder above it when that is not a folder (a file):
    no folder can be made there. None when the path is a folder or can be created."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    for candidate in (p, *p.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def writable_folder(path: str | Path, what: str, error: type[FCDDError] = ConfigError) -> Path:
    """``path`` as a folder this process can write to, created where missing; ``error`` (a one-line
    message naming ``what``, e.g. ``train.output_dir`` or ``--out``) otherwise."""
    p = Path(path).expanduser()
    blocker = file_in_the_way(p)
    if blocker is not None:
        if blocker == Path(os.path.abspath(p)):
            raise error(f"{what} {p}: is an existing file, not a folder")
        raise error(f"{what} {p}: {blocker} is a file, so no folder can be made under it")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fcdd-write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"{what} {p}: cannot write there ({e.strerror or e})") from None
    return p
