"""The images of one page (a job): files on disk, and per model their scores, kept as numbers in
memory and low-resolution heatmaps and thumbnails in the job's folder.

Uploads stream to disk in chunks, so no request holds a whole file in memory; ``scorer.py`` decodes
one batch at a time. Every change gets a stamp from the job's counter, so the page asks only for
what changed since its last look (``snapshot``), and waits for it (long polling) instead of polling
on a timer.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcdd.data.image_io import IMAGE_EXTENSIONS
from fcdd.errors import UsageError
from fcdd.predict import Reservoir


class JobError(UsageError):
    """A request about a job cannot be served (unknown job, too many files, a bad path)."""


@dataclass
class Item:
    index: int
    name: str  # as the user knows it: the uploaded file's name or the path under the image root
    path: Path | None  # None: nothing stored (e.g. over the upload limit)
    owned: bool  # True: the job's own copy of an upload; False: the user's file under the image root
    stamp: int
    size: tuple[int, int] | None = None  # (h, w) once read
    error: str | None = None
    note: str | None = None  # e.g. how a 16-bit image was read
    display: Path | None = None  # the file the browser shows (the original, or an 8-bit PNG of it)

    def public(self) -> dict[str, Any]:
        return {"i": self.index, "name": self.name, "size": self.size, "error": self.error, "note": self.note}


@dataclass
class Result:
    score: float | None = None
    p_value: float | None = None
    local: tuple[float, float] | None = None  # per-image colour scale: min, q-quantile above it
    shape: tuple[int, int] | None = None  # of the stored map (the model's input size)
    error: str | None = None
    stamp: int = 0
    # The mask rule's alpha-independent parts (fcdd.decisions.mask_rule): the highest value of the
    # map at the image's size, and the cut marking its most anomalous region where none passes.
    top: float | None = None
    fallback: float | None = None

    def public(self, index: int) -> dict[str, Any]:
        return {
            "i": index,
            "score": self.score,
            "p": self.p_value,
            "local": self.local,
            "error": self.error,
            "top": self.top,
            "fallback": self.fallback,
        }


@dataclass
class ModelRun:
    """One model's pass over a job's images."""

    ref: str
    key: str  # folder name of its maps and thumbnails
    pending: deque = field(default_factory=deque)
    results: dict[int, Result] = field(default_factory=dict)
    sample: Reservoir = field(default_factory=Reservoir)
    low: float = float("inf")
    error: str | None = None

    def shared_scale(self, q: float) -> tuple[float, float] | None:
        """The colour scale over every map of the run, as ``fcdd predict --normalisation global``."""
        import numpy as np

        values = self.sample.sample()
        return (self.low, float(np.quantile(values - self.low, q))) if len(values) else None


class Job:
    def __init__(self, folder: Path, max_files: int, max_bytes: int):
        self.id = folder.name
        self.folder, self.max_files, self.max_bytes = folder, max_files, max_bytes
        self.items: list[Item] = []
        self.runs: dict[str, ModelRun] = {}
        self.cond = threading.Condition()
        self.stamp = 0
        self.used = time.monotonic()
        self.messages: list[tuple[int, str]] = []

    def bump(self) -> int:  # call with self.cond held
        self.stamp += 1
        self.used = time.monotonic()
        self.cond.notify_all()
        return self.stamp

    def message(self, text: str) -> None:
        with self.cond:
            self.messages.append((self.bump(), text))

    # ------------------------------------------------------------------ adding images
    def _reserve(self, name: str) -> Item | None:
        with self.cond:
            if len(self.items) >= self.max_files:
                if len(self.items) == self.max_files:  # said once, not once per refused file
                    self.messages.append(
                        (
                            self.bump(),
                            f"at most {self.max_files} images per page: "
                            f"{name} and the files after it were not added (--max-files)",
                        )
                    )
                    self.items.append(Item(len(self.items), name, None, True, self.stamp, error="not added"))
                return None
            item = Item(len(self.items), name, None, True, self.bump())
            self.items.append(item)
            return item

    async def add_upload(self, name: str, chunks: AsyncIterator[bytes], runs: Iterable[ModelRun]) -> Item:
        """Stream an upload to disk; over the size limit the item records why and nothing is kept."""
        item = self._reserve(name)
        if item is None:
            raise JobError(f"{name}: not added: at most {self.max_files} images per page (--max-files)")
        suffix = Path(name).suffix.lower()
        path = self.folder / "files" / f"{item.index:05d}{suffix if suffix in IMAGE_EXTENSIONS else ''}"
        path.parent.mkdir(exist_ok=True)
        size, error = 0, None
        with open(path, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    error = f"file larger than the upload limit of {self.max_bytes // 2**20} MiB (--max-upload-mb)"
                    break
                f.write(chunk)
        if error:
            path.unlink(missing_ok=True)
        self._added(item, None if error else path, error, runs)
        return item

    def add_paths(self, paths: list[Path], names: list[str], runs: Iterable[ModelRun]) -> int:
        added = 0
        for path, name in zip(paths, names, strict=True):
            item = self._reserve(name)
            if item is None:
                break
            item.owned = False
            self._added(item, path, None, runs)
            added += 1
        return added

    def add_failed(self, name: str, reason: str) -> None:
        """A file that was found but cannot be scored (e.g. its name is not UTF-8): shown with why."""
        item = self._reserve(name)
        if item is not None:
            with self.cond:
                item.error = reason
                item.stamp = self.bump()

    def _added(self, item: Item, path: Path | None, error: str | None, runs: Iterable[ModelRun]) -> None:
        with self.cond:
            item.path, item.error = path, error
            item.stamp = self.bump()
            if error is None:
                for run in runs:
                    run.pending.append(item.index)

    def run_for(self, ref: str) -> tuple[ModelRun, bool]:
        """The run of model ``ref`` over this job (created with every readable image pending)."""
        with self.cond:
            if ref in self.runs:
                return self.runs[ref], False
            run = ModelRun(ref, hashlib.sha1(ref.encode()).hexdigest()[:12])
            run.pending.extend(i.index for i in self.items if i.path is not None and i.error is None)
            self.runs[ref] = run
            self.bump()
            return run, True

    # ------------------------------------------------------------------ what the page reads
    def snapshot(self, ref: str | None, since: int, q: float) -> dict[str, Any]:
        with self.cond:
            run = self.runs.get(ref) if ref else None
            results = run.results if run else {}
            readable = [i for i in self.items if i.path is not None]
            out = {
                "stamp": self.stamp,
                "items": [i.public() for i in self.items if i.stamp > since],
                "results": [r.public(i) for i, r in results.items() if r.stamp > since],
                "messages": [m for s, m in self.messages if s > since],
                "counts": {
                    "files": len(self.items),
                    "failed": sum(1 for i in self.items if i.error),
                    "scored": sum(1 for r in results.values() if r.error is None),
                    "pending": len(run.pending) if run else len(readable),
                },
                "scale": run.shared_scale(q) if run else None,
                "run_error": run.error if run else None,
            }
        return out

    def wait(self, since: int, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.stamp > since, timeout=timeout)

    def item(self, index: int) -> Item:
        if not 0 <= index < len(self.items):
            raise JobError(f"image {index}: no such image in this page")
        return self.items[index]


class JobStore:
    """The jobs of every open page, each in its own folder; the oldest are dropped past ``max_jobs``."""

    def __init__(self, max_jobs: int = 16, max_files: int = 2000, max_bytes: int = 256 * 2**20):
        self.base = Path(tempfile.mkdtemp(prefix="fcdd-app-"))
        self.max_jobs, self.max_files, self.max_bytes = max_jobs, max_files, max_bytes
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.work = threading.Condition()  # the scorer waits on it

    def create(self) -> Job:
        folder = self.base / secrets.token_hex(8)
        folder.mkdir()
        job = Job(folder, self.max_files, self.max_bytes)
        with self.lock:
            self.jobs[job.id] = job
            while len(self.jobs) > self.max_jobs:
                oldest = min(self.jobs.values(), key=lambda j: j.used)
                self.drop(oldest.id)
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(f"page session {job_id!r} has expired: reload the page")
        return job

    def drop(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            shutil.rmtree(job.folder, ignore_errors=True)

    def notify(self) -> None:
        with self.work:
            self.work.notify_all()

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
