"""Scoring many image files in bounded memory: what ``fcdd predict`` runs.

Results stream to disk as they are computed: a row of scores.csv (flushed) and, with the per-image
("local") colour scale, the heatmap overlay, one batch at a time. The shared ("global") colour
scale needs every map first, so pass 1 appends each map at the model's input resolution (the map
that is upscaled, nearest, to the image's own size; docs/method.md §1) to one temporary file on disk and
keeps only the exact running minimum and a fixed-size uniform sample (reservoir) of the values;
pass 2 reads the maps back one at a time and writes the overlays. Memory is one batch of images
plus the 65,536-value sample, whatever the number of files: the q-quantile of the colour scale is
estimated from that sample (rank error about sqrt(q(1-q)/65536), < 0.1 percentile points; nearest
upscaling repeats each value nearly equally often, so it is the full-resolution quantile too).

A file that cannot be read or scored does not stop the call: it is listed with its reason in
failures.csv and returned, and the rest is scored.
"""

from __future__ import annotations

import csv
import glob
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcdd import calibration as conformal
from fcdd import heatmaps as figs
from fcdd.data.image_io import IMAGE_EXTENSIONS, read_image
from fcdd.detector import DetectorError, full_heatmap, to_pil
from fcdd.errors import DataError, UsageError

SAMPLE_SIZE = 65_536  # values kept for the global colour scale's quantile
SAMPLES_PER_MAP = 4096  # at most this many values of each map enter the reservoir


