"""The configuration a model was trained with, rebuilt from its model.pt (``fcdd evaluate``).

model.pt's meta carries ``config`` (every ``section.key`` as trained) and, for a relative
data.root, ``data_root_from_model`` (the root relative to the model file's folder), so the exact
split (dataset, root, folder spec, limits, semi split) can be rebuilt from any working directory.
A params file, presets and ``-o`` overrides given explicitly apply on top, in that order.

The root is stored relative to the model, not as an absolute path: model.pt's bytes then do not
depend on the folder the repository was cloned into (dvc.lock hashes them). Models of earlier
versions carry ``data_root_resolved`` (absolute); it is still tried.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from fcdd.config import Config, ConfigError, Role, _build, _deep_update, config_layers, role_of, validate

# Keys added after model files were written, left out at the value that behaves as before: an
# FCDD model.pt keeps its bytes (dvc.lock, golden digests); rebuilding a config gives the default.
LATER_KEYS_AT_DEFAULT = {
    "train.objective": "fcdd",
    "evaluation.blur_heatmaps": False,
    "model.image_score": "mean",
}
_MISSING = object()


def config_to_store(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat config (``Config.flat()``) without its service keys (``Role.SERVICE``: where results
    are logged and how runs are scheduled), so model.pt's bytes, and the pipeline's summaries, do not
    depend on them (dvc.lock hashes them; no DVC stage declares those keys), and without the later
    keys of LATER_KEYS_AT_DEFAULT at their defaults."""
    return {
        k: v
        for k, v in flat.items()
        if role_of(k) is not Role.SERVICE and LATER_KEYS_AT_DEFAULT.get(k, _MISSING) != v
    }


def root_from_model(root: str, model_dir: str | Path) -> dict[str, str]:
    """``{"data_root_from_model": path}`` for a relative data.root: where the root lies seen from
    the folder model.pt is saved in; nothing for an absolute root (the as-given value says it)."""
    if Path(root).expanduser().is_absolute():
        return {}
    # Lexical, not resolve(): a data/ symlink (a shared dataset) must not put its target in the file.
    rel = os.path.relpath(os.path.abspath(root), os.path.abspath(model_dir))
    return {"data_root_from_model": Path(rel).as_posix()}


def _root_at_training(meta: dict[str, Any], model: str) -> str | None:
    """The data root the model was trained on, found from the model file's folder (a model.pt path;
    not an MLflow URI), else the absolute path older models stored."""
    rel = meta.get("data_root_from_model")
    if rel and Path(model).is_file():
        return os.path.normpath(Path(os.path.abspath(model)).parent / rel)
    return meta.get("data_root_resolved")


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
    nothing overrides it, is the first that exists of the as-given value (if absolute), the one
    resolved at training (relative to the model file's folder), else the as-given value relative to
    the current folder."""
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
        cfg.data.root = _stored_root(cfg.data.root, _root_at_training(meta, model), model)
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
