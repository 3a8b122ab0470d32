"""The comparison stage (comparison/dvc.yaml) end to end: FCDD, HSC and AE through the train flow on
a tiny Fashion-MNIST configuration, then the table, report and figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.stages.compare import compare_settings

REPO = Path(__file__).resolve().parents[2]
FMNIST = REPO / "data" / "fashion-mnist"
SHARED_OE = REPO.parent / "shared" / "data" / "imagenet1k_samples"


def test_compare_settings_are_checked_in_one_line(tmp_path):
    path = tmp_path / "compare.yaml"
    assert compare_settings(path)["objectives"] == ["fcdd", "hsc", "ae"]  # no file: the defaults
    for section, message in [
        ({"objectives": ["fcdd", "svdd"]}, "compare.objectives must list some of fcdd, hsc, ae"),
        ({"objectives": ["ae", "ae"]}, "lists an objective twice"),
        ({"figure_images": 0}, "compare.figure_images must be a positive integer"),
        ({"colour": "red"}, "unknown key compare.colour"),
    ]:
        path.write_text(yaml.safe_dump({"compare": section}))
        with pytest.raises(SystemExit, match=message):
            compare_settings(path)


def test_the_stage_file_declares_what_the_stage_reads():
    stage = yaml.safe_load((REPO / "comparison" / "dvc.yaml").read_text())["stages"]["compare"]
    assert stage["wdir"] == ".." and stage["outs"] == ["outputs/compare"]
    assert {"comparison/params.yaml": ["compare"]} in stage["params"] and "train" in stage["params"]
    assert compare_settings(REPO / "comparison" / "params.yaml")["objectives"] == ["fcdd", "hsc", "ae"]


@pytest.mark.slow
@pytest.mark.skipif(
    not (any(FMNIST.glob("*ubyte*")) and SHARED_OE.is_dir()),
    reason="needs data/fashion-mnist and ../shared/data/imagenet1k_samples",
)
def test_the_stage_trains_each_objective_and_writes_table_report_and_figure(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(
        root=str(FMNIST),
        classes=["0"],
        train_limit=200,
        test_limit=200,
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
    )
    params["train"].update(epochs=1, seeds=[0, 1], output_dir="runs", progress=False, threads=1)
    params["anomalies"]["oe_source"] = str(SHARED_OE)
    params["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "compare.yaml").write_text(
        yaml.safe_dump({"compare": {"figure_images": 2, "output_dir": "cmp"}})
    )
    env = dict(
        os.environ,
        FCDD_PARAMS="params.yaml",
        FCDD_COMPARE_PARAMS="compare.yaml",
        PYTHONPATH=str(REPO),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.stages.compare"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "outputs" / "compare" / "summary.json").read_text())
    runs = summary["runs"]
    assert sorted((r["objective"], r["seed"]) for r in runs) == [
        (o, s) for o in ("ae", "fcdd", "hsc") for s in (0, 1)
    ]
    for objective in ("fcdd", "hsc", "ae"):
        cell = summary["table"]["per_class"]["t-shirt-top"][f"{objective}.image_auc"]
        assert cell["runs"] == 2 and 0 <= cell["mean"] <= 1
        assert summary["seconds_per_run"][objective] > 0
        model = tmp_path / "cmp" / objective / "fmnist" / "t-shirt-top" / "seed0" / "model.pt"
        assert model.is_file()  # each objective in its own folder
    report = (tmp_path / "outputs" / "compare" / "report.md").read_text()
    assert "| t-shirt-top |" in report and "![" in report and "paper" in report
    assert (tmp_path / "outputs" / "compare" / "comparison.png").stat().st_size > 10_000
