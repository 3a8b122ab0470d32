"""The one scoring thread of the page: takes pending images of the most recently used page, a batch
at a time (at most BATCH_IMAGES images or BATCH_PIXELS pixels, each under the pixel budget of
``fcdd predict``), and stores per image its score, p-value, low-resolution heatmap and thumbnail.

One thread for every page: on a CPU, scoring in parallel would only share the same cores, and the
web server stays free to answer while this thread waits on torch / onnxruntime (they release the GIL).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from fcdd import calibration as conformal
from fcdd import heatmaps as figs
from fcdd import overlay
from fcdd.app.catalog import CatalogError, LoadedModel, ModelCatalog
from fcdd.app.jobs import Item, Job, JobStore, ModelRun, Result
from fcdd.data.image_io import MAX_PIXELS, SIXTEEN_BIT_MODES, read_image
from fcdd.errors import DataError
from fcdd.pixel_grid import values_at_size
from fcdd.predict import SAMPLES_PER_MAP

BATCH_IMAGES = 4
BATCH_PIXELS = 16_000_000
THUMB_PX = 224  # longer side of a gallery thumbnail
BROWSER_FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "BMP"}  # shown as uploaded when 8-bit
EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA"}
DEPTH_NOTES = {
    **{
        m: "16-bit image: read as v / 257 (the 16-bit range onto 8 bits), as training and fcdd predict read it"
        for m in SIXTEEN_BIT_MODES
    },
    "F": "floating-point image: scaled to 8 bits by its value range (floats in [0, 1] as x * 255)",
    "I": "32-bit integer image: scaled to 8 bits by its value range",
}


class Scorer(threading.Thread):
    def __init__(self, store: JobStore, catalog: ModelCatalog, max_pixels: int = MAX_PIXELS):
        super().__init__(daemon=True, name="fcdd-app-scorer")
        self.store, self.catalog, self.max_pixels = store, catalog, max_pixels
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()
        self.store.notify()

    def run(self) -> None:
        while not self.stopped.is_set():
            task = self._next()
            if task is None:
                with self.store.work:
                    self.store.work.wait(timeout=1.0)
                continue
            try:
                self._batch(*task)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one image or model
                job, run = task
                with job.cond:
                    run.error = f"scoring stopped: {type(e).__name__}: {' '.join(str(e).split())}"
                    run.pending.clear()
                    job.bump()

    def _next(self) -> tuple[Job, ModelRun] | None:
        with self.store.lock:
            jobs = sorted(self.store.jobs.values(), key=lambda j: -j.used)  # the page in use first
        for job in jobs:
            with job.cond:
                for run in job.runs.values():
                    if run.pending and run.error is None:
                        return job, run
        return None

    def _batch(self, job: Job, run: ModelRun) -> None:
        try:
            model = self.catalog.get(run.ref)
        except CatalogError as e:
            with job.cond:
                run.error = str(e)
                run.pending.clear()
                job.bump()
            return
        batch, pixels = [], 0
        while len(batch) < BATCH_IMAGES and pixels < BATCH_PIXELS:
            with job.cond:
                if not run.pending:
                    break
                item = job.items[run.pending.popleft()]
            image = self._read(job, item)
            if image is None:
                with job.cond:
                    run.results[item.index] = Result(error=item.error, stamp=job.bump())
                continue
            batch.append((item, image))
            pixels += image.width * image.height
        if batch:
            self._score(job, run, model, batch)

    def _read(self, job: Job, item: Item) -> Image.Image | None:
        if item.error is not None:
            return None
        try:
            image = read_image(item.path, name=item.name, max_pixels=self.max_pixels)
        except DataError as e:
            with job.cond:
                item.error = str(e).removeprefix(f"{item.name}: ")
                item.stamp = job.bump()
            return None
        if item.size is None:  # first read: what the browser shows, and how the image was read
            display, note = display_file(item, image, job.folder / "display")
            with job.cond:
                item.size, item.display, item.note = (image.height, image.width), display, note
                item.stamp = job.bump()
        return image

    def _score(self, job: Job, run: ModelRun, model: LoadedModel, batch: list) -> None:
        det, q = model.detector, model.card["quantile"]
        try:
            out = det.score([im for _, im in batch], batch_size=len(batch), full_size=False)
        except (RuntimeError, ValueError) as e:  # e.g. an image the network cannot take
            with job.cond:
                for item, _ in batch:
                    run.results[item.index] = Result(error=f"scoring failed: {e}", stamp=job.bump())
            return
        cal = model.calibration
        p = conformal.p_values(cal["image_scores"], out.scores) if cal else [None] * len(batch)
        maps, thumbs = job.folder / "maps" / run.key, job.folder / "thumbs" / run.key
        maps.mkdir(parents=True, exist_ok=True)
        thumbs.mkdir(parents=True, exist_ok=True)
        for (item, image), score, up, pv in zip(batch, out.scores, out.heatmaps, p, strict=True):
            up = np.ascontiguousarray(up, dtype=np.float32)
            up.tofile(maps / f"{item.index}.f32")
            local = overlay.local_scale(up, q)  # figs.normalise_local's scale
            write_thumbnail(thumbs / f"{item.index}.jpg", image, up, model.scale or local)
            values = values_at_size(up, (image.height, image.width))  # what the mask rule reads
            step = max(1, int(np.sqrt(up.size / SAMPLES_PER_MAP)))
            with job.cond:
                run.low = min(run.low, local.low)
                run.sample.add(up[::step, ::step])
                run.results[item.index] = Result(
                    float(score),
                    None if pv is None else float(pv),
                    (local.low, local.span),
                    up.shape,
                    None,
                    job.bump(),
                    float(values.max()),
                    float(np.quantile(values, q)),
                )


def display_file(item: Item, image: Image.Image, folder: Path) -> tuple[Path, str | None]:
    """The upload itself where a browser shows it as the model sees it (8-bit PNG, JPEG, ...),
    else an 8-bit PNG of what the model scored; and a note on how a deeper image was read."""
    with Image.open(item.path) as source:
        fmt, mode = source.format, source.mode
    note = DEPTH_NOTES.get(mode)
    if fmt in BROWSER_FORMATS and mode in EIGHT_BIT_MODES:
        return item.path, note
    folder.mkdir(exist_ok=True)
    out = folder / f"{item.index}.png"
    image.save(out, format="PNG", compress_level=1)
    return out, note


def write_thumbnail(path: Path, image: Image.Image, up: np.ndarray, scale: overlay.ColourScale) -> None:
    """The gallery's thumbnail on the colour scale the page opens with (the model's, else per image)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR)
    blended = figs.overlay(np.asarray(thumb), scale.unit(up))
    Image.fromarray(blended).save(path, format="JPEG", quality=85)


def read_map(job: Job, run: ModelRun, index: int) -> np.ndarray:
    result = run.results[index]
    return np.fromfile(job.folder / "maps" / run.key / f"{index}.f32", dtype=np.float32).reshape(result.shape)
