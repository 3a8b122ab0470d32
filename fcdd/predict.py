"""Scoring many image files in bounded memory: what ``fcdd predict`` runs.

Images are scored at the model's input size, a batch at a time (at most ``batch_size`` images and
BATCH_PIXELS decoded pixels); the per-image outputs at the image's own resolution (overlay, defect
mask) are resized from that small map and written a band of rows at a time (fcdd.overlay), so
memory per image is its decoded pixels plus one band, not a full-resolution float heatmap.
Results stream to disk as they are computed: a row of scores.csv (flushed) and, with the model's
fixed colour scale (the default) or the per-image one, the overlay.

The shared ("global") colour scale needs every map first, so pass 1 appends each map at the
model's input resolution to one temporary file on disk and keeps only the exact running minimum and
a fixed-size uniform sample (reservoir) of the values; pass 2 reads the maps back one at a time and
writes the overlays (the q-quantile estimated from the 65,536-value sample: rank error about
sqrt(q(1-q)/65536), < 0.1 percentile points).

A file that cannot be listed, read or scored does not stop the call: it is listed with its reason in
failures.csv and returned, and the rest is scored.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcdd import decisions, overlay
from fcdd.data.image_io import image_size, read_image
from fcdd.detector import DetectorError, to_pil
from fcdd.errors import DataError
from fcdd.objectives.blur import overlay_blur

SAMPLE_SIZE = 65_536  # values kept for the global colour scale's quantile
SAMPLES_PER_MAP = 4096  # at most this many values of each map enter the reservoir
BATCH_PIXELS = 16_000_000  # decoded pixels held at once (an image larger than this goes alone)
NORMALISATIONS = ("model", "global", "local")


@dataclass
class PredictResult:
    scored: int = 0
    heatmaps: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    scale: overlay.ColourScale | None = None  # the model's or the call's shared scale
    note: str = ""  # e.g. why the model scale was not available


class Reservoir:
    """A uniform random sample of at most ``size`` values of everything added (Algorithm R)."""

    def __init__(self, size: int = SAMPLE_SIZE, seed: int = 0):
        self.values = np.empty(size, np.float32)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).ravel()
        size, filled = len(self.values), min(self.seen, len(self.values))
        take = min(size - filled, len(x))
        self.values[filled : filled + take] = x[:take]
        rest = x[take:]
        if len(rest):
            t = self.seen + take + np.arange(len(rest))  # index of each value in the whole stream
            j = (self.rng.random(len(rest)) * (t + 1)).astype(np.int64)
            keep = j < size
            self.values[j[keep]] = rest[keep]
        self.seen += len(x)

    def sample(self) -> np.ndarray:
        return self.values[: min(self.seen, len(self.values))]


class CalibratedDecisions:
    """p-value, normalised score and decision (p_value <= alpha) per image, and the defect mask
    PNG of each anomalous one (fcdd.decisions.mask_rule: never empty; ``mask_note`` says when it
    is not cut at the calibrated pixel threshold)."""

    fields = ("p_value", "normalised_score", "anomalous", "mask", "mask_note")

    def __init__(self, calibration: dict, alpha: float, out: Path, q: float):
        self.calibration, self.alpha, self.out, self.q = calibration, alpha, out, q

    def __call__(self, i: int, path: Path, score: float, up: np.ndarray, size: tuple[int, int]) -> dict:
        (d,) = decisions.decide(self.calibration, [score], [up], [size], self.alpha, self.q)
        row = {"p_value": d.p_value, "normalised_score": d.normalised_score, "anomalous": d.anomalous}
        row["mask"] = row["mask_note"] = ""
        if d.rule is not None:
            row["mask"] = f"{i:04d}_{Path(path).stem}_mask.png"
            row["mask_note"] = d.rule.note
            overlay.write_mask(self.out / row["mask"], up, size, d.rule)
        return row


def predict_files(
    det,
    paths: Sequence[Path],
    out: Path,
    batch_size: int = 16,
    threshold: float | None = None,
    normalisation: str = "model",
    heatmaps: bool = True,
    on_row: Callable[[dict], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    decide: CalibratedDecisions | None = None,
    problems: Sequence[tuple[str, str]] = (),
) -> PredictResult:
    """Score ``paths`` into ``out`` (scores.csv, overlays, masks, failures.csv when a file failed).

    ``det``: a Detector or an exported one (anything with ``score(images, batch_size, full_size)``
    and ``meta``). ``decide`` adds calibrated decisions to each row; ``problems`` are files that
    failed before (while listing the inputs), reported first."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r}: expected one of {', '.join(NORMALISATIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "failures.csv").unlink(missing_ok=True)  # never leave an older call's list behind
    q = float(det.meta.get("quantile", 0.97))
    result = PredictResult()
    if heatmaps and normalisation == "model":
        result.scale = overlay.model_scale(det.meta)
        if result.scale is None:
            normalisation = "global"
            result.note = (
                "the model holds no colour scale (no calibration): heatmaps use this call's (global)"
            )

    def fail(path: str, reason: str) -> None:
        result.failures.append((path, reason))
        if on_failure:
            on_failure(path, reason)

    for path, reason in problems:
        fail(path, reason)
    fields = ["path", "score"] + (["label"] if threshold is not None else [])
    fields += list(decide.fields if decide else []) + (["heatmap"] if heatmaps else [])
    with (
        tempfile.TemporaryDirectory(dir=out, prefix=".fcdd-maps-") as tmp,
        open(out / "scores.csv", "w", newline="", encoding="utf-8") as f,
    ):
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        shared = _SharedScale(Path(tmp) / "maps.f32") if heatmaps and normalisation == "global" else None
        call = _Call(det, out, threshold, decide, heatmaps, shared, q, result, fail, overlay_blur(det))

        def emit(row: dict) -> None:
            writer.writerow(row)
            f.flush()
            if on_row:
                on_row(row)

        for batch in _batches(paths, batch_size, fail):
            call.score(batch, emit)
            del batch  # before the next batch is decoded
        if shared is not None:
            result.scale = shared.scale(q)
            result.heatmaps += shared.write(result.scale, fail)
    if result.failures:
        with open(out / "failures.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows(result.failures)
    return result


@dataclass
class _Call:
    """What one batch needs: the model, the outputs and the result so far."""

    det: object
    out: Path
    threshold: float | None
    decide: CalibratedDecisions | None
    heatmaps: bool
    shared: _SharedScale | None
    q: float
    result: PredictResult
    fail: Callable[[str, str], None]
    blur: Callable | None = None  # a baseline's display blur (docs/baselines.md §4), or None

    def score(self, batch: list, emit: Callable[[dict], None]) -> None:
        try:  # maps at the input size: resized per image, a band at a time, where needed
            scored = self.det.score([im for _, im in batch], batch_size=len(batch), full_size=False)
        except (RuntimeError, ValueError) as e:  # e.g. an image the network cannot take
            for p, _ in batch:
                self.fail(str(p), f"scoring failed: {e}")
            return
        for (p, im), s, up in zip(batch, scored.scores, scored.heatmaps, strict=True):
            row = {"path": str(p), "score": float(s)}
            if self.threshold is not None:
                row["label"] = "defect" if s > self.threshold else "good"
            if self.decide is not None:
                row.update(self.decide(self.result.scored, p, float(s), up, (im.height, im.width)))
            if self.heatmaps:
                row["heatmap"] = f"{self.result.scored:04d}_{p.stem}_heatmap.png"
                up = self.blur(up) if self.blur is not None else up  # overlays only: decided on raw
                caption = overlay.caption_for(row, self.decide.alpha if self.decide else None)
                if self.shared is not None:
                    self.shared.add(p, self.out / row["heatmap"], up, caption)
                else:
                    scale = self.result.scale or overlay.local_scale(up, self.q)
                    overlay.write_overlay(self.out / row["heatmap"], im, up, scale, caption)
                    self.result.heatmaps += 1
            self.result.scored += 1
            emit(row)


def _batches(paths: Sequence[Path], batch_size: int, fail) -> Iterator[list]:
    """(path, decoded image) batches of at most ``batch_size`` images and BATCH_PIXELS pixels (by
    the headers, before decoding); files that cannot be read go to ``fail``."""
    batch, pixels = [], 0
    for p in paths:
        try:
            h, w = image_size(p)
        except DataError:
            h = w = 0  # decoding below says what is wrong with it
        if batch and (len(batch) >= batch_size or pixels + h * w > BATCH_PIXELS):
            yield batch
            batch, pixels = [], 0
        try:
            batch.append((p, to_pil(p)))
            pixels += h * w
        except DetectorError as e:
            fail(str(p), str(e).removeprefix(f"{p}: "))
    if batch:
        yield batch


class _SharedScale:
    """The global colour scale: maps to disk and a sample in pass 1, overlays in pass 2."""

    def __init__(self, maps: Path):
        self.path, self.file = maps, open(maps, "wb")
        self.pending: list[tuple[Path, Path, tuple[int, int], list]] = []
        self.low, self.sample = np.inf, Reservoir()

    def add(self, source: Path, target: Path, up: np.ndarray, caption: list) -> None:
        self.file.write(np.ascontiguousarray(up, np.float32).tobytes())
        self.low = min(self.low, float(up.min()))
        step = max(1, int(np.sqrt(up.size / SAMPLES_PER_MAP)))
        self.sample.add(up[::step, ::step])
        self.pending.append((source, target, up.shape, caption))

    def scale(self, q: float) -> overlay.ColourScale:
        self.file.close()
        if not self.pending:
            return overlay.ColourScale(0.0, 1.0, "global")
        high = float(np.quantile(self.sample.sample() - self.low, q))
        return overlay.ColourScale(self.low, high, "global", f"these images, q{q:g}")

    def write(self, scale: overlay.ColourScale, fail) -> int:
        """Pass 2: one map and one image in memory at a time."""
        written = 0
        with open(self.path, "rb") as f:
            for source, target, shape, caption in self.pending:
                up = np.fromfile(f, dtype=np.float32, count=int(np.prod(shape))).reshape(shape)
                try:
                    im = read_image(source)
                except DataError as e:  # the file changed or vanished since pass 1
                    fail(str(source), f"heatmap not written: {e}")
                    continue
                overlay.write_overlay(target, im, up, scale, caption)
                written += 1
        return written
