"""The values of ``anomalies.kind`` (docs/synthetic-anomalies.md): one kind, or a mix {kind: share}.

Kept free of torch so the configuration can validate against it; the generators live in
fcdd/data/synthetic.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from fcdd.errors import ConfigError

ANOMALY_KINDS = ("oe", "confetti", "perlin", "cutpaste", "scar", "semi", "none")
MIXABLE_KINDS = ("confetti", "perlin", "cutpaste", "scar")  # kinds a mix may draw from


def anomaly_shares(kind: str | Mapping[str, float]) -> dict[str, float]:
    """``anomalies.kind`` as {kind: share}: {"confetti": 1.0} for one kind, the mix itself for a mix
    (kinds with share 0 left out)."""
    if isinstance(kind, Mapping):
        return {k: float(v) for k, v in kind.items() if v}
    return {kind: 1.0}


def kind_text(kind: str | Mapping[str, float]) -> str:
    """'perlin', or 'perlin 0.5 + cutpaste 0.25 + scar 0.25' for a mix."""
    if isinstance(kind, Mapping):
        return " + ".join(f"{k} {v:g}" for k, v in kind.items() if v)
    return str(kind)


def check_anomaly_kind(where: str, kind: str | Mapping[str, float]) -> None:
    """One kind of ANOMALY_KINDS, or a mix of MIXABLE_KINDS whose shares in [0, 1] sum to 1."""
    if not isinstance(kind, Mapping):
        if kind not in ANOMALY_KINDS:
            raise ConfigError(
                f"{where}: {kind!r} is not one of {', '.join(ANOMALY_KINDS)} (or a mix of "
                f"{', '.join(MIXABLE_KINDS)} with shares, e.g. {{perlin: 0.5, cutpaste: 0.5}})"
            )
        return
    if not kind:
        raise ConfigError(f"{where}: an empty mix; give shares, e.g. {{perlin: 0.5, cutpaste: 0.5}}")
    for name, share in kind.items():
        if name not in MIXABLE_KINDS:
            raise ConfigError(
                f"{where}: {name!r} cannot be part of a mix; a mix takes {', '.join(MIXABLE_KINDS)}"
            )
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{where}.{name}: a share must be in [0, 1], got {share!r}")
    total = sum(kind.values())
    if abs(total - 1.0) > 1e-6:
        shares = ", ".join(f"{k} {v:g}" for k, v in kind.items())
        raise ConfigError(f"{where}: the shares of a mix must sum to 1, got {total:g} ({shares})")
