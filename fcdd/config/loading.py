"""Reading a configuration: params.yaml, its presets, command-line overrides, type checks.

Resolution order (later wins): dataclass defaults < presets named by ``preset`` (in order)
< the sections written in params.yaml < command-line overrides (``train.epochs=3``).
The presets ship with the package (fcdd/config/presets.yaml); a params file's own ``presets:``
section adds presets or replaces those of the same name.
The CLI, the DVC stages and the Prefect flows all call :func:`load_config`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from fcdd.config.sections import Config, validate
from fcdd.errors import ConfigError, shown

PACKAGED_PRESETS = "presets.yaml"  # in this package: the presets fcdd ships
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# Values that are mappings themselves (anomalies.kind's mix): a later layer replaces them whole, so
# a file's {perlin: 0.5, scar: 0.5} over a preset's {cutpaste: 1} never becomes a three-kind mix.
ATOMIC_MAPPINGS = (("anomalies", "kind"),)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        mapping = [a for a in typing.get_args(hint) if typing.get_origin(a) is dict]
        if isinstance(value, dict) and mapping:  # a mapping's own message names the bad entry
            return _check_type(value, mapping[0], where)
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_hint_name(hint)}, got {shown(value)}")
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected: `classes: grid`
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_hint, value_hint = typing.get_args(hint)
        return {
            _check_type(k, key_hint, where): _check_type(v, value_hint, f"{where}.{k}")
            for k, v in value.items()
        }
    if hint is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads `1e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {shown(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
        return value
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads off/on (no/yes) as booleans: `bn_recalibration: off`
            return "on" if value else "off"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `classes: [0, 1]` and the like
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {shown(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {shown(values)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(values) - names))  # YAML keys may be numbers
    if unknown:
        raise ConfigError(
            f"unknown key {'.'.join(filter(None, [where, shown(unknown[0])[1:-1]]))!s}; "
            f"known keys of {where or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    obj = cls()
    for k, v in kwargs.items():
        if dataclasses.is_dataclass(v):
            v = _merge_dataclass(getattr(obj, k), values[k], f"{where}.{k}" if where else k)
        setattr(obj, k, v)
    return obj


def _merge_dataclass(base: Any, values: dict, where: str) -> Any:
    merged = copy.deepcopy(base)
    hints = typing.get_type_hints(type(base))
    names = {f.name for f in dataclasses.fields(base)}
    for k, v in (values or {}).items():
        if k not in names:
            raise ConfigError(
                f"unknown key {where}.{shown(str(k))[1:-1]}; known keys of {where}: {', '.join(sorted(names))}"
            )
        current = getattr(merged, k)
        if dataclasses.is_dataclass(current):
            setattr(merged, k, _merge_dataclass(current, v, f"{where}.{k}"))
        else:
            setattr(merged, k, _check_type(v, hints[k], f"{where}.{k}"))
    return merged


def _deep_update(base: dict, update: dict, path: tuple[str, ...] = ()) -> dict:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and (*path, k) not in ATOMIC_MAPPINGS:
            _deep_update(base[k], v, (*path, k))
        else:
            base[k] = copy.deepcopy(v)
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (["train", "epochs"], 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {shown(text)}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {shown(text)}: empty key")
    if not raw.strip():
        return path, None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {shown(text)}: the value is not valid YAML ({_yaml_problem(e)})"
        ) from None
    _check_expanded_size(value, f"override {shown(key)}")
    return path, value


# A params file is a few hundred values; YAML aliases can make a small file stand for billions.
MAX_VALUES = 100_000


def read_params(path: str | Path) -> dict[str, Any]:
    """The mapping of sections in a params file; one-line ConfigError for a missing, unreadable,
    non-UTF-8 or non-YAML file, or one whose aliases expand beyond MAX_VALUES values."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a configuration file")
    if not p.is_file():
        raise ConfigError(f"{p}: no such configuration file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the configuration file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({_yaml_problem(e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, got {type(raw).__name__}")
    _check_expanded_size(raw, str(p))
    return raw


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where (line, column)."""
    problem = getattr(e, "problem", None) or str(e).split("\n", 1)[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _check_expanded_size(value: Any, where: str) -> None:
    """Refuse a value whose aliases expand beyond MAX_VALUES (each shared node counted once per use,
    memoised by identity, so the count itself is cheap)."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a self-referencing alias counts once
            children = node.values() if isinstance(node, dict) else node
            sizes[id(node)] = 1 + sum(size(c) for c in children)
        return sizes[id(node)]

    n = size(value)
    if n > MAX_VALUES:
        raise ConfigError(
            f"{where}: its YAML aliases expand to {n:,} values (more than {MAX_VALUES:,}); refused"
        )


def load_config(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | list[str] | None = None,
) -> Config:
    """Read params.yaml (if given), apply presets, then ``section.key=value`` overrides."""
    resolved: dict[str, Any] = {}
    chosen: list[str] = []
    layers = config_layers(path, overrides, preset)
    _check_semi_kept(layers)
    for source, layer in layers:
        if source.startswith("preset "):
            chosen.append(source.split(" ", 1)[1])
        _deep_update(resolved, layer)
    resolved["preset"] = chosen
    cfg = _build(Config, resolved, "")
    _expand_home(cfg)
    validate(cfg)
    return cfg


def _expand_home(cfg: Config) -> None:
    """``~`` and ``~user`` in local paths, expanded once, here, for every reader (loaders, caches,
    run folders, the fingerprint)."""
    for section, key in HOME_PATHS:
        node = getattr(cfg, section)
        value = getattr(node, key)
        if isinstance(value, str) and value.startswith("~"):
            setattr(node, key, os.path.expanduser(value))


