"""Training objectives, pluggable (the interface: fcdd/objectives/base.py). FCDD is the default."""

from __future__ import annotations

from typing import Any

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.errors import ConfigError, ModelError
from fcdd.objectives.ae import AEObjective
from fcdd.objectives.base import Objective
from fcdd.objectives.fcdd import FCDDObjective, choose_loss, fcdd_loss, pixel_loss
from fcdd.objectives.hsc import HSCObjective

DEFAULT = "fcdd"
# The baselines (docs/baselines.md): the hypersphere classifier and the autoencoder.
OBJECTIVES: dict[str, type[Objective]] = {
    FCDDObjective.name: FCDDObjective,
    HSCObjective.name: HSCObjective,
    AEObjective.name: AEObjective,
}


def objective_name(source: Any) -> str:
    """The objective a configuration (``train.objective``) or a model file's meta ("objective")
    names; neither holding one means FCDD (everything written before objectives were pluggable)."""
    if isinstance(source, dict):
        return str(source.get("objective", DEFAULT))
    return str(getattr(source.train, "objective", DEFAULT))


def objective_class(name: str) -> type[Objective]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(
            f"train.objective: {name!r} is not one of {', '.join(sorted(OBJECTIVES))}"
        ) from None


def build_objective(cfg: Any, upsampler: ReceptiveFieldUpsampler | None = None) -> Objective:
    """The training objective ``cfg`` asks for, with what it needs (FCDD: the upsampler)."""
    return objective_class(objective_name(cfg)).from_config(cfg, upsampler)


def net_variant(source: Any) -> str:
    """The net the objective of a configuration or model meta trains (fcdd.models.build_net's
    ``variant``): its ``net_variant``, else FCDD's fully convolutional net."""
    return getattr(OBJECTIVES.get(objective_name(source)), "net_variant", "fcdd")


def training_config(cfg: Any) -> Any:
    """The configuration a run builds its training data with: an objective that trains on nominal
    images only (the autoencoder) draws no synthetic anomalies, whatever ``anomalies.kind`` says
    (one line says so); everything else unchanged."""
    name = objective_name(cfg)
    if not getattr(OBJECTIVES.get(name), "nominal_only", False) or cfg.anomalies.kind == "none":
        return cfg
    import copy
    import sys

    print(
        f"train.objective {name}: trains on nominal images only; anomalies.kind {cfg.anomalies.kind} is not drawn",
        file=sys.stderr,
        flush=True,
    )
    cfg = copy.deepcopy(cfg)
    cfg.anomalies.kind = "none"
    return cfg


def unknown_objective(meta: dict) -> str | None:
    """Why a saved model's objective cannot score here, or None when it can."""
    name = objective_name(meta)
    if name in OBJECTIVES:
        return None
    return f"the model was trained with the objective {name!r}, which this fcdd does not know ({', '.join(sorted(OBJECTIVES))})"


def scoring_objective(meta: dict, upsampler: ReceptiveFieldUpsampler | None) -> Objective:
    """The objective that scores with a saved model (``Detector.meta``)."""
    unknown = unknown_objective(meta)
    if unknown:
        raise ModelError(unknown)
    return OBJECTIVES[objective_name(meta)].for_scoring(meta, upsampler)


__all__ = [
    "DEFAULT",
    "AEObjective",
    "HSCObjective",
    "OBJECTIVES",
    "FCDDObjective",
    "Objective",
    "build_objective",
    "choose_loss",
    "fcdd_loss",
    "objective_class",
    "net_variant",
    "objective_name",
    "pixel_loss",
    "scoring_objective",
    "training_config",
    "unknown_objective",
]
