"""Checkpoints that outlive their worker: a copy of every epoch's checkpoint in shared storage.

``train.checkpoint_uri`` names a folder any fsspec filesystem can reach (a shared folder / NFS path,
``file://``, ``s3://``, ``gs://``, ``http(s)`` for reading). The training loop keeps writing and reading
``run_dir/checkpoint.pt`` exactly as before, so its resume rules (format, settings fingerprint,
exact resume on the CPU) are untouched; this module only moves the bytes of that same file:

- ``publish`` after each epoch: upload to ``<uri>/<run key>/checkpoint-<epoch>.pt`` via a hidden
  temporary name and a rename (a reader never sees half a file), then prune to ``train.checkpoint_keep``.
- ``fetch`` before training: when the shared folder holds a later epoch than the local file (or there
  is no local file: a fresh worker), download the newest readable one into ``run_dir/checkpoint.pt``.

The run key is the run folder relative to ``train.output_dir`` (``dataset/class/seedN``), the same
on every worker whatever its working folder.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from pathlib import Path
from typing import Any

import torch

from fcdd.errors import TrainingError

_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


class CheckpointStoreError(TrainingError):
    """The shared checkpoint folder cannot be used; the message names it and why."""


def run_key(run_dir: Path, output_dir: str) -> str:
    """``dataset/class/seedN``: the run folder relative to the output folder (else its last 3 parts)."""
    run_dir = Path(run_dir).resolve()
    try:
        return run_dir.relative_to(Path(output_dir).resolve()).as_posix()
    except ValueError:
        return "/".join(run_dir.parts[-3:])


def _filesystem(uri: str):
    import fsspec  # imported here: only runs with a shared checkpoint folder need it

    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise CheckpointStoreError(f"train.checkpoint_uri {uri!r}: no usable filesystem ({e})") from e
    return fs, root.rstrip("/")


def check_uri(uri: str) -> None:
    """Fail early (at configuration time) on a protocol fsspec does not know or cannot load."""
    _filesystem(uri)


class CheckpointStore:
    def __init__(self, uri: str, key: str, keep: int = 2):
        self.uri = uri
        self.fs, root = _filesystem(uri)
        self.folder = f"{root}/{key}"
        self.keep = keep

    def _rel(self, epoch: int) -> str:
        return f"{self.folder}/checkpoint-{epoch:06d}.pt"

    def epochs(self) -> list[int]:
        """Epochs held in the shared folder, oldest first."""
        try:
            names = self.fs.ls(self.folder, detail=False)
        except FileNotFoundError:
            return []
        except Exception as e:  # network, permissions: say where
            raise CheckpointStoreError(
                f"train.checkpoint_uri {self.uri}: cannot list checkpoints in {self.folder} ({_reason(e)})"
            ) from e
        found = [_NAME.match(os.path.basename(str(n).rstrip("/"))) for n in names]
        return sorted(int(m.group(1)) for m in found if m)

    def publish(self, local: Path, epoch: int) -> str:
        """Upload ``local`` as epoch ``epoch``: temporary name, then rename; prune older epochs."""
        target = self._rel(epoch)
        tmp = f"{self.folder}/.checkpoint-{epoch:06d}.pt.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.makedirs(self.folder, exist_ok=True)
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, target)
        except Exception as e:
            raise CheckpointStoreError(
                f"train.checkpoint_uri {self.uri}: cannot write the shared checkpoint {target} ({_reason(e)})"
            ) from e
        for old in self.epochs()[: -self.keep]:
            self.fs.rm(self._rel(old))
        return target

    def fetch(self, local: Path, local_epoch: int | None) -> int | None:
        """Download the newest readable shared checkpoint later than ``local_epoch`` into ``local``
        (atomically); returns its epoch, or None when the local file is as new (or there is none)."""
        for epoch in reversed(self.epochs()):
            if local_epoch is not None and epoch <= local_epoch:
                return None
            try:
                data = self.fs.cat_file(self._rel(epoch))
                _readable(data)
            except Exception:
                continue  # half-uploaded by a dead worker on a store without rename, or unreadable
            tmp = local.with_name(local.name + ".fetch")
            tmp.write_bytes(data)
            os.replace(tmp, local)
            return epoch
        return None


def _reason(e: Exception) -> str:
    """An OS error as its reason alone (its message repeats the path), others as they are."""
    return (e.strerror or str(e)) if isinstance(e, OSError) else str(e)


def _readable(data: bytes) -> dict[str, Any]:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError("not a checkpoint")
    return state


def local_epoch(path: Path) -> int | None:
    """Epoch of a local checkpoint; None when absent or unreadable (the training loop then says why)."""
    if not path.exists():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:
        return None


def store_for(cfg, run_dir: Path) -> CheckpointStore | None:
    """The shared store of this run, or None when checkpoints stay in the run folder only."""
    uri = cfg.train.checkpoint_uri
    if not uri:
        return None
    return CheckpointStore(uri, run_key(run_dir, cfg.train.output_dir), cfg.train.checkpoint_keep)


def pull(cfg, run_dir: Path, local: Path) -> int | None:
    """Before training: bring a later shared checkpoint into the run folder. Returns its epoch."""
    store = store_for(cfg, run_dir)
    if store is None:
        return None
    return store.fetch(local, local_epoch(local))


def push(cfg, run_dir: Path, local: Path, epoch: int) -> None:
    """After an epoch's checkpoint is written locally: copy it to the shared folder."""
    store = store_for(cfg, run_dir)
    if store is not None:
        store.publish(local, epoch)


def discard(cfg, run_dir: Path) -> None:
    """``fcdd train --restart``: remove this run's shared checkpoints, so a fresh start is not
    resumed from them by the next ``pull``."""
    store = store_for(cfg, run_dir)
    if store is not None:
        for epoch in store.epochs():
            store.fs.rm(store._rel(epoch))
