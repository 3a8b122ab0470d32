"""What plugs into the fcdd command: a tracker for ``fcdd train`` and loaders of model URIs.

fcdd itself imports no tracking or orchestration package. A plugin is any object with some of:

- ``tracker(cfg) -> fcdd.runs.Tracker``: tracks ``fcdd train`` when ``tracking.enabled`` (an MLflow
  run per class and seed, a registered version);
- ``model_schemes: tuple[str, ...]`` and ``load_detector(ref, device, tracking_uri) -> Detector``:
  reads the models those URIs name (``models:/fcdd-mvtec-grid@champion``) for ``evaluate``,
  ``predict``, ``export`` and ``info``;
- ``registry(tracking_uri) -> fcdd.app.registry.Registry``: the registered models ``fcdd app``
  lists and loads.

Plugins are found through the entry-point group ``fcdd.plugins`` of the installed packages (this
project's MLflow plugin: ``mlflow = "pipelines.plugin:plugin"`` in pyproject.toml), or registered in
the running process with :func:`register`. A plugin whose import fails (its extra is not installed)
is skipped; the error is kept, so the command can say in one line what to install.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcdd.errors import UsageError

if TYPE_CHECKING:
    from fcdd.config import Config
    from fcdd.runs import Tracker

GROUP = "fcdd.plugins"

_registered: list[Any] = []


class PluginMissing(UsageError):
    """No installed plugin provides what was asked; ``reason`` says why (an import error, or none)."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what}: {reason}")
        self.reason = reason


@dataclass
class Found:
    plugins: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # plugins that did not load, and why

    def reason(self) -> str:
        return "; ".join(self.errors) or f"no plugin in the entry-point group {GROUP}"


def register(plugin: Any) -> None:
    """Add a plugin in this process (before the installed ones): embedding fcdd, tests."""
    _registered.insert(0, plugin)


def unregister(plugin: Any) -> None:
    _registered.remove(plugin)


def discover() -> Found:
    """The registered plugins, then those of the installed entry points that load."""
    found = Found(list(_registered))
    for entry in entry_points(group=GROUP):
        try:
            found.plugins.append(entry.load())
        except ImportError as e:
            found.errors.append(str(e))
    return found


def tracker(cfg: Config) -> Tracker:
    """The first plugin's tracker; PluginMissing when no plugin gives one."""
    found = discover()
    for plugin in found.plugins:
        if not hasattr(plugin, "tracker"):
            continue
        try:
            made = plugin.tracker(cfg)
        except ImportError as e:
            found.errors.append(str(e))
            continue
        if made is not None:
            return made
    raise PluginMissing("tracking", found.reason())


def registry(uri: str) -> Any:
    """The first plugin's model registry at ``uri``; PluginMissing when no plugin gives one."""
    found = discover()
    for plugin in found.plugins:
        if hasattr(plugin, "registry"):
            try:
                return plugin.registry(uri)
            except ImportError as e:
                found.errors.append(str(e))
    raise PluginMissing(f"tracking URI {uri}", found.reason())


def tracking_uri(given: str | None = None) -> str | None:
    """The store ``models:/`` URIs and the registry are read from: ``given`` (--tracking-uri), else
    $MLFLOW_TRACKING_URI, else ``tracking.uri`` of ./params.yaml (where this project's runs went)."""
    if given:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if Path("params.yaml").is_file():
        from fcdd.config import load_config

        return load_config("params.yaml").tracking.uri
    return None


def model_loader(ref: str) -> Callable[[str, Any, str | None], Any] | None:
    """The ``load_detector`` of the plugin whose ``model_schemes`` start ``ref``; None when no
    loaded plugin claims it (PluginMissing, with the reason, when a plugin failed to load)."""
    found = discover()
    for plugin in found.plugins:
        if ref.startswith(tuple(getattr(plugin, "model_schemes", ()))):
            return plugin.load_detector
    if found.errors:
        raise PluginMissing(ref, found.reason())
    return None
