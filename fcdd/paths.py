"""Where the package writes: folders checked before any work (one line naming the key or option,
the path and the problem: an existing file in the way, no permission, a read-only or missing place),
and files written atomically, a full disk said in words."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fcdd.errors import ConfigError, FCDDError, StorageError


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


# Free bytes below which a failed write is taken for a full disk: torch.save reports one only as
# "[enforce fail at inline_container.cc] unexpected pos ..." (a RuntimeError without an errno).
NEARLY_FULL = 1 << 20


def write_atomically(path: str | Path, write: Callable[[Path], None], what: str) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``path``, so a reader never sees half a file. A full
    disk or an unwritable place is a StorageError naming ``what`` and the path ("no space left"),
    and the partial ``.tmp`` is removed; other errors pass through unchanged."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        reason = _storage_reason(e, path.parent)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if reason is None:
            raise
        raise StorageError(f"{what} {path}: {reason}") from None
    return path


def _storage_reason(e: BaseException, folder: Path) -> str | None:
    """Why a write failed, in words, when the cause is the storage; None for other errors."""
    errno_ = getattr(e, "errno", None)
    if errno_ in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device ({_free(folder)} free; the partial file was removed)"
    if isinstance(e, OSError):
        return f"cannot write ({e.strerror or e}; the partial file was removed)"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free < NEARLY_FULL:
        return f"no space left on the device ({_free(folder)} free; the partial file was removed)"
    return None


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown space"