HOME_PATHS = (
    ("data", "root"),
    ("data", "cache_dir"),
    ("train", "output_dir"),
    ("train", "checkpoint_uri"),
    ("model", "weights_path"),
)


@functools.cache
def _packaged_presets() -> dict[str, Any]:
    from importlib.resources import files

    return yaml.safe_load(files("fcdd.config").joinpath(PACKAGED_PRESETS).read_text()) or {}


def packaged_presets() -> dict[str, Any]:
    """The presets fcdd ships (fcdd/config/presets.yaml): name -> sections."""
    return copy.deepcopy(_packaged_presets())


def preset_definitions(path: str | Path | None = None) -> dict[str, Any]:
    """name -> sections of every preset a configuration can name: the packaged ones, with those
    a params file's ``presets:`` section defines in their place (the file's definition wins)."""
    raw = _read_params(path) if path is not None else {}
    return _presets_of(raw.get("presets", {}))


def _presets_of(own: Any) -> dict[str, Any]:
    if own is None:
        own = {}
    if not isinstance(own, dict) or not all(isinstance(v, dict) or v is None for v in own.values()):
        raise ConfigError("presets: expected a mapping of preset name -> sections")
    return {**packaged_presets(), **{k: v or {} for k, v in copy.deepcopy(own).items()}}


def _read_params(path: str | Path) -> dict[str, Any]:
    return read_params(path)  # the one reader: UTF-8, readable, YAML, a mapping, bounded


def _check_semi_kept(layers: list[tuple[str, dict[str, Any]]]) -> None:
    """A preset that chooses real defects (``anomalies.kind: semi``, e.g. mvtec_semi) must not be
    replaced by the synthetic anomalies of a preset listed after it (cpu_mvtec's recipe)."""
    semi_by = None
    for source, layer in layers:
        if not source.startswith("preset "):
            continue
        kind = (layer.get("anomalies") or {}).get("kind")
        if kind == "semi":
            semi_by = source
        elif kind is not None and semi_by is not None:
            raise ConfigError(
                f"{source} (listed after {semi_by}) replaces its anomalies.kind semi with {kind}; "
                f"list {semi_by.split(' ', 1)[1]} last in preset, e.g. [mvtec, cpu_mvtec, mvtec_semi]"
            )


def config_layers(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | list[str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The layers of a configuration, lowest first: ``("preset NAME", sections)`` per chosen preset,
    ``("PATH", sections)`` for the file, ``("override", sections)`` for the command line."""
    raw: dict[str, Any] = read_params(path) if path is not None else {}
    presets = _presets_of(raw.pop("presets", {}))

    given: dict[str, Any] = {}
    for o in overrides:
        keys, value = parse_override(o)
        node = given
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {shown(o)}: {k} is not a section")
        node[keys[-1]] = value

    explicit = _deep_update(copy.deepcopy(raw), given)
    chosen = preset if preset is not None else explicit.get("preset", [])
    chosen = [chosen] if isinstance(chosen, str) else list(chosen or [])
    layers: list[tuple[str, dict[str, Any]]] = []
    for name in chosen:
        if name not in presets:
            raise ConfigError(
                f"unknown preset {shown(name)}; known presets: {', '.join(sorted(map(str, presets)))}"
            )
        layers.append((f"preset {name}", copy.deepcopy(presets[name])))
    raw.pop("preset", None)
    given.pop("preset", None)
    layers.append((str(path) if path is not None else "file", raw))
    layers.append(("override", given))
    return layers


def explain_config(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | list[str] | None = None,
) -> list[tuple[str, Any, str]]:
    """(``section.key``, resolved value, where it came from) for every value of the configuration:
    ``default``, ``preset NAME``, ``PATH (section S)`` or ``override``."""
    cfg = load_config(path, overrides, preset)
    origin: dict[str, str] = {}
    for source, layer in config_layers(path, overrides, preset):
        for key in _flat_keys(Config, layer):
            section = key.split(".", 1)[0]
            where = source if source.startswith(("preset ", "override")) else f"{source} ({section})"
            beaten = origin.get(key, "")
            if beaten.startswith("preset ") and not where.startswith("preset "):
                where += f", over {beaten.split(',')[0]}"  # the trap of a copied params.yaml, made visible
            origin[key] = where
    rows = []
    for key, value in cfg.flat().items():
        set_at = origin.get(key) or origin.get(key.rsplit(".", 1)[0], "default")  # a mix's shares: its own
        where = "preset" if key == "preset" and cfg.preset else set_at
        if key == "evaluation.quantile" and value is None:
            where += f"; null -> {cfg.quantile} for {cfg.data.dataset} (docs/method.md §3)"
        if key == "model.sigma" and value is None:
            where += f"; null -> {cfg.sigma} for {cfg.data.dataset} (docs/method.md §3)"
        rows.append((key, value, where))
    return rows


def _flat_keys(cls: type, values: dict[str, Any], prefix: str = "") -> list[str]:
    """``section.key`` names a layer sets; a whole section given as a mapping sets each of its keys."""
    hints = typing.get_type_hints(cls)
    keys = []
    for k, v in values.items():
        name = f"{prefix}{k}"
        hint = hints.get(k)
        if hint is not None and dataclasses.is_dataclass(hint) and isinstance(v, dict):
            keys += _flat_keys(hint, v, f"{name}.")
        else:
            keys.append(name)
    return keys
