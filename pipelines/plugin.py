"""The plugin this package gives the ``fcdd`` command (fcdd.plugins): MLflow tracking for
``fcdd train`` and ``models:/`` / ``runs:/`` URIs for ``evaluate``, ``predict``, ``export``, ``info``.

Declared in pyproject.toml as the entry point ``mlflow = "pipelines.plugin:plugin"`` of the group
``fcdd.plugins``. It imports MLflow on load, so without the pipelines extra it does not load and the
command says what to install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow

from fcdd.config import Config, load_config
from fcdd.errors import UsageError


class MlflowPlugin:
    name = "mlflow"
    model_schemes = ("models:/", "runs:/")

    def tracker(self, cfg: Config):
        from pipelines.tracking import MlflowTracker

        return MlflowTracker()

    def load_detector(self, ref: str, device: Any, tracking_uri: str | None = None):
        """A registered (models:/NAME@alias, models:/NAME/version) or logged (runs:/ID/model) model.

        The store: ``tracking_uri``, else $MLFLOW_TRACKING_URI, else ``tracking.uri`` of
        ./params.yaml (where this project's runs went).
        """
        from pipelines.registry import load_detector

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri and Path("params.yaml").is_file():
            uri = load_config("params.yaml").tracking.uri
        if uri:
            mlflow.set_tracking_uri(uri)
        try:
            return load_detector(ref).to(device)
        except ValueError as e:
            raise UsageError(f"{e} (tracking URI: {mlflow.get_tracking_uri()})") from e


plugin = MlflowPlugin()
