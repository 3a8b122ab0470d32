"""An exclusive lock on a folder while one process writes it (a training run, ``fcdd predict``).

``flock`` on a file in the folder: the kernel drops it when the holder's process dies (crash,
kill -9), so a stale lock never blocks; the file only records who holds it (pid, host, start) for the
error a second process gets. Forked children (DataLoader workers) close their copy, so a worker
outliving a killed parent does not hold it. On NFS, Linux emulates flock with POSIX locks (across hosts).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fcdd.errors import FCDDError


class FolderBusy(FCDDError):
    """Another process holds the folder's lock; ``holder`` says who (pid, host, since)."""

    def __init__(self, folder: Path, holder: str):
        super().__init__(f"{folder}: locked by {holder}")
        self.folder, self.holder = folder, holder


_HELD: set[int] = set()  # lock descriptors of this process


def _close_in_child() -> None:
    # A forked child (a DataLoader worker) must not keep the lock alive after its parent dies:
    # flock belongs to the open file, which the child's copy of the descriptor would share.
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str) -> Iterator[Path]:
    """Hold ``folder/name`` for the block; raise FolderBusy at once if another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(folder, _holder(path)) from None
        _HELD.add(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            _HELD.discard(fd)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    """'pid 123 on host-a since 06:40:01 UTC', read from the lock file (the holder may still be writing)."""
    for _ in range(20):
        try:
            info = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict):
            since = time.strftime("%H:%M:%S UTC", time.gmtime(info.get("since", 0)))
            return f"pid {info.get('pid')} on {info.get('host')} since {since}"
        time.sleep(0.05)
    return "holder unknown"
