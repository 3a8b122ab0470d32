"""What every benchmark shares (as torch.utils.benchmark is for torch): timing, the machine header,
markdown tables.

- ``measure(fn)``: warm-up calls, then timed calls (wall clock and this process's CPU time), medians.
  CPU time is the fairer measure on a shared machine: other work stretches the wall clock of
  whichever code happens to run during it, not the CPU seconds it spends.
- ``Clock``: the same two clocks as marks between events that the caller chooses (an epoch's end).
- ``header(device)``: the lines every table starts with: CPU model and the flags detected, torch
  threads and kernels (``fcdd.hardware.machine_line``), the device, the date and the commit.
- ``table(headers, rows)``: a GitHub markdown table.

A benchmark states a speed as a ratio measured in one run against a baseline beside it
(docs/benchmarks.md); these helpers give both sides the same clocks.
"""

from __future__ import annotations

import datetime
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fcdd.hardware import machine_line


def sync(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU has nothing to wait for)."""
    device = torch.device(device) if isinstance(device, str) else device
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of each timed call, by the wall clock and by this process's CPU time."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.wall)

    @property
    def wall_s(self) -> float:
        """Median wall-clock seconds per call."""
        return statistics.median(self.wall)

    @property
    def cpu_s(self) -> float:
        """Median CPU seconds per call (this process, all its threads)."""
        return statistics.median(self.cpu)

    def per_second(self, items: float) -> float:
        """``items`` per wall-clock second at the median call (images/s for a batch of ``items``)."""
        return items / self.wall_s

    def quantile_ms(self, q: float) -> float:
        """The q-quantile of the wall-clock calls, in milliseconds (p50, p99 of a latency table)."""
        ordered = sorted(self.wall)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_seconds: float = 0.0,
    device: torch.device | str | None = None,
    per: int = 1,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls (allocation, lazy initialisation, compilation), then
    at least ``repeats`` timed calls and until ``min_seconds`` of wall clock have passed. Each call
    waits for ``device`` before its clocks stop; with ``per`` the figures are per unit of work
    (``fn`` running ``per`` steps gives seconds per step)."""
    for _ in range(warmup):
        fn()
    sync(device)
    timing, start = Timing(), time.perf_counter()
    while timing.calls < repeats or time.perf_counter() - start < min_seconds:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        timing.wall.append((time.perf_counter() - wall) / per)
        timing.cpu.append((time.process_time() - cpu) / per)
    return timing


def alternate(
    cases: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
    per: int = 1,
) -> dict[str, Timing]:
    """Time several variants of the same work in one run, one call of each per round in turn
    (after ``warmup`` calls of each), so that a burst of other load on a shared machine hits all
    of them alike; a variant's median over rounds is its figure, ratios between them the result."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    timings = {name: Timing() for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            one = measure(fn, warmup=0, repeats=1, device=device, per=per)
            timings[name].wall += one.wall
            timings[name].cpu += one.cpu
    return timings


class Clock:
    """Wall and CPU marks at the moments the caller chooses; ``on_epoch_end`` makes it a training
    callback (a mark after every epoch, the checkpoint included)."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        sync(self.device)
        self.marks.append((time.perf_counter(), time.process_time()))

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.mark()

    def intervals(self, per: int = 1) -> Timing:
        """The intervals between consecutive marks, divided by ``per`` (steps of an epoch)."""
        pairs = list(zip(self.marks, self.marks[1:], strict=False))
        return Timing([(b[0] - a[0]) / per for a, b in pairs], [(b[1] - a[1]) / per for a, b in pairs])

    def fastest(self, per: int = 1) -> tuple[float, float]:
        """(wall, cpu) of the fastest interval: on a shared CPU the least disturbed one."""
        t = self.intervals(per)
        return min(t.wall), min(t.cpu)


def commit(root: Path | None = None) -> str:
    """The checkout's short commit (with ``+`` when it has uncommitted changes), or ``unknown``."""
    root = root or Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = rev.stdout.strip()
    return (sha + ("+" if dirty.stdout.strip() else "")) if rev.returncode == 0 and sha else "unknown"


def header(device: torch.device | str | None = "cpu", title: str | None = None) -> str:
    """The lines a benchmark prints before its tables: what it measures (``title``), the CPU model,
    the instruction-set flags detected, torch's kernels and threads, the GPU on a CUDA device, the
    device, date and commit. Timings are only comparable under the same header."""
    device = torch.device(device) if isinstance(device, str) else device
    lines = [f"# {title}"] if title else []
    lines.append(machine_line(device))
    where = f"device: {device}" if device is not None else "device: -"
    lines.append(f"{where} · {datetime.date.today().isoformat()} · commit {commit()}")
    return "\n".join(lines)


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` significant digits (at least all integer digits), None as -."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def table_head(headers: Sequence[str]) -> str:
    """A markdown table's header and rule (rows follow with :func:`table_row`, as they are measured)."""
    return "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers)


def table_row(cells: Sequence[Any], columns: int | None = None) -> str:
    """One markdown table row; cells that are not strings go through :func:`cell`."""
    text = [c if isinstance(c, str) else cell(c) for c in cells]
    if columns is not None and len(text) != columns:
        raise ValueError(f"table row has {len(text)} cells for {columns} columns: {text}")
    return "| " + " | ".join(text) + " |"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    return "\n".join([table_head(headers), *(table_row(r, len(headers)) for r in rows)])
