"""The MLflow model registry for the inspection page (``fcdd app``), given by the MLflow plugin
(pipelines/plugin.py, fcdd.plugins; the page's side: fcdd/app/registry.py): list registered models
and aliases, load a ``models:/`` URI, describe a version. Read-only: the page never writes to the
registry."""

from __future__ import annotations

import re
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.registry import TAG_CALIBRATION, load_detector, local_store_path

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class MlflowRegistry:
    def __init__(self, uri: str):
        self.uri = uri
        store = local_store_path(uri)
        # A local store that does not exist yet is an empty registry: listing must not create it.
        self.missing = store is not None and not store.exists()
        self.client = None if self.missing else MlflowClient(tracking_uri=uri)

    def list_models(self) -> list[dict[str, Any]]:
        if self.client is None:
            return []
        out = []
        for rm in self.client.search_registered_models(max_results=500):
            versions = [str(v.version) for v in rm.latest_versions or []]
            out.append({"name": rm.name, "aliases": dict(rm.aliases or {}), "versions": versions})
        return sorted(out, key=lambda m: m["name"])

    def load(self, uri: str, device: str = "cpu"):
        self._version(uri)  # a one-line error for an unknown name, alias or version
        mlflow.set_tracking_uri(self.uri)
        return load_detector(uri, device=device)

    def describe(self, uri: str) -> dict[str, Any]:
        mv = self._version(uri)
        tags = dict(mv.tags or {})
        info: dict[str, Any] = {"version": str(mv.version), "run_id": mv.run_id}
        for key in ("image_auc", "pixel_auc"):
            value = tags.get(f"metric.{key}")
            info[key] = float(value) if value not in (None, "") else None
        info["calibration"] = tags.get(TAG_CALIBRATION)
        info["data_version"] = None
        if mv.run_id:
            try:
                info["data_version"] = self.client.get_run(mv.run_id).data.tags.get("fcdd.data_version")
            except MlflowException:
                pass
        return info

    def _version(self, uri: str):
        m = URI.match(uri)
        if not m:
            raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        if self.client is None:
            raise ValueError(f"{uri}: no registry at {self.uri} (the store does not exist)")
        try:
            if m["alias"]:
                return self.client.get_model_version_by_alias(m["name"], m["alias"])
            return self.client.get_model_version(m["name"], m["version"])
        except MlflowException as e:
            raise ValueError(f"{uri}: not in the registry at {self.uri} ({e.message})") from None
