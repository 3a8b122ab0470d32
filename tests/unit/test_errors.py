"""One error hierarchy: every user-facing error of the package is an FCDDError (the CLI's one catch)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import fcdd
from fcdd.errors import FCDDError


def test_every_error_class_defined_in_the_package_is_an_fcdd_error():
    found = {}
    for info in pkgutil.walk_packages(fcdd.__path__, "fcdd."):
        if info.name.endswith(".__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    assert len(found) >= 10, sorted(found)  # the hierarchy itself plus the modules' own subclasses
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, FCDDError))
    assert outside == []
