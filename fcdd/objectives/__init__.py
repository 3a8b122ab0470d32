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


def scoring_objective(meta: dict, upsampler: ReceptiveFieldUpsampler) -> Objective:
    """The objective that scores with a saved model (``Detector.meta``)."""
    name = objective_name(meta)
    if name not in OBJECTIVES:
        raise ModelError(
            f"the model was trained with the objective {name!r}, which this fcdd does not know "
            f"({', '.join(sorted(OBJECTIVES))})"
        )
    return OBJECTIVES[name].for_scoring(meta, upsampler)


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
]
