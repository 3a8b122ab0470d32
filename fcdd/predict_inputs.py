"""What ``fcdd predict`` reads and where it writes: the image files named by files, folders and
patterns, the problems met while listing them, and the output folder's checks and lock.

Listing never drops anything silently: a sub-folder that cannot be read and a file whose name is
not valid UTF-8 (scores.csv and the terminal are UTF-8 text) become rows of failures.csv like a file
that cannot be decoded, and the rest is scored. Folders are searched recursively, following links
to folders once each (a link back to a folder already searched adds nothing).
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fcdd.data.image_io import IMAGE_EXTENSIONS, is_image_file
from fcdd.errors import UsageError
from fcdd.folder_lock import FolderBusy, folder_lock

PREDICT_LOCK = ".fcdd-predict.lock"
# Files that make a folder a training run's or an evaluation's (scores.csv there is the test set's).
RUN_FOLDER_FILES = ("model.pt", "checkpoint.pt", "metrics.json")
NOT_UTF8 = "file name is not valid UTF-8 (shown with \\x escapes); rename the file to score it"


class PredictUsageError(UsageError):
    """An input or output of ``fcdd predict`` that cannot be used; the message names it."""


@dataclass
class Inputs:
    paths: list[Path] = field(default_factory=list)  # image files to score, in order
    problems: list[tuple[str, str]] = field(default_factory=list)  # (shown path, reason): failures
    folders: list[Path] = field(default_factory=list)  # input folders (and pattern bases) searched
    recursive: list[bool] = field(default_factory=list)  # ... and whether below them too


def shown(path: str | Path) -> str:
    """A path as text that can always be printed and written to a UTF-8 file: bytes of a name that
    are not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(path: str | Path) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def collect_images(inputs: Sequence[str]) -> Inputs:
    """Image files (IMAGE_EXTENSIONS) from files, folders (recursively) and glob patterns, in order.
    A one-line PredictUsageError for an input that names nothing to score."""
    found = Inputs()
    suffixes = ", ".join(IMAGE_EXTENSIONS)
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            if not os.access(p, os.R_OK | os.X_OK):
                raise PredictUsageError(f"{shown(p)}: folder not readable (permission denied)")
            here = Inputs()
            walk_images(p, here)
            if not here.paths and not here.problems:
                raise PredictUsageError(f"{shown(p)}: folder holds no images ({suffixes})")
            found.paths += sorted(here.paths)  # the order of Path.rglob, sorted
            found.problems += here.problems
            found.folders.append(p)
            found.recursive.append(True)
        elif p.is_file():
            if not is_image_file(p):
                raise PredictUsageError(f"{shown(p)}: not an image file (expected one of {suffixes})")
            _add(p, found)
        elif any(c in item for c in "*?["):
            # a folder the pattern names like an image stays in: it fails as "a folder, not an image file"
            files = sorted(Path(f) for f in glob.glob(item, recursive=True) if is_image_file(f))
            if not files:
                raise PredictUsageError(f"{shown(item)}: pattern matches no image")
            for f in files:
                _add(f, found)
            found.folders.append(_pattern_base(item))
            found.recursive.append("**" in item)
        else:
            raise PredictUsageError(f"{shown(item)}: no such file or folder")
    return found


def _add(path: Path, found: Inputs) -> None:
    if is_utf8(path):
        found.paths.append(path)
    else:
        found.problems.append((shown(path), NOT_UTF8))


def walk_images(top: Path, found: Inputs) -> None:
    """Depth-first, sorted, like ``rglob``; unreadable folders are recorded, links to folders
    followed once per real folder."""
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            found.problems.append((shown(folder), f"folder not readable ({e.strerror or e})"))
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links: a link to a folder is searched
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(Path(entry.path))
            elif is_image_file(entry.name):
                _add(Path(entry.path), found)
        stack.extend(reversed(subfolders))


def _pattern_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    base = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


# ---------------------------------------------------------------- the output folder
def check_output_folder(out: Path, found: Inputs) -> None:
    """Refuse an --out that is a file, cannot be created, is a training run's or evaluation's folder
    (its scores.csv would be overwritten), or lies inside a folder being scored (the next call would
    score this call's overlays). Creates the folder."""
    if out.exists() and not out.is_dir():
        raise PredictUsageError(f"--out {shown(out)}: is an existing file, not a folder")
    taken = [name for name in RUN_FOLDER_FILES if (out / name).is_file()]
    if taken:
        raise PredictUsageError(
            f"--out {shown(out)}: is a training run's or evaluation's folder (holds {taken[0]}); its "
            "scores.csv would be overwritten: choose another --out"
        )
    where = out.resolve()
    for folder, recursive in zip(found.folders, found.recursive, strict=True):
        base = folder.resolve()
        if where == base or (recursive and where.is_relative_to(base)):
            raise PredictUsageError(
                f"--out {shown(out)}: lies inside the scored folder {shown(folder)}: the heatmaps and masks "
                "written there would be scored as images by the next call; choose an --out outside it"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PredictUsageError(f"--out {shown(out)}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PredictUsageError(f"--out {shown(out)}: not writable (permission denied)")


@contextlib.contextmanager
def output_lock(out: Path, created: bool = False) -> Iterator[None]:
    """Only one ``fcdd predict`` writes into a folder at a time (two would interleave scores.csv).
    ``created``: the call made ``out``; if it fails before writing anything there (e.g. the model
    does not load), the folder and its lock file are removed again, so a failed call leaves no trace."""
    try:
        with folder_lock(out, PREDICT_LOCK) as lock:
            try:
                yield
            except BaseException:
                if created and [f.name for f in out.iterdir()] == [PREDICT_LOCK]:
                    lock.unlink(missing_ok=True)
                    out.rmdir()
                raise
    except FolderBusy as e:
        raise PredictUsageError(
            f"--out {shown(out)}: another fcdd predict is writing into this folder ({e.holder}); "
            "wait for it to finish or choose another --out"
        ) from None
