"""An exclusive lock on a run folder while a run trains and writes it.

``flock`` on ``<run folder>/.lock``: the kernel drops it when the holder's process dies (crash,
kill -9), so a stale lock never blocks; the file only records who holds it (pid, host, start) for the
error a second run gets. Forked children (DataLoader workers) close their copy, so a worker outliving
a killed parent does not hold it. On NFS, Linux emulates flock with POSIX locks (across hosts).
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

from fcdd.errors import TrainingError

LOCK_FILE = ".lock"


class RunFolderBusy(TrainingError):
    """Another process trains into the same run folder; the message names it."""


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
def run_folder_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the block; raise RunFolderBusy at once if someone else has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"{run_dir}: another run is training into this folder ({_holder(path)}); "
                "wait for it to finish, or choose another train.output_dir"
            ) from None
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
