"""docs/architecture.md stays true to the code: the walk of one run from `dvc repro` to a registered
model names modules, functions and files that exist, and the layout diagram points only downwards."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
WALK = "## One run, from `dvc repro` to a registered model"
DOTTED = re.compile(r"`((?:fcdd|pipelines)(?:\.\w+)+)`")
FILES = re.compile(r"`((?:fcdd|pipelines|docs|tests|scripts)/[\w/.-]+\.\w+|dvc\.yaml|params\.yaml)`")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next ``## `` heading."""
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def resolve(name: str) -> object:
    """``a.b.c.attr.attr``: import the longest module prefix, then look the rest up as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and not module_name.startswith(e.name):
                raise  # the module exists but one of its own imports is missing: say so
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError names what is missing
        return obj
    raise ModuleNotFoundError(f"no module in {name}")


def unresolvable(text: str) -> list[str]:
    missing = []
    for name in dict.fromkeys(DOTTED.findall(text)):
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name}: {type(e).__name__}: {e}")
    return missing


def test_every_name_in_the_walk_of_one_run_exists():
    walk = section(DOC.read_text(), WALK)
    names = list(dict.fromkeys(DOTTED.findall(walk)))
    assert len(names) >= 50, names  # a walk file by file names the real places
    assert not unresolvable(walk), "\n".join(unresolvable(walk))
    # the walk is in order: stage, flows, fan-out, run_one, experiment, loop, objective, checkpoint,
    # evaluation, results, tracking, registry alias
    order = [
        "pipelines.stages.train.main",
        "pipelines.flows.train_dataset",
        "pipelines.fanout.run_jobs",
        "fcdd.runs.run_one",
        "fcdd.experiment.run_experiment",
        "fcdd.training.loop.fit",
        "fcdd.objectives.fcdd.FCDDObjective.loss",
        "fcdd.training.checkpoint.save_checkpoint",
        "fcdd.evaluation.evaluate",
        "fcdd.runs.result_row",
        "pipelines.tracked_run.MlflowRun.finish",
        "pipelines.registry.promote_if_better",
    ]
    assert [n for n in names if n in order] == order


def test_every_file_in_the_walk_exists():
    files = set(FILES.findall(section(DOC.read_text(), WALK)))
    assert {"dvc.yaml", "pipelines/stages/train.py", "fcdd/training/loop.py"} <= files
    assert not [f for f in sorted(files) if not (ROOT / f).is_file()]


def test_the_walk_starts_where_dvc_yaml_does():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    walk = section(DOC.read_text(), WALK)
    for stage in ("prepare", "train", "evaluate", "report"):
        module = stages[stage]["cmd"].removeprefix("python -m ")
        assert f"`{module}.main`" in walk or f"`python -m {module}`" in walk, stage


def test_a_name_that_is_gone_is_caught():
    """The check can fail: a renamed function, a removed module, a wrong attribute."""
    text = "`fcdd.training.loop.fit` `fcdd.training.loop.train_old` `fcdd.packed.train_packed` `fcdd.runs.Nope.x`"
    missing = unresolvable(text)
    assert [m.split(":")[0] for m in missing] == [
        "fcdd.training.loop.train_old",
        "fcdd.packed.train_packed",
        "fcdd.runs.Nope.x",
    ]


def _layer_table(text: str) -> dict[int, str]:
    rows = re.findall(r"^\| (\d) \| ([^|]+) \|", section(text, "## Layers"), re.M)
    return {int(n): name.strip() for n, name in rows}


def test_the_layout_diagram_has_every_layer_and_points_only_down():
    text = DOC.read_text()
    diagram = re.search(r"```mermaid\n(.*?)```", section(text, "## The layout"), re.S)
    assert diagram, "no mermaid block under '## The layout'"
    body = diagram.group(1)
    subgraphs = {int(n): title for n, title in re.findall(r'subgraph L(\d)\["\d · ([^"]+)"\]', body)}
    layers = _layer_table(text)
    assert sorted(subgraphs) == sorted(layers) == list(range(9))
    for n, name in layers.items():
        assert subgraphs[n].startswith(name.split()[0]), (n, name, subgraphs[n])
    edges = []
    for line in body.splitlines():
        nodes = re.findall(r"L(\d)", line) if "-->" in line else []
        edges += list(zip(nodes, nodes[1:], strict=False))
    assert edges and all(int(a) > int(b) for a, b in edges), edges
    assert not re.search(r"<--|-\.->|==>", body)  # no arrow of another kind that could point up
