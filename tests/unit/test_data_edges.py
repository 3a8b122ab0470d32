"""Data and configuration edges that are not errors (issue 28): a training folder with a file name
that is not UTF-8, folders named like images and symbolic link loops; calibration.json as strict
JSON and kept_images.csv naming the calibration images; `~` in data.root; bounded messages."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from fcdd.config import ConfigError, load_config
from fcdd.experiment import run_experiment

ODD_NAME = b"g\xff-latin1.png"  # a name that is not UTF-8 (Linux allows any bytes but / and NUL)


def _strict_json(text: str):
    """A parser as strict as other languages' (no NaN, no Infinity)."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def odd_run(defect_folder, make_folder_config, tmp_path_factory):
    """A run on a copy of the test folder holding a non-UTF-8 file name, a folder named like an image
    and a symbolic link loop, with 5 images held out for calibration (so thresholds at alpha 0.01
    do not exist: 1/(5+1) > 0.01)."""
    tmp = tmp_path_factory.mktemp("odd")
    root = tmp / "data"
    shutil.copytree(defect_folder, root)
    good = root / "good"
    odd = good / os.fsdecode(ODD_NAME)
    shutil.copy(good / "g00.png", odd)
    (good / "folder.png").mkdir()
    (good / "loop.png").symlink_to("loop.png")
    cfg = make_folder_config(root, tmp, "train.epochs=1", "evaluation.calibration=5")
    return run_experiment(cfg, "tiles", seed=0), odd


def test_a_non_utf8_name_in_a_training_folder_is_loaded_and_written_escaped(odd_run):
    result, odd = odd_run
    escaped = str(odd.parent) + "/g\\xff-latin1.png"
    with open(result.run_dir / "kept_images.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(result.run_dir / "scores.csv", encoding="utf-8") as f:
        scored = [r["path"] for r in csv.DictReader(f)]
    used = [r["path"] for r in rows] + scored
    assert used.count(escaped) == 1  # in training, calibration or the test split: once, readable
    summary = json.loads((result.run_dir / "data_summary.json").read_text(encoding="utf-8"))
    assert summary["train"]["nominal_available"] + summary["test"]["nominal"] == 41  # 40 + the odd one


def test_folders_named_like_images_and_link_loops_are_listed_as_skipped(odd_run):
    result, _ = odd_run
    summary = json.loads((result.run_dir / "data_summary.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert "folder named like an image" in reasons["folder.png"]
    assert "symbolic link loop" in reasons["loop.png"]


def test_calibration_json_is_strict_json_and_reads_back(odd_run, tmp_path):
    from fcdd.run_folder import read_calibration

    result, _ = odd_run
    data = _strict_json((result.run_dir / "calibration.json").read_text())
    assert data["n"] == 5 and data["thresholds"]["alpha_0.01"]["image"] is None
    assert "1/(n+1)" in data["null_note"]
    back = read_calibration(result.run_dir / "calibration.json")
    assert back["thresholds"]["alpha_0.01"]["image"] == math.inf
    older = tmp_path / "calibration.json"  # as files written before: Infinity
    older.write_text('{"n": 5, "thresholds": {"alpha_0.01": {"image": Infinity, "pixel": Infinity}}}')
    assert read_calibration(older)["thresholds"]["alpha_0.01"]["pixel"] == math.inf


def test_kept_images_names_the_calibration_images(odd_run):
    result, _ = odd_run
    with open(result.run_dir / "kept_images.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    calibration = [r for r in rows if r["split"] == "calibration"]
    train = {r["index"] for r in rows if r["split"] == "train"}
    assert len(calibration) == 5 and not train & {r["index"] for r in calibration}
    assert all("/good/" in r["path"] for r in calibration)


def test_a_home_relative_root_is_expanded_for_the_loader_too(
    defect_folder, make_folder_config, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    home.mkdir()
    (home / "parts").symlink_to(defect_folder)
    monkeypatch.setenv("HOME", str(home))
    cfg = make_folder_config(Path("~/parts"), tmp_path, "train.epochs=1")
    assert cfg.data.root == str(home / "parts")
    from fcdd.data import build_datasets

    data = build_datasets(cfg, "tiles", 0)
    assert len(data.train) > 0 and data.summary["root"] == str(home / "parts")


@pytest.mark.timeout(120)
def test_an_alias_bomb_is_refused_quickly(tmp_path):
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    levels += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefg", "bcdefgh", strict=True)]
    path = tmp_path / "bomb.yaml"
    path.write_text(
        "presets:\n  x:\n" + "".join(f"    {line}\n" for line in levels) + "train: {epochs: *h}\n"
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases expand to") as e:
        load_config(path)
    assert time.perf_counter() - start < 10 and len(str(e.value)) < 300


def test_messages_show_bounded_values():
    from fcdd.errors import shown

    deep = ["x"] * 9
    for _ in range(8):
        deep = [deep] * 9  # 9^9 strings when printed in full
    start = time.perf_counter()
    text = shown(deep)
    assert time.perf_counter() - start < 1 and len(text) <= 120
    assert shown("short") == "'short'"
