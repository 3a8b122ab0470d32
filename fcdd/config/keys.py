"""How a configuration key is declared: its default, the rules its value must meet, and its role.

Every field of the sections (fcdd/config/sections.py) is a :func:`setting`; the section's
``ROLE`` is the role of its keys unless a setting names another. The rules run when a
configuration loads (:func:`validate`), so no setting is found wrong after hours of training;
each raises a one-line ConfigError naming the key and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
from collections.abc import Callable, Iterator
from typing import Any

from fcdd.errors import ConfigError, shown

Rule = Callable[[str, Any], None]  # (section.key, value) -> None, or ConfigError


class Role(enum.Enum):
    """What a key changes; read by the run fingerprint, the stored config and the evaluate stage."""

    RESULT = "changes the result"  # what a run learns: in the run fingerprint (fcdd/fingerprint.py)
    RUNTIME = "runtime only"  # where and how fast a run goes: stored in model.pt, not fingerprinted
    EVALUATION = "evaluation only"  # how a trained model is scored: the evaluate stage re-scores on a change
    SERVICE = "service"  # tracking and orchestration: not stored in model.pt


def setting(default: Any, *rules: Rule, role: Role | None = None) -> Any:
    """A configuration field: its default (a list is copied for each instance), the rules its value
    must meet (not run on null) and its role where it differs from the section's ``ROLE``."""
    metadata = {"rules": rules, "role": role}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, role: Role | None = None) -> Any:
    """A nested section (e.g. ``data.folder``): its keys take its class's ROLE."""
    return dataclasses.field(default_factory=cls, metadata={"rules": (), "role": role})


# ---------------------------------------------------------------------------- rules
def must(ok: Callable[[Any], bool], text: str) -> Rule:
    """``where: must be TEXT, got VALUE`` unless ``ok(value)``."""

    def rule(where: str, value: Any) -> None:
        if not ok(value):
            raise ConfigError(f"{where}: must be {text}, got {shown(value)}")

    return rule


def at_least(low: int) -> Rule:
    return must(lambda v: v >= low, f"at least {low}")


def one_of(*choices: str) -> Rule:
    def rule(where: str, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{where}: {shown(value)} is not one of {', '.join(choices)}")

    return rule


def each(inner: Rule) -> Rule:
    """``inner`` on every item of a list, named ``where[i]``."""

    def rule(where: str, value: Any) -> None:
        for i, item in enumerate(value or []):
            inner(f"{where}[{i}]", item)

    return rule


non_empty_path = must(lambda v: bool(v.strip()), "a non-empty path")
non_empty = must(lambda v: bool(v.strip()), "non-empty")
positive = must(lambda v: v > 0, "positive")


# ---------------------------------------------------------------------------- walking the sections
def walk_keys(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field, Any]]:
    """(``section.key``, value, field, owning section) of every key, in declaration order; nested
    sections are walked in place of their field."""
    for f in dataclasses.fields(node):
        value, name = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from walk_keys(value, f"{name}.")
        else:
            yield name, value, f, node


def key_roles(cls: type) -> dict[str, Role]:
    """``section.key`` -> Role of every key of the dataclass ``cls`` (walked on its defaults)."""
    roles = {}
    for name, _, f, owner in walk_keys(cls()):
        role = f.metadata.get("role") or getattr(owner, "ROLE", None)
        if role is None:
            raise TypeError(
                f"configuration key {name}: no role (give setting(..., role=) or the section a ROLE)"
            )
        roles[name] = role
    return roles


def validate_fields(cfg: Any) -> None:
    """Every key's own rules, after the check that no number anywhere is NaN or infinite."""
    for name, value, _, _ in walk_keys(cfg):
        _check_finite(value, name)
    for name, value, f, _ in walk_keys(cfg):
        for rule in f.metadata.get("rules", ()) if value is not None else ():  # null: nothing to check
            rule(name, value)


def _check_finite(value: Any, where: str) -> None:
    """No NaN or infinity (YAML reads `.nan` and `.inf` as numbers)."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
