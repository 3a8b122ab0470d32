"""The page's web server (FastAPI): the static page and a small JSON/bytes API over the model
catalogue, the jobs and the labels folder. ``create_app`` builds it; ``command.py`` serves it."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fcdd import calibration as conformal
from fcdd import heatmaps as figs
from fcdd.app import feedback
from fcdd.app.catalog import ModelCatalog
from fcdd.app.download import write_zip
from fcdd.app.jobs import JobError, JobStore
from fcdd.app.scorer import read_map
from fcdd.data.image_io import IMAGE_EXTENSIONS
from fcdd.errors import FCDDError
from fcdd.predict_inputs import Inputs, shown, walk_images

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
LOOPBACK = ["127.0.0.1", "localhost", "[::1]", "::1"]
MAX_FOLDER_LISTING = 100_000


@dataclass
class AppSettings:
    labels: Path
    images_root: Path | None = None  # server folders the page may score (None: uploads only)
    user: str = "fcdd"
    password: str | None = None  # HTTP Basic auth; required off loopback
    loopback: bool = True


def create_app(settings: AppSettings, catalog: ModelCatalog, store: JobStore) -> FastAPI:
    basic = HTTPBasic(auto_error=False, realm="fcdd app")

    def authorised(credentials: HTTPBasicCredentials | None = Depends(basic)) -> None:
        if settings.password is None:
            return
        ok = credentials is not None and secrets.compare_digest(
            credentials.username.encode(), settings.user.encode()
        ) & secrets.compare_digest(credentials.password.encode(), settings.password.encode())
        if not ok:
            raise HTTPException(
                401, "password required", headers={"WWW-Authenticate": 'Basic realm="fcdd app"'}
            )

    app = FastAPI(
        title="fcdd app", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(authorised)]
    )
    if settings.loopback:  # a page on 127.0.0.1 answers only to local names (DNS rebinding)
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK)

    @app.middleware("http")
    async def same_page_only(request: Request, call_next):
        # Other sites can make a browser send simple POSTs (and its saved password) here; they
        # cannot add a custom header without a CORS preflight, which this server never grants.
        if request.method not in ("GET", "HEAD") and request.headers.get("x-fcdd-app") != "1":
            return JSONResponse({"detail": "requests must come from the fcdd app page"}, status_code=403)
        return await call_next(request)

    @app.exception_handler(FCDDError)
    async def one_line(_request: Request, e: FCDDError):
        status = 404 if isinstance(e, JobError) and "expired" in str(e) else 400
        return JSONResponse({"detail": " ".join(str(e).split())}, status_code=status)

    _page_routes(app, settings, catalog, store)
    _job_routes(app, settings, catalog, store)
    _item_routes(app, settings, catalog, store)
    return app


def _page_routes(app: FastAPI, settings: AppSettings, catalog: ModelCatalog, store: JobStore) -> None:
    @app.get("/")
    def page():
        return FileResponse(
            STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/static/{name}")
    def static(name: str):
        if name not in PAGE_FILES:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/setup")
    def setup() -> dict[str, Any]:
        lut = figs.colorize(np.linspace(0, 1, 256, dtype=np.float32)[None])[0]
        return {
            "catalog": catalog.entries(),
            "labels": str(settings.labels),
            "images_root": str(settings.images_root) if settings.images_root else None,
            "colormap": lut.tolist(),
            "max_files": store.max_files,
            "max_upload_mb": store.max_bytes // 2**20,
            "default_alpha": conformal.DEFAULT_ALPHA,
        }

    @app.get("/api/model")
    def model(ref: str) -> dict[str, Any]:
        return catalog.get(ref).card


def _job_routes(app: FastAPI, settings: AppSettings, catalog: ModelCatalog, store: JobStore) -> None:
    @app.post("/api/jobs")
    def new_job() -> dict[str, str]:
        return {"job": store.create().id}

    @app.post("/api/jobs/{job_id}/track")
    def track(job_id: str, ref: str = Body(embed=True)) -> dict[str, Any]:
        job = store.get(job_id)
        catalog.check(ref)
        _, created = job.run_for(ref)
        store.notify()
        return {"created": created}

    @app.put("/api/jobs/{job_id}/files")
    async def upload(job_id: str, name: str, request: Request) -> dict[str, Any]:
        job = store.get(job_id)
        # The name is only shown (and used in scores.csv): a folder upload keeps its relative path.
        shown = name.strip().lstrip("/")[:300] or "image"
        item = await job.add_upload(shown, request.stream(), list(job.runs.values()))
        store.notify()
        return item.public()

    @app.post("/api/jobs/{job_id}/folder")
    def folder(job_id: str, path: str = Body(embed=True)) -> dict[str, Any]:
        job = store.get(job_id)
        files, names, problems = _folder_images(settings.images_root, path)
        added = job.add_paths(files, names, list(job.runs.values()))
        for name, reason in problems:  # listed with their reason, like a file that cannot be read
            job.add_failed(name, reason)
        store.notify()
        return {"added": added, "found": len(files), "failed": len(problems)}

    @app.get("/api/jobs/{job_id}/status")
    def status(job_id: str, ref: str | None = None, since: int = 0, wait: float = 0) -> dict[str, Any]:
        job = store.get(job_id)
        if wait > 0:
            job.wait(since, min(wait, 20.0))
        q = catalog.get(ref).card["quantile"] if ref and ref in job.runs else 0.97
        return job.snapshot(ref, since, q)


def _item_routes(app: FastAPI, settings: AppSettings, catalog: ModelCatalog, store: JobStore) -> None:
    @app.get("/api/jobs/{job_id}/items/{index}/image")
    def image(job_id: str, index: int):
        item = store.get(job_id).item(index)
        if item.display is None:
            raise HTTPException(404, f"{item.name}: not read yet" if not item.error else item.error)
        return FileResponse(item.display)

    @app.get("/api/jobs/{job_id}/items/{index}/thumb")
    def thumb(job_id: str, index: int, ref: str):
        job, run = _run(store, job_id, ref)
        path = job.folder / "thumbs" / run.key / f"{index}.jpg"
        if index not in run.results or not path.is_file():
            raise HTTPException(404, "not scored yet")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/api/jobs/{job_id}/items/{index}/map")
    def heat(job_id: str, index: int, ref: str):
        job, run = _run(store, job_id, ref)
        if index not in run.results or run.results[index].error:
            raise HTTPException(404, "not scored")
        m = read_map(job, run, index)
        return Response(
            m.tobytes(),
            media_type="application/octet-stream",
            headers={"X-Map-Shape": f"{m.shape[0]},{m.shape[1]}", "Cache-Control": "no-cache"},
        )

    @app.get("/api/jobs/{job_id}/download")
    def download(job_id: str, ref: str, alpha: float = conformal.DEFAULT_ALPHA):
        job, run = _run(store, job_id, ref)
        model = catalog.get(ref)
        alpha = conformal.check_alpha(alpha)
        out = write_zip(job, run, model, alpha, job.folder / "downloads" / f"{run.key}.zip")
        return FileResponse(out, media_type="application/zip", filename="fcdd-predictions.zip")

    @app.post("/api/feedback")
    def verdict(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        job = store.get(str(body.get("job")))
        item = job.item(int(body.get("i", -1)))
        if item.error or item.path is None:
            raise feedback.FeedbackError(f"{item.name}: {item.error or 'not stored'}: nothing to label")
        run = job.runs.get(str(body.get("ref")))
        result = run.results.get(item.index) if run else None
        context = {
            "model": body.get("ref", ""),
            "alpha": body.get("alpha", ""),
            "score": result.score if result else "",
            "p_value": result.p_value if result else "",
            "decision": body.get("decision", ""),
        }
        return feedback.record(
            settings.labels,
            item.path,
            item.name,
            str(body.get("verdict")),
            _data_url(body.get("mask")),
            context,
        )

    return app


def _run(store: JobStore, job_id: str, ref: str):
    job = store.get(job_id)
    run = job.runs.get(ref)
    if run is None:
        raise JobError(f"{ref}: this page has not scored its images with that model")
    return job, run


def _folder_images(root: Path | None, path: str) -> tuple[list[Path], list[str], list[tuple[str, str]]]:
    """Images under a server folder, which must lie under --images-root: (files, their names under
    the root, (name, reason) of what could not be listed: unreadable folders, names not UTF-8)."""
    if root is None:
        raise JobError("scoring server folders is off: start fcdd app with --images-root")
    folder = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if not folder.is_relative_to(root):
        raise JobError(f"{shown(path)}: outside --images-root {root}")
    if not folder.is_dir():
        raise JobError(f"{shown(path)}: no such folder under {root}")
    found = Inputs()
    walk_images(folder, found)  # the same listing as fcdd predict's
    files = [f for f in sorted(found.paths) if f.resolve().is_relative_to(root)][:MAX_FOLDER_LISTING]
    prefix = shown(root) + "/"
    problems = [(p.removeprefix(prefix), reason) for p, reason in found.problems]
    if not files and not problems:
        raise JobError(f"{shown(path)}: holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files, [str(f.relative_to(root)) for f in files], problems


def _data_url(value: Any) -> bytes | None:
    """A mask sent as a data URL (``data:image/png;base64,...``) or plain base64."""
    if not value:
        return None
    text = str(value).split(",", 1)[-1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise feedback.FeedbackError("mask: not base64 image data") from None
