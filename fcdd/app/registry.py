"""The model registry as the page sees it: registered models with their aliases, loading a
``models:/`` URI, and what the registry says about a version (metrics, calibration, data version).

``fcdd/`` imports nothing of MLflow or ``pipelines/``: a registry is what a plugin gives
(fcdd.plugins; the pipelines package's MLflow plugin, pipelines/app_registry.py).
:func:`open_registry` is the one place the page reaches it.
"""

from __future__ import annotations

from typing import Any, Protocol

from fcdd import plugins
from fcdd.errors import UsageError


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
    """The store the CLI uses for ``models:/`` URIs (fcdd.plugins.tracking_uri)."""
    return plugins.tracking_uri(given)


def open_registry(uri: str | None) -> Registry | None:
    """The registry plugin at ``uri``; None without a URI. A URI without a plugin installed is a
    one-line error naming the extra to install."""
    if not uri:
        return None
    try:
        return plugins.registry(uri)
    except plugins.PluginMissing as e:
        raise UsageError(
            f"tracking URI {uri}: reading a model registry needs the pipelines extra "
            f"(pip install 'fcdd[pipelines]'): {e.reason}"
        ) from None
