"""The plugin this package gives the ``fcdd`` command (fcdd.plugins): MLflow tracking for
``fcdd train``, ``models:/`` / ``runs:/`` URIs for ``evaluate``, ``predict``, ``export``, ``info``,
and the model registry ``fcdd app`` lists (pipelines/app_registry.py).

Declared in pyproject.toml as the entry point ``mlflow = "pipelines.plugin:plugin"`` of the group
``fcdd.plugins``. It imports MLflow on load, so without the pipelines extra it does not load and the
command says what to install.
"""

from __future__ import annotations

from typing import Any

import mlflow

from fcdd import plugins
from fcdd.config import Config
from fcdd.errors import UsageError


class MlflowPlugin:
    name = "mlflow"
    model_schemes = ("models:/", "runs:/")

    def tracker(self, cfg: Config):
        """The MLflow tracker, once the tracking URI is known to work (checked in seconds, before
        any training: an unknown scheme, a server that does not answer, an unwritable location)."""
        from pipelines.store_check import check_store
        from pipelines.tracking import MlflowTracker, tracking_uri

        check_store(tracking_uri(cfg), create=True)
        return MlflowTracker()

    def registry(self, uri: str):
        from pipelines.app_registry import MlflowRegistry

        return MlflowRegistry(uri)

    def load_detector(self, ref: str, device: Any, tracking_uri: str | None = None):
        """A registered (models:/NAME@alias, models:/NAME/version) or logged (runs:/ID/model) model,
        from the store fcdd.plugins.tracking_uri names."""
        from pipelines.registry import load_detector
        from pipelines.store_check import check_store

        uri = plugins.tracking_uri(tracking_uri) or mlflow.get_tracking_uri()
        check_store(uri, create=False)  # reading a model never creates a store, nor waits minutes
        mlflow.set_tracking_uri(uri)
        try:
            return load_detector(ref).to(device)
        except ValueError as e:
            raise UsageError(f"{e} (tracking URI: {mlflow.get_tracking_uri()})") from e


plugin = MlflowPlugin()
