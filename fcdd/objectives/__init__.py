"""Training objectives, pluggable (the interface: fcdd/objectives/base.py). FCDD is the default."""

from __future__ import annotations

from typing import Any

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.errors import ConfigError, ModelError
from fcdd.objectives.base import Objective
from fcdd.objectives.fcdd import FCDDObjective, choose_loss, fcdd_loss, pixel_loss

DEFAULT = "fcdd"
OBJECTIVES: dict[str, type[Objective]] = {FCDDObjective.name: FCDDObjective}


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
    "OBJECTIVES",
    "FCDDObjective",
    "Objective",
    "build_objective",
    "choose_loss",
    "fcdd_loss",
    "objective_class",
    "objective_name",
    "pixel_loss",
    "scoring_objective",
    "unknown_objective",
]
