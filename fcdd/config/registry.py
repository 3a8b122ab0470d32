"""The ``registry`` section of params.yaml: the quality gate before a registered version becomes
``champion`` (pipelines/registry.py). Where the test set has the labels, its AUCs must reach these;
below them the version stays ``challenger``, with the reason as a tag and a warning (issue 22)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fcdd.config.keys import Role, must, setting


@dataclass
class RegistryConfig:
    ROLE: ClassVar[Role] = Role.SERVICE

    min_image_auc: float = setting(0.6, must(lambda v: 0.0 <= v <= 1.0, "in [0, 1]"))
    min_pixel_auc: float = setting(0.6, must(lambda v: 0.0 <= v <= 1.0, "in [0, 1]"))
