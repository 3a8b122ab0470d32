"""Class names: path-safe slugs and the lookup of a class given in any spelling, index or alias."""

from __future__ import annotations

import re

from fcdd.errors import DataError


def slug(name: str) -> str:
    """'T-shirt/top' -> 't-shirt-top', 'American alligator' -> 'american-alligator'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def resolve_class(cls: str, names: list[str], dataset: str, aliases: dict[str, int] | None = None) -> int:
    """Index of class ``cls``: its slug, its original name (any case), its index, or an alias."""
    key = slug(str(cls))
    for i, n in enumerate(names):
        if key == slug(n):
            return i
    if str(cls).strip().isdigit() and int(cls) < len(names):
        return int(cls)
    if aliases and key in aliases:
        return aliases[key]
    raise DataError(f"unknown {dataset} class {cls!r}; known classes: {', '.join(slug(n) for n in names)}")
