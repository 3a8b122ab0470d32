"""The datasets of docs/method.md §4 and what turns them into training and test sets.

- ``fcdd/data/datasets/``: one module per dataset (its loader, classes, σ, quantile, maps, CPU
  preset, augmentation, outlier-exposure facts); ``dataset_spec(name)``, ``dataset_names()`` and
  ``class_names(cfg)`` find them.
- ``build_datasets(cfg, cls, seed) -> DataBundle`` (fcdd/data/bundle.py): one class, ready to train
  and test; ``test_transform(preprocess)``: the one inference preprocessing.

The configuration reads the datasets' facts whenever a params file loads, so this package and its
registry import no torch; the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fcdd.errors import DataError

if TYPE_CHECKING:
    from fcdd.data.bundle import DataBundle, build_datasets, describe, seeded_subset, stratified_subset
    from fcdd.data.datasets import class_names, dataset_names, dataset_spec
    from fcdd.data.transforms import test_transform

_HOMES = {
    "DataBundle": "fcdd.data.bundle",
    "build_datasets": "fcdd.data.bundle",
    "describe": "fcdd.data.bundle",
    "seeded_subset": "fcdd.data.bundle",
    "stratified_subset": "fcdd.data.bundle",
    "class_names": "fcdd.data.datasets",
    "dataset_names": "fcdd.data.datasets",
    "dataset_spec": "fcdd.data.datasets",
    "test_transform": "fcdd.data.transforms",
}
__all__ = [
    "DataBundle",
    "DataError",
    "build_datasets",
    "class_names",
    "dataset_names",
    "dataset_spec",
    "describe",
    "seeded_subset",
    "stratified_subset",
    "test_transform",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
