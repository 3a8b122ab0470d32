"""The models the page may load (the ones named at start, registry entries, files under a model
root: nothing else, so the picker cannot read arbitrary files) and a small cache of loaded ones."""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcdd import calibration as conformal
from fcdd.app.registry import Registry
from fcdd.decisions import alpha_warning
from fcdd.errors import FCDDError, UsageError
from fcdd.export import META_FILE, find_export
from fcdd.overlay import model_scale

# Slider positions of the false-alarm level alpha (the p-value rule is exact at each).
ALPHA_STEPS = (
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.007,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.07,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
)
MAX_LISTED = 200  # model files listed from the model root
MAX_WALKED = 20_000  # folders visited while listing it


class CatalogError(UsageError):
    """A model the page does not offer, or one that cannot be loaded; the message says which."""


@dataclass
class LoadedModel:
    ref: str
    detector: Any  # fcdd.detector.Detector or fcdd.backends.ExportedDetector
    card: dict[str, Any]  # what the page shows about it

    @property
    def calibration(self) -> dict | None:
        return self.detector.meta.get("calibration") or None

    @property
    def scale(self):
        """The model's fixed colour scale (fcdd.overlay.model_scale), or None."""
        return model_scale(self.detector.meta)


def kind_of(ref: str) -> str:
    if ref.startswith("models:/"):
        return "registry"
    return "export" if find_export(ref) is not None else "file"


class ModelCatalog:
    def __init__(
        self,
        startup: list[str],
        root: Path | None = None,
        registry: Registry | None = None,
        device: str = "auto",
        cache_size: int = 4,
    ):
        self.startup, self.registry, self.device = list(startup), registry, device
        self.root = root.resolve() if root else None
        self.cache_size = cache_size
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what the picker lists
    def entries(self) -> dict[str, Any]:
        models = [{"ref": r, "label": r, "kind": kind_of(r)} for r in self.startup]
        registry: dict[str, Any] | None = None
        if self.registry is not None:
            registry = {"uri": self.registry.uri, "note": None}
            try:
                listed = self.registry.list_models()
            except Exception as e:  # noqa: BLE001 - a registry that cannot be read is shown, not fatal
                listed, registry["note"] = [], f"cannot read the registry: {_one_line(e)}"
            if getattr(self.registry, "missing", False):
                registry["note"] = f"no registry at {self.registry.uri} yet"
            for m in listed:
                for alias, version in sorted(m["aliases"].items()):
                    ref = f"models:/{m['name']}@{alias}"
                    models.append({"ref": ref, "label": f"{ref} (v{version})", "kind": "registry"})
        for ref in self._under_root():
            if ref not in self.startup:
                models.append({"ref": ref, "label": ref, "kind": kind_of(ref)})
        return {"models": models, "registry": registry, "root": str(self.root) if self.root else None}

    def _under_root(self) -> list[str]:
        if self.root is None:
            return []
        found: list[str] = []
        for walked, (folder, dirs, files) in enumerate(os.walk(self.root)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if META_FILE in files:
                found.append(folder)
                dirs[:] = []
            found += [
                os.path.join(folder, f)
                for f in sorted(files)
                if f.endswith(".pt") and not f.startswith("checkpoint")
            ]
            if len(found) >= MAX_LISTED or walked >= MAX_WALKED:
                break
        return found[:MAX_LISTED]

    # ------------------------------------------------------------------ loading
    def check(self, ref: str) -> str:
        """``ref`` if the page offers it, else a CatalogError saying what it offers."""
        if ref in self.startup:
            return ref
        if ref.startswith("models:/"):
            if self.registry is None:
                raise CatalogError(f"{ref}: no model registry is configured (start with --tracking-uri)")
            return ref
        if self.root is not None and ref and Path(ref).resolve().is_relative_to(self.root):
            return ref
        raise CatalogError(
            f"{ref}: not offered here (only the models given at start, registry entries, "
            "or paths under --models-root)"
        )

    def get(self, ref: str) -> LoadedModel:
        ref = self.check(ref)
        with self._lock:  # one load at a time: a second request for the same model waits for it
            if ref in self._cache:
                self._cache.move_to_end(ref)
                return self._cache[ref]
            loaded = self._load(ref)
            self._cache[ref] = loaded
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return loaded

    def _load(self, ref: str) -> LoadedModel:
        kind, info = kind_of(ref), {}
        try:
            if kind == "registry":
                from fcdd.training import resolve_device

                det = self.registry.load(ref, str(resolve_device(self.device)))
                info = self.registry.describe(ref)
            elif kind == "export":
                from fcdd.backends import ExportedDetector

                det = ExportedDetector.load(ref)
            else:
                from fcdd.detector import Detector
                from fcdd.training import resolve_device

                det = Detector.load(ref, device=resolve_device(self.device))
        except FCDDError as e:
            raise CatalogError(_one_line(e)) from e
        except (ValueError, OSError) as e:
            raise CatalogError(f"{ref}: cannot load ({_one_line(e)})") from e
        return LoadedModel(ref, det, model_card(ref, kind, det, info))


def model_card(ref: str, kind: str, det: Any, registry_info: dict[str, Any]) -> dict[str, Any]:
    """Dataset, net, metrics, calibration and the alpha table of one model, for the page."""
    m, metrics = det.meta, det.meta.get("metrics") or {}
    cal = m.get("calibration") or None
    backend = getattr(det, "backend_name", None) or f"PyTorch ({det.device})"
    card = {
        "ref": ref,
        "kind": kind,
        "backend": backend,
        "dataset": m.get("dataset"),
        "class": m.get("class"),
        "seed": m.get("seed"),
        "net": (m.get("net") or {}).get("net"),
        "input_size": det.preprocess.get("input_size"),
        "image_auc": metrics.get("image_auc"),
        "pixel_auc": metrics.get("pixel_auc"),
        "calibration_n": int(cal["n"]) if cal else 0,
        "min_alpha": conformal.min_alpha(cal) if cal else None,
        "data_version": None,
        "version": None,
        "quantile": float(m.get("quantile", 0.97)),
        "alphas": alpha_table(cal),
        "scale": _scale(m),  # the model's fixed colour scale, as fcdd predict's default: [low, span, source]
    }
    card.update({k: v for k, v in registry_info.items() if v is not None and k != "run_id"})
    return card


def alpha_table(cal: dict | None) -> list[dict[str, Any]]:
    """Per slider step: the image and pixel thresholds (None: nothing can be flagged) and the
    false-alarm rate a good part has under exchangeability, floor(alpha (n+1)) / (n+1) <= alpha."""
    if not cal:
        return []
    n, rows = int(cal["n"]), []
    for a in ALPHA_STEPS:
        image, pixel = conformal.image_threshold(cal, a), conformal.pixel_threshold(cal, a)
        rows.append(
            {
                "alpha": a,
                "image_threshold": image if math.isfinite(image) else None,
                "pixel_threshold": pixel if math.isfinite(pixel) else None,
                "far_bound": math.floor(a * (n + 1)) / (n + 1),
                "warning": alpha_warning(cal, a),  # alpha below 1/(n+1), or too few images to hold it
            }
        )
    return rows


def _scale(meta: dict) -> list | None:
    scale = model_scale(meta)
    return None if scale is None else [scale.low, scale.span, scale.source]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
