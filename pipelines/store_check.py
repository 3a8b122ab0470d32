"""A tracking URI checked before any work: one line naming the URI and what is wrong, in seconds.

MLflow itself says what is wrong with a store only at its first call, after minutes of retries for
a server that does not answer (253 s), an SQLAlchemy error for a read-only SQLite location (109 s),
and with chained tracebacks; reading a ``models:/`` URI from an SQLite file that does not exist
creates it. These checks run before training or loading, and the first creation of a local SQLite
store is serialised (two trainings starting at once would both create its tables: "duplicate
column name").
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from fcdd.errors import UsageError

CONNECT_TIMEOUT_S = 5.0
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


class TrackingStoreError(UsageError):
    """The tracking store cannot be used: its message names the URI and the reason."""


def _store_kind(uri: str) -> str:
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\"):  # a path (or C:\ on Windows)
        return "folder"
    return scheme


def check_store(uri: str, create: bool) -> None:
    """Raise TrackingStoreError unless ``uri`` names a store MLflow can use now; ``create``: a local
    store may be created (training), else it must exist (reading a model from it)."""
    kind = _store_kind(uri)
    if kind == "sqlite":
        _check_sqlite(uri, create)
    elif kind == "folder":
        _check_folder(uri, create)
    elif kind in ("http", "https") or kind in DATABASE_PORTS:
        _check_server(uri, kind)
    else:
        _check_scheme(uri)


def _sqlite_path(uri: str) -> Path | None:
    from pipelines.registry import local_store_path

    return local_store_path(uri)


def _check_sqlite(uri: str, create: bool) -> None:
    path = _sqlite_path(uri)
    if path is None:  # sqlite:// (in memory)
        return
    if path.exists():
        if not path.is_file():
            raise TrackingStoreError(f"tracking URI {uri}: {path} is not a file")
        try:
            with open(path, "r+b"):
                pass
        except OSError as e:
            raise TrackingStoreError(f"tracking URI {uri}: cannot write {path} ({e.strerror})") from None
        return
    if not create:
        raise TrackingStoreError(
            f"tracking URI {uri}: no MLflow store at {path} (nothing was tracked there; "
            "give --tracking-uri or set MLFLOW_TRACKING_URI)"
        )
    _check_writable_folder(uri, path.parent)


def _check_folder(uri: str, create: bool) -> None:
    from pipelines.registry import local_store_path

    path = local_store_path(uri)
    if path.exists():
        if not path.is_dir():
            raise TrackingStoreError(f"tracking URI {uri}: {path} is not a folder")
        if create:
            _check_writable_folder(uri, path)
        return
    if not create:
        raise TrackingStoreError(f"tracking URI {uri}: no MLflow store at {path}")
    _check_writable_folder(uri, path.parent)


def _check_writable_folder(uri: str, folder: Path) -> None:
    if not folder.is_dir():
        raise TrackingStoreError(f"tracking URI {uri}: the folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise TrackingStoreError(
            f"tracking URI {uri}: cannot create the store in {folder} ({e.strerror})"
        ) from None


def _check_server(uri: str, kind: str) -> None:
    parsed = urlparse(uri)
    if not parsed.hostname:
        raise TrackingStoreError(f"tracking URI {uri}: no host name")
    default = DATABASE_PORTS.get(kind) or (443 if kind == "https" else 80)
    try:
        port = parsed.port or default
    except ValueError:
        raise TrackingStoreError(f"tracking URI {uri}: not a valid port") from None
    try:
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise TrackingStoreError(
            f"tracking URI {uri}: the server does not answer ({reason} after {CONNECT_TIMEOUT_S:g} s)"
        ) from None


def _check_scheme(uri: str) -> None:
    """Schemes MLflow knows (databricks, plugins' stores) pass; others are one line."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    try:
        _tracking_store_registry.get_store_builder(uri)
    except Exception:  # noqa: BLE001 (MLflow's unsupported-URI exception, by whatever name)
        raise TrackingStoreError(
            f"tracking URI {uri}: unknown scheme {urlparse(uri).scheme!r} (use sqlite:///FILE, a folder, "
            "http(s)://HOST:PORT of an MLflow server, or a database URL)"
        ) from None


@contextlib.contextmanager
def creating_store(uri: str) -> Iterator[None]:
    """Hold a lock beside a local SQLite store while a process opens it first (creating or
    upgrading its tables): two processes creating it at once fail with "duplicate column name"."""
    path = _sqlite_path(uri) if _store_kind(uri) == "sqlite" else None
    if path is None:
        yield
        return
    lock = path.parent / f".{path.name}.create.lock"
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
