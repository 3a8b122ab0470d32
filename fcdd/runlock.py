"""An exclusive lock on a run folder while a run trains and writes it.

``flock`` on ``<run folder>/.lock``: the kernel drops it when the holder's process dies (crash,
kill -9), so a stale lock never blocks; the file only records who holds it (pid, host, start) for the
error a second run gets. On NFS, Linux emulates flock with POSIX locks, which hold across hosts.
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

LOCK_FILE = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process trains into the same run folder; the message names it."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the block; raise RunFolderBusy at once if someone else has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"{run_dir}: another run is training into this folder ({_holder(path)}); "
                "wait for it to finish, or choose another train.output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


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
