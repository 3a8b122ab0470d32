"""User and environment errors of `fcdd` as one line (issue 28): configuration files and overrides,
output folders, a full disk, `fcdd init`'s arguments, a folder dataset's one class. Each case runs
the command as a user would, from a folder outside the repository, and asserts exit status 2 and
exactly one line on stderr naming what is wrong and where."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fcdd.cli import main
from fcdd.testing import tiny_detector

REPO = Path(__file__).resolve().parents[2]

BOMB = """\
presets:
  x:
    a: &a ["x","x","x","x","x","x","x","x","x"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
data: {classes: *g}
"""


@dataclass
class Place:
    """The files the cases name: a user's folder (the working directory) and what lies in it."""

    here: Path
    params: Path  # a small, valid folder-dataset params file
    afile: Path  # an ordinary file, where a folder is expected
    model: Path  # a model.pt
    data: Path  # the images


@pytest.fixture
def place(defect_folder, make_folder_config, tmp_path, monkeypatch) -> Place:
    here = tmp_path / "work"
    here.mkdir()
    cfg = make_folder_config(defect_folder, here, "train.epochs=1")
    data = cfg.to_dict()
    data.pop("preset")
    params = here / "small.yaml"
    params.write_text(yaml.safe_dump(data))
    afile = here / "afile"
    afile.write_text("not a folder\n")
    (here / "not-utf8.yaml").write_bytes(b"data:\n  root: \xff\xfe\n")
    (here / "bomb.yaml").write_text(BOMB)
    (here / "list.yaml").write_text("- 1\n- 2\n")
    (here / "folder").mkdir()
    model = tiny_detector().save(here / "model.pt")
    monkeypatch.chdir(here)  # outside the repository, as a user's own folder
    assert REPO not in here.parents
    return Place(here, params, afile, model, defect_folder)


def _unreadable(place: Place, monkeypatch) -> list[str]:
    """A params file the process may not read (chmod 000 does not stop root: the read fails as it would)."""
    target = place.here / "locked.yaml"
    target.write_text("train: {epochs: 1}\n")
    read_bytes = Path.read_bytes

    def refuse(self):
        if self == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    return ["config", "--params", str(target)]


def _init(*extra: str) -> list[str]:
    return ["init", "--dataset", "folder", "--root", ".", "--presets-from", str(REPO / "params.yaml"), *extra]


# (id, argv from the Place (or a function of (place, monkeypatch)), words the one line must hold)
CASES = [
    ("params-not-utf8", lambda p: ["config", "--params", "not-utf8.yaml"], "not-utf8.yaml: not UTF-8"),
    ("params-unreadable", _unreadable, "locked.yaml: cannot read the configuration file (Permission denied)"),
    ("params-a-folder", lambda p: ["config", "--params", "folder"], "folder: is a folder"),
    ("params-alias-bomb", lambda p: ["config", "--params", "bomb.yaml"], "YAML aliases expand to"),
    (
        "override-yaml-syntax",
        lambda p: ["config", "--params", str(p.params), "-o", "train.epochs=[1"],
        "override 'train.epochs=[1': the value is not valid YAML",
    ),
    (
        "override-mapping-syntax",
        lambda p: ["config", "--params", str(p.params), "-o", "data.folder={nominal: [good]"],
        "the value is not valid YAML",
    ),
    ("seeds-negative", lambda p: ["train", "--params", str(p.params), "--seeds", "-1"], "train.seeds[0]"),
    ("seeds-repeated", lambda p: ["train", "--params", str(p.params), "--seeds", "1", "1"], "distinct"),
    (
        "output-dir-a-file",
        lambda p: ["train", "--params", str(p.params), "-o", f"train.output_dir={p.afile}"],
        "train.output_dir",
    ),
    (
        "output-dir-under-a-file",
        lambda p: ["train", "--params", str(p.params), "-o", f"train.output_dir={p.afile}/runs"],
        "is a file, so no folder can be made under it",
    ),
    (
        "output-dir-unwritable",
        lambda p: ["train", "--params", str(p.params), "-o", "train.output_dir=/proc/fcdd-runs"],
        "train.output_dir /proc/fcdd-runs: cannot write there",
    ),
    (
        "cache-dir-a-file",
        lambda p: ["train", "--params", str(p.params), "-o", f"data.cache_dir={p.afile}"],
        "data.cache_dir",
    ),
    (
        "checkpoint-uri-under-a-file",
        lambda p: ["train", "--params", str(p.params), "-o", f"train.checkpoint_uri={p.afile}/ck"],
        "is a file, not a folder",
    ),
    ("export-out-a-file", lambda p: ["export", str(p.model), "--out", str(p.afile)], "--out"),
    (
        "export-out-under-a-file",
        lambda p: ["export", str(p.model), "--out", f"{p.afile}/x"],
        "is a file, so no folder can be made under it",
    ),
    ("evaluate-out-a-file", lambda p: ["evaluate", str(p.model), "--out", str(p.afile)], "--out"),
    (
        "evaluate-cache-dir-a-file",
        lambda p: ["evaluate", str(p.model), "--out", "ev", "-o", f"data.cache_dir={p.afile}"],
        "data.cache_dir",
    ),
    (
        "evaluate-out-under-a-file",
        lambda p: ["evaluate", str(p.model), "--out", f"{p.afile}/x"],
        "is a file, so no folder can be made under it",
    ),
    (
        "init-out-a-folder",
        lambda p: _init("--nominal", "good", "--out", "folder"),
        "--out folder: is a folder",
    ),
    (
        "init-presets-from-a-list",
        lambda p: [*_init("--out", "new.yaml")[:-2], "--presets-from", "list.yaml", "--out", "new.yaml"],
        "list.yaml: expected a mapping of sections",
    ),
    (
        "init-nominal-missing",
        lambda p: _init("--root", str(p.data), "--nominal", "nosuch", "--out", "new.yaml"),
        "--nominal nosuch: no such folder or file under --root",
    ),
    (
        "folder-two-classes-in-params",
        lambda p: ["train", "--params", str(p.params), "-o", "data.classes=[a, b]"],
        "data.classes: a folder dataset has one class",
    ),
    (
        "folder-classes-option",
        lambda p: ["train", "--params", str(p.params), "--classes", "a", "b"],
        "unknown folder class 'a'; known classes: tiles",
    ),
    (
        "folder-classes-nosuch",
        lambda p: ["train", "--params", str(p.params), "--classes", "nosuch"],
        "a folder dataset has one class",
    ),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_user_error_is_one_line_and_exit_2(argv, words, place, capsys, monkeypatch):
    args = argv(place, monkeypatch) if argv.__code__.co_argcount == 2 else argv(place)
    status = main(args)
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert status == 2, out.err[-2000:]
    assert len(lines) == 1, out.err[-2000:]  # nothing else: the error comes before any work
    assert lines[0].startswith(f"fcdd {args[0]}: error: ") and words in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]  # bounded, even for an alias bomb
    assert not (place.here / "new.yaml").exists()
    assert not list(place.here.rglob("seed*"))  # no run folder was started


def _fake_full_disk(monkeypatch):
    """torch.save on a full disk: part of the file written, then torch's own RuntimeError (no errno)."""
    import torch

    import fcdd.paths

    def save(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    usage = shutil.disk_usage

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(fcdd.paths.shutil, "disk_usage", lambda p: usage(p)._replace(free=0))


def test_a_full_disk_while_saving_the_checkpoint_is_one_line_and_leaves_no_tmp(place, capsys, monkeypatch):
    _fake_full_disk(monkeypatch)
    assert main(["train", "--params", str(place.params)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert errors == [err.splitlines()[-1]], err[-2000:]  # one error line, the last (data lines before it)
    assert (
        "checkpoint.pt: no space left on the device" in errors[0] and "partial file was removed" in errors[0]
    )
    run_dir = place.here / "runs" / "folder" / "tiles" / "seed0"
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "checkpoint.pt").exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_a_really_full_filesystem_is_said_in_words(place, capsys, monkeypatch):
    """The same on a real 400 KB tmpfs (the CNN-32 checkpoint is about 1 MB)."""
    tiny = place.here / "tiny"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(tiny)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert main(["train", "--params", str(place.params), "-o", f"train.output_dir={tiny}"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "no space left on the device" in err.splitlines()[-1], err[-2000:]
        assert not list(tiny.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(tiny)])  # lazily: a lock file the run had open may linger
