"""scripts/house_check.py: the structure figures, on a made-up tree with one of each violation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "house_check.py"

LAYERS = """\
# Architecture

## Layers

| layer | name | modules |
|---|---|---|
| 0 | base | `fcdd`, `fcdd.base` |
| 1 | middle | `fcdd.middle`, `fcdd.pkg.*`, `fcdd.typed` (a remark naming `fcdd.top`, no pattern) |
| 2 | top | `fcdd.top`, `fcdd.cli.*` |
| 8 | composition | `pipelines.*` |

## Next section
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=120
    )


def _figures(out: str) -> dict[str, int]:
    figures = {}
    for line in out.splitlines()[1:]:
        if not line.strip():
            break
        name, count = line.strip().rsplit(None, 1)
        figures[name.strip()] = int(count)
    return figures


def _tree(tmp_path: Path, **extra: str) -> Path:
    long_body = "\n".join(f"    x{i} = {i}" for i in range(80))
    files = {
        "docs/architecture.md": LAYERS,
        "fcdd/__init__.py": "",
        "fcdd/base.py": "def f():\n    from fcdd.middle import g  # lazy, upward\n    return g\n",
        "fcdd/middle.py": "from fcdd import top\n\ndef g():\n    return top\n",
        "fcdd/top.py": "import fcdd.middle\n",  # middle <-> top: a circle
        "fcdd/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fcdd.top import x\n    import mlflow\n",
        "fcdd/pkg/__init__.py": "from .inner import h\n",
        "fcdd/pkg/inner.py": "import importlib\n\ndef h():\n    return importlib.import_module('prefect')\n",
        "fcdd/cli/__init__.py": f"def build_parser():\n{long_body}\n\ndef run():\n{long_body}\n",
        "fcdd/big.py": "\n" * 401,
        "pipelines/__init__.py": "import mlflow\nfrom fcdd import top\n",
    }
    files.update(extra)
    _write(tmp_path, files)
    return tmp_path


def test_each_violation_is_counted_and_named(tmp_path):
    res = _run(_tree(tmp_path))
    assert res.returncode == 1, res.stderr
    figures = _figures(res.stdout)
    assert figures == {
        "import circles": 1,
        "imports from a lower layer to a higher one": 2,  # base -> middle (lazy), middle -> top
        "modules without a layer": 1,  # fcdd.big
        "fcdd/ imports of pipelines, mlflow, prefect, dvc": 1,  # the dynamic one; TYPE_CHECKING not
        "modules over 400 lines": 1,
        "functions over 80 lines": 1,  # run(); build_parser is the CLI's parser table
    }, res.stdout
    out = res.stdout
    assert "circle: fcdd.middle -> fcdd.top -> fcdd.middle" in out
    assert "upward (layer 0 -> 1): fcdd/base.py:2 imports fcdd.middle (in a function)" in out
    assert "orchestration import: fcdd/pkg/inner.py:4 imports prefect (in a function)" in out
    assert "long function: fcdd/cli/__init__.py:" in out and "run(): 81 lines" in out
    assert "no layer: fcdd.big" in out
    assert "fcdd.typed" not in out  # type-only imports do not count


def test_only_limits_the_violations_to_some_paths(tmp_path):
    res = _run(_tree(tmp_path), "--only", "fcdd/pkg", "pipelines")
    figures = _figures(res.stdout)
    assert figures["fcdd/ imports of pipelines, mlflow, prefect, dvc"] == 1
    assert figures["imports from a lower layer to a higher one"] == 0  # base.py and middle.py not asked
    assert figures["import circles"] == 0 and figures["modules over 400 lines"] == 0
    assert res.returncode == 1


def test_a_clean_tree_passes(tmp_path):
    files = {
        "docs/architecture.md": LAYERS,
        "fcdd/__init__.py": "",
        "fcdd/base.py": "import os\n",
        "fcdd/middle.py": "from fcdd.base import os\n",
        "fcdd/top.py": "from fcdd import middle\n\ndef f():\n    from fcdd.base import os\n    return os\n",
        "pipelines/__init__.py": "import mlflow\nimport prefect\nfrom fcdd import top\n",
    }
    _write(tmp_path, files)
    res = _run(tmp_path)
    assert res.returncode == 0, res.stdout
    assert set(_figures(res.stdout).values()) == {0}


def test_a_layer_table_is_required(tmp_path):
    _write(
        tmp_path, {"docs/architecture.md": "# nothing\n", "fcdd/__init__.py": "", "pipelines/__init__.py": ""}
    )
    res = _run(tmp_path)
    assert res.returncode != 0 and "## Layers" in res.stderr
