"""An exclusive lock on a run folder while a run trains and writes it: ``<run folder>/.lock``,
held with fcdd.folder_lock (flock: a crashed or killed holder never leaves a stale lock)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fcdd.errors import TrainingError
from fcdd.folder_lock import FolderBusy, folder_lock

LOCK_FILE = ".lock"


class RunFolderBusy(TrainingError):
    """Another process trains into the same run folder; the message names it."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the block; raise RunFolderBusy at once if someone else has it."""
    try:
        with folder_lock(run_dir, LOCK_FILE) as path:
            yield path
    except FolderBusy as e:
        raise RunFolderBusy(
            f"{e.folder}: another run is training into this folder ({e.holder}); "
            "wait for it to finish, or choose another train.output_dir"
        ) from None
