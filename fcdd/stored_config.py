"""The configuration a model was trained with, rebuilt from its model.pt (``fcdd evaluate``).

model.pt's meta carries ``config`` (every ``section.key`` as trained) and ``data_root_resolved``
(data.root made absolute at training time), so the exact split (dataset, root, folder spec,
limits, semi split) can be rebuilt from any working directory. A params file, presets and
``-o`` overrides given explicitly apply on top, in that order.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fcdd.config import Config, ConfigError, _build, _deep_update, config_layers, validate


def resolved_root(root: str) -> str:
    """data.root as an absolute path (stored beside the as-given value at training time)."""
    return str(Path(root).expanduser().resolve())


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *sections, last = key.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = copy.deepcopy(value)
    return out


def config_from_model(
    meta: dict[str, Any],
    model: str,
    params: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: list[str] | None = None,
) -> Config:
    """The stored configuration < ``params`` (if given) < ``preset`` < ``overrides``; data.root, when
    nothing overrides it, is the first that exists of the as-given value (if absolute) and the one
    resolved at training, else the as-given value relative to the current folder."""
    stored = meta.get("config")
    if not isinstance(stored, dict):
        raise ConfigError(f"{model}: the model stores no training configuration; pass --params")
    resolved = _nested(stored)
    resolved.pop("preset", None)
    given_root = False
    layers = config_layers(params, overrides, preset) if params or overrides or preset else []
    for _, layer in layers:
        given_root |= "root" in (layer.get("data") or {})
        _deep_update(resolved, layer)
    try:
        cfg = _build(Config, resolved, "")
    except ConfigError as e:
        raise ConfigError(f"{model}: its stored configuration: {e}") from e
    if not given_root:
        cfg.data.root = _stored_root(cfg.data.root, meta.get("data_root_resolved"), model)
    validate(cfg)
    return cfg


def _stored_root(as_given: str, at_training: str | None, model: str) -> str:
    tried = [as_given] if Path(as_given).is_absolute() else []
    if at_training and at_training not in tried:
        tried.append(at_training)
    if not Path(as_given).is_absolute():
        tried.append(as_given)
    for root in tried:
        if Path(root).expanduser().exists():
            return root
    where = ", ".join(
        f"{r} (resolved at training)" if r == at_training else f"{r} (as given, from {Path.cwd()})"
        for r in tried
    )
    raise ConfigError(f"{model}: data.root not found; tried {where}; pass --root")