@dataclass
class PredictResult:
    scored: int = 0
    heatmaps: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


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


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Image files from files, folders (searched recursively) and glob patterns, in order; a one-line
    UsageError for an input that names no image."""
    found: list[Path] = []
    suffixes = ", ".join(sorted(IMAGE_EXTENSIONS))
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise UsageError(f"{p}: folder holds no images ({suffixes})")
            found += files
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UsageError(f"{p}: not an image file (expected one of {suffixes})")
            found.append(p)
        elif any(c in item for c in "*?["):
            matches = glob.glob(item, recursive=True)
            files = sorted(Path(f) for f in matches if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise UsageError(f"{item}: pattern matches no image")
            found += files
        else:
            raise UsageError(f"{item}: no such file or folder")
    return found


class CalibratedDecisions:
    """``predict_files(decide=...)`` for a calibrated model: p-value, normalised score and decision
    (p_value <= alpha) per image, and a defect-mask PNG beside the overlay of each anomalous one."""

    fields = ("p_value", "normalised_score", "anomalous", "mask")

    def __init__(self, calibration: dict, alpha: float, out: Path):
        self.calibration, self.alpha, self.out = calibration, alpha, out

    def __call__(self, i: int, path: Path, score: float, heatmap: np.ndarray) -> dict:
        (d,) = conformal.decide(self.calibration, [score], [heatmap], self.alpha)
        row = {"p_value": d.p_value, "normalised_score": d.normalised_score, "anomalous": d.anomalous}
        row["mask"] = ""
        if d.anomalous:
            name = f"{i:04d}_{Path(path).stem}_mask.png"
            (self.out / name).write_bytes(conformal.mask_png(d.mask))
            row["mask"] = name
        return row


def predict_files(
    det,
    paths: Sequence[Path],
    out: Path,
    batch_size: int = 16,
    threshold: float | None = None,
    normalisation: str = "global",
    heatmaps: bool = True,
    on_row: Callable[[dict], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    decide: Callable[[int, Path, float, np.ndarray], dict] | None = None,
    decision_fields: Sequence[str] = (),
) -> PredictResult:
    """Score ``paths`` into ``out`` (scores.csv, overlays, failures.csv when a file failed).

    ``det``: a Detector or an exported one (anything with ``score(images, batch_size, full_size)``
    and ``meta``). ``decide(row index, path, score, full heatmap) -> dict`` adds the
    ``decision_fields`` columns to each row (calibrated decisions)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "failures.csv").unlink(missing_ok=True)  # never leave an older call's list behind
    q = float(det.meta.get("quantile", 0.97))
    result = PredictResult()

    def fail(path: Path, reason: str) -> None:
        result.failures.append((str(path), reason))
        if on_failure:
            on_failure(str(path), reason)

    fields = ["path", "score"] + (["label"] if threshold is not None else []) + list(decision_fields)
    fields += ["heatmap"] if heatmaps else []
    shared = heatmaps and normalisation == "global"
    with (
        tempfile.TemporaryDirectory(dir=out, prefix=".fcdd-maps-") as tmp,
        open(out / "scores.csv", "w", newline="") as f,
    ):
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        maps_file = open(Path(tmp) / "maps.f32", "wb") if shared else None
        pending: list[tuple[Path, str, tuple[int, int]]] = []  # global scale: overlays of pass 2
        low, sample = np.inf, Reservoir()
        for p, im, s, up in _scored(det, paths, batch_size, fail):
            row = {"path": str(p), "score": float(s)}
            if threshold is not None:
                row["label"] = "defect" if s > threshold else "good"
            heat = None
            if decide is not None:
                heat = full_heatmap(up, (im.height, im.width))
                row.update(decide(result.scored, p, float(s), heat))
            if heatmaps:
                row["heatmap"] = f"{result.scored:04d}_{p.stem}_heatmap.png"
                if shared:
                    maps_file.write(np.ascontiguousarray(up, np.float32).tobytes())
                    low = min(low, float(up.min()))
                    step = max(1, int(np.sqrt(up.size / SAMPLES_PER_MAP)))
                    sample.add(up[::step, ::step])
                    pending.append((p, row["heatmap"], up.shape))
                else:
                    heat = full_heatmap(up, (im.height, im.width)) if heat is None else heat
                    _write_overlay(out / row["heatmap"], im, figs.normalise_local(heat[None], q)[0])
                    result.heatmaps += 1
            writer.writerow(row)
            f.flush()
            result.scored += 1
            if on_row:
                on_row(row)
        if maps_file is not None:
            maps_file.close()
            high = float(np.quantile(sample.sample() - low, q)) if pending else 1.0
            result.heatmaps += _overlays_from_disk(Path(tmp) / "maps.f32", pending, out, low, high, fail)
    if result.failures:
        with open(out / "failures.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows(result.failures)
    return result


def _scored(det, paths: Sequence[Path], batch_size: int, fail):
    """(path, image, score, map at the input size) per readable, scorable file, a batch at a time."""
    for start in range(0, len(paths), batch_size):
        batch = []
        for p in paths[start : start + batch_size]:
            try:
                batch.append((p, to_pil(p)))
            except DetectorError as e:
                fail(p, str(e).removeprefix(f"{p}: "))
        if not batch:
            continue
        try:  # maps at the input size: upscaled per image only where needed
            scored = det.score([im for _, im in batch], batch_size=len(batch), full_size=False)
        except (RuntimeError, ValueError) as e:  # e.g. an image the network cannot take
            for p, _ in batch:
                fail(p, f"scoring failed: {e}")
            continue
        for (p, im), s, up in zip(batch, scored.scores, scored.heatmaps, strict=True):
            yield p, im, s, up


def _overlays_from_disk(maps: Path, pending, out: Path, low: float, high: float, fail) -> int:
    """Pass 2 of the global colour scale: one map and one image in memory at a time."""
    written = 0
    with open(maps, "rb") as f:
        for p, name, shape in pending:
            count = int(np.prod(shape))
            up = np.fromfile(f, dtype=np.float32, count=count).reshape(shape)
            try:
                im = read_image(p)
            except DataError as e:  # the file changed or vanished since pass 1
                fail(p, f"heatmap not written: {e}")
                continue
            heat = full_heatmap(up, (im.height, im.width))
            _write_overlay(out / name, im, np.clip((heat - low) / (high if high > 0 else 1.0), 0, 1))
            written += 1
    return written


def _write_overlay(path: Path, image, heat01: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(figs.overlay(np.asarray(image.convert("RGB")), heat01)).save(tmp, format="PNG")
    os.replace(tmp, path)
