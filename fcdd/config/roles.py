"""Each key's role, from its one declaration (fcdd/config/sections.py), for those who need it:
the run fingerprint (fcdd/fingerprint.py: RESULT keys), the configuration stored in model.pt
(fcdd/stored_config.py: all but SERVICE keys) and the DVC evaluate stage (EVALUATION keys)."""

from __future__ import annotations

from typing import Any

from fcdd.config.keys import Role, key_roles
from fcdd.config.sections import Config

KEY_ROLES: dict[str, Role] = key_roles(Config)
_SECTION_ROLES: dict[str, Role] = {n: v.ROLE for n, v in vars(Config()).items() if hasattr(v, "ROLE")}


def role_of(key: str) -> Role | None:
    """The role of ``section.key``; a key this version does not know (from an older model file)
    takes its section's role; None outside every section."""
    return KEY_ROLES.get(key) or _SECTION_ROLES.get(key.split(".", 1)[0])


def settings_of_role(flat: dict[str, Any], *roles: Role) -> dict[str, Any]:
    """The entries of a flat configuration (``Config.flat()``) whose keys have one of ``roles``."""
    return {k: v for k, v in flat.items() if role_of(k) in roles}
