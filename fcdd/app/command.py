"""``fcdd app``: the inspection page on a model.pt, an exported folder or a registry URI."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from fcdd.errors import UsageError

PASSWORD_ENV, USER_ENV = "FCDD_APP_PASSWORD", "FCDD_APP_USER"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "app",
        help="a web page to inspect images: heatmaps, decisions, comparisons, verdicts",
        description="Serve a local web page on a model: drop images (or a folder) to see each one's heatmap "
        "at its own resolution, score, p-value and decision at an alpha you set; compare two models side by "
        "side; mark false alarms and missed defects (written to --labels as a folder dataset). Prints the "
        "page's URL and serves until interrupted (Ctrl-C). Needs the app extra (pip install 'fcdd[app]').",
    )
    p.add_argument(
        "model",
        nargs="*",
        help="model.pt files, exported folders or models:/NAME@ALIAS URIs "
        "(the first is shown first; more can be picked in the page)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this "
        f"machine only); any other needs a password in ${PASSWORD_ENV} or --password-file",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument(
        "--labels",
        default="labels",
        help="folder for verdicts: good/, defect/, masks/, "
        "labels.csv (default ./labels; never inside a model's folder)",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow store whose registered models the page lists (default: "
        "$MLFLOW_TRACKING_URI, else tracking.uri of ./params.yaml)",
    )
    p.add_argument(
        "--models-root",
        help="the page may also load model files and exported folders under this folder (nothing outside it)",
    )
    p.add_argument(
        "--images-root", help="the page may score server folders under this folder (uploads work without it)"
    )
    p.add_argument("--password-file", help="file holding the password (first line) for HTTP Basic auth")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (model.pt files)")
    p.add_argument("--max-files", type=int, default=2000, help="images per page (default 2000)")
    p.add_argument("--max-upload-mb", type=int, default=256, help="largest file accepted (default 256 MiB)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    try:
        import uvicorn

        from fcdd.app.server import AppSettings, create_app
    except ImportError as e:
        raise UsageError(f"fcdd app needs the app extra (pip install 'fcdd[app]'): {e}") from None
    from fcdd.app.catalog import ModelCatalog, kind_of
    from fcdd.app.feedback import check_labels_folder
    from fcdd.app.jobs import JobStore
    from fcdd.app.registry import open_registry, tracking_uri
    from fcdd.app.scorer import Scorer

    settings = _settings(args, AppSettings)
    registry = open_registry(tracking_uri(args.tracking_uri))
    if not args.model and registry is None and not args.models_root:
        raise UsageError("give a MODEL, --models-root or a tracking URI with registered models")
    root = _folder(args.models_root, "--models-root")
    catalog = ModelCatalog(args.model, root, registry, device=args.device)
    local = [Path(m) for m in args.model if kind_of(m) != "registry"]
    settings.labels = check_labels_folder(
        settings.labels, [m if m.is_dir() else m.parent for m in local] + ([root] if root else [])
    )
    for ref in args.model:  # every model named loads before the page opens: errors now, not later
        print(f"fcdd app: loading {ref}", file=sys.stderr, flush=True)
        catalog.get(ref)
    sock = _bind(args.host, args.port)
    store = JobStore(max_files=args.max_files, max_bytes=args.max_upload_mb * 2**20)
    scorer = Scorer(store, catalog)
    scorer.start()
    app = create_app(settings, catalog, store)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"fcdd app: serving http://{shown}:{port}/  (Ctrl-C stops it)", flush=True)
    print(f"fcdd app: verdicts go to {settings.labels}", file=sys.stderr, flush=True)
    if not settings.loopback:
        print(
            f"fcdd app: listening on {args.host}, reachable from other machines: password required "
            f"(HTTP Basic, user {settings.user!r}); the connection is not encrypted: use a trusted network "
            "or a TLS proxy",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        scorer.stop()
        store.close()
    return 0


def _settings(args, settings_type):
    loopback = _is_loopback(args.host)
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().splitlines()[0]
        except (OSError, IndexError) as e:
            raise UsageError(f"--password-file {args.password_file}: cannot read a password ({e})") from None
    password = password or os.environ.get(PASSWORD_ENV) or None
    if not loopback and not password:
        raise UsageError(
            f"--host {args.host}: other machines could reach the page; set a password in ${PASSWORD_ENV} "
            "or --password-file (or keep the default 127.0.0.1)"
        )
    if args.max_files < 1 or args.max_upload_mb < 1:
        raise UsageError("--max-files and --max-upload-mb must be at least 1")
    return settings_type(
        labels=Path(args.labels),
        images_root=_folder(args.images_root, "--images-root"),
        user=os.environ.get(USER_ENV, "fcdd"),
        password=password,
        loopback=loopback,
    )


def _folder(path: str | None, flag: str) -> Path | None:
    if not path:
        return None
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: no such folder")
    return folder


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are
    # TCP; with Nagle on, every response on a kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise UsageError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror}); --port 0 picks a free port"
        ) from None
    sock.listen(128)
    return sock
