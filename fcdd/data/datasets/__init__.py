"""The datasets, one module each in this package, found by name.

Every module here defines ``DATASET``, an instance of a :class:`fcdd.data.spec.DatasetSpec`
subclass whose ``name`` is the value of ``data.dataset``. Adding a module adds a dataset; nothing
else lists them. The modules keep torch out of their top level (their loaders import it), so
reading the facts costs no torch import.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from fcdd.data.spec import REQUIRED, DatasetSpec
from fcdd.errors import DataError


@functools.cache
def _registry() -> dict[str, DatasetSpec]:
    found: dict[str, DatasetSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "DATASET", None)
        where = f"{module.__name__} ({module.__file__})"
        if not isinstance(spec, DatasetSpec):
            raise TypeError(f"{where}: a dataset module must set DATASET to a DatasetSpec instance")
        missing = [a for a in REQUIRED if not hasattr(spec, a)]
        if missing:
            raise TypeError(f"{where}: DATASET does not state {', '.join(missing)}")
        if spec.name in found:
            raise TypeError(f"{where}: dataset name {spec.name!r} is taken by {found[spec.name]!r}")
        found[spec.name] = spec
    return found


def dataset_names() -> tuple[str, ...]:
    """Every value data.dataset can take, sorted."""
    return tuple(_registry())


def dataset_spec(name: str) -> DatasetSpec:
    """The dataset called ``name``; DataError naming the known ones otherwise."""
    spec = _registry().get(name)
    if spec is None:
        raise DataError(f"data.dataset {name!r} is not one of {', '.join(dataset_names())}")
    return spec


def class_names(cfg: Any) -> list[str]:
    """The classes of cfg's dataset (path-safe names; a folder dataset has one)."""
    return dataset_spec(cfg.data.dataset).class_names(cfg)
