"""The one typed configuration of a run, read from ``params.yaml``.

- ``sections.py``: the dataclasses (``Config`` and one per section); every key declared once with
  its default, its rules and its role (changes the result / runtime only / evaluation only /
  service), and ``validate``;
- ``keys.py``: what a declaration is (``setting``, ``Role``, the rules);
- ``loading.py``: ``load_config(path, overrides, preset)``, presets, overrides, ``explain_config``;
- ``presets.yaml``: the presets fcdd ships (a params file's ``presets:`` section adds or replaces);
- ``roles.py``: ``role_of(key)`` and ``settings_of_role(flat, role)`` for the run fingerprint, the
  configuration stored in model.pt and the evaluate stage.

Resolution order (later wins): dataclass defaults < presets named by ``preset`` (in order)
< the sections written in params.yaml < command-line overrides (``train.epochs=3``).
The CLI, the DVC stages and the Prefect flows all call :func:`load_config`.
"""

from fcdd.config.keys import Role
from fcdd.config.loading import (
    _build,
    _deep_update,
    config_layers,
    explain_config,
    load_config,
    packaged_presets,
    parse_override,
    preset_definitions,
)
from fcdd.config.roles import KEY_ROLES, role_of, settings_of_role
from fcdd.config.sections import (
    COMPILE_MODES,
    DATASETS,
    DEVICE_NAME,
    RESIZE_MODES,
    AnomalyConfig,
    Config,
    DataConfig,
    EvaluationConfig,
    FolderConfig,
    ModelConfig,
    OrchestrationConfig,
    TrackingConfig,
    TrainConfig,
    validate,
)
from fcdd.errors import ConfigError

__all__ = [
    "COMPILE_MODES",
    "DATASETS",
    "DEVICE_NAME",
    "KEY_ROLES",
    "RESIZE_MODES",
    "AnomalyConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "FolderConfig",
    "ModelConfig",
    "OrchestrationConfig",
    "Role",
    "TrackingConfig",
    "TrainConfig",
    "_build",
    "_deep_update",
    "config_layers",
    "explain_config",
    "load_config",
    "packaged_presets",
    "parse_override",
    "preset_definitions",
    "role_of",
    "settings_of_role",
    "validate",
]
