"""Outputs only from the stage that owns them: a DVC stage's outputs (``dvc.yaml`` / ``dvc.lock`` of
the project a run starts in) are written by that stage under ``dvc repro`` and by nothing else.

A run outside the stage (``fcdd train``, a Prefect deployment, ``python -m pipelines.flows``) whose
``<train.output_dir>/<dataset>`` is, holds or lies in such an output is refused before any work,
with one line naming the stage and the way out (another ``train.output_dir``). The stage's own entry
point says it is that stage through the environment variable ``FCDD_STAGE``. Only YAML is read here:
the package never imports DVC.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fcdd.errors import ConfigError

if TYPE_CHECKING:
    from fcdd.config import Config

STAGE_ENV = "FCDD_STAGE"  # set by pipelines/stages/<name>.py to the stage it runs
_VAR = re.compile(r"\$\{\s*([A-Za-z0-9_.]+)\s*\}")


def project_root(start: Path | None = None) -> Path | None:
    """The nearest folder (the start or above) with a dvc.yaml beside a .dvc folder."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / ".dvc").is_dir():
            return folder
    return None


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def stage_outputs(root: Path) -> dict[Path, str]:
    """Every output path of the project's stages (absolute) -> the stage's name: dvc.yaml's outs,
    ``${...}`` filled in from its params.yaml, and the paths dvc.lock recorded."""
    params = _read_yaml(root / "params.yaml")
    found: dict[Path, str] = {}
    for source in ("dvc.yaml", "dvc.lock"):
        for name, stage in (_read_yaml(root / source).get("stages") or {}).items():
            for out in (stage or {}).get("outs") or []:
                path = out.get("path") if isinstance(out, dict) and "path" in out else out
                if isinstance(path, dict):  # dvc.yaml's `- path: {cache: false}` form
                    path = next(iter(path), None)
                if not isinstance(path, str):
                    continue
                filled = _VAR.sub(lambda m: str(_lookup(params, m.group(1))), path)
                if "None" not in filled.split("/"):
                    found.setdefault((root / filled).resolve(), str(name))
    return found


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_owner(cfg: Config, start: Path | None = None) -> None:
    """ConfigError when this run's dataset folder overlaps another stage's DVC output (see above)."""
    root = project_root(start)
    if root is None:
        return
    target = (Path(cfg.train.output_dir).expanduser() / cfg.data.dataset).resolve()
    running = os.environ.get(STAGE_ENV)
    for out, stage in stage_outputs(root).items():
        if stage != running and _overlaps(target, out):
            shown = os.path.relpath(out, Path.cwd())
            raise ConfigError(
                f"train.output_dir {cfg.train.output_dir}: {shown} is the output of the DVC stage "
                f"'{stage}' (dvc.yaml), written only by `dvc repro`; give this run another folder "
                "(-o train.output_dir=runs/mine, or the flows' output_dir parameter)"
            )
