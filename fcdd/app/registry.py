"""The model registry as the page sees it: registered models with their aliases, loading a
``models:/`` URI, and what the registry says about a version (metrics, calibration, data version).

``fcdd/`` imports nothing of MLflow or ``pipelines/``: a registry is a plugin, found through the
entry point group ``fcdd.app_registry`` (the pipelines package declares its MLflow implementation in
pyproject.toml). :func:`open_registry` is the one place the page reaches it.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from fcdd.errors import UsageError

GROUP = "fcdd.app_registry"


class Registry(Protocol):
    """What the page needs from a model registry."""

    uri: str

    def list_models(self) -> list[dict[str, Any]]:
        """``[{"name": str, "aliases": {alias: version}, "versions": [str, ...]}]``."""

    def load(self, uri: str, device: str) -> Any:
        """A ``models:/`` URI -> fcdd.detector.Detector."""

    def describe(self, uri: str) -> dict[str, Any]:
        """``{"version", "image_auc", "pixel_auc", "calibration", "data_version", "run_id"}`` (None where unknown)."""


def tracking_uri(given: str | None) -> str | None:
    """The store the CLI uses for ``models:/`` URIs: the flag, else $MLFLOW_TRACKING_URI, else
    ``tracking.uri`` of ./params.yaml."""
    if given:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if Path("params.yaml").is_file():
        from fcdd.config import load_config

        return load_config("params.yaml").tracking.uri
    return None


def open_registry(uri: str | None) -> Registry | None:
    """The registry plugin at ``uri``; None without a URI. A URI without a plugin installed is a
    one-line error naming the extra to install."""
    if not uri:
        return None
    found = list(entry_points(group=GROUP))
    if not found:
        raise UsageError(
            f"tracking URI {uri}: reading a model registry needs the pipelines extra "
            "(pip install 'fcdd[pipelines]')"
        )
    return found[0].load()(uri)
