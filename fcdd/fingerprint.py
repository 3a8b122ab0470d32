"""The settings a trained result depends on: a stable hash plus the values, stored in every
checkpoint and model file, so a run folder is resumed or reported only for the settings that made it.

Counted: every key whose role is "changes the result" (``Role.RESULT``, declared with the key in
fcdd/config/sections.py), the run's own class and seed in place of the job's lists. That is every
key of ``data``, ``model``, ``train`` and ``anomalies`` but their runtime knobs, which change where
or how fast a run goes, not what it learns (``train.epochs`` among them: raising it continues a run,
the learning-rate schedules do not depend on it; a checkpoint holding more epochs than asked is
refused separately), plus ``evaluation.calibration``, which holds out training images. Evaluation,
tracking and orchestration keys never count.
The functions work on plain dicts, whatever storage the checkpoint bytes come from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fcdd.config import KEY_ROLES, Config, Role, role_of
from fcdd.data.oe_pool import AUTO, FALLBACK, choose_oe_source

RUNTIME_KEYS = frozenset(k for k, role in KEY_ROLES.items() if role is Role.RUNTIME)  # never counted
# Keys added after checkpoints were written, left out at the value that behaves as before, so those
# checkpoints keep their fingerprint and resume.
LATER_KEYS_AT_OLD_BEHAVIOUR = {
    "data.resize": "fixed",
    "train.objective": "fcdd",
    "model.image_score": "mean",
}
SHOWN_KEYS = 4  # differing keys named in full in a mismatch message


def result_settings(cfg: Config, cls: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """``section.key`` -> value of every setting that changes the trained result."""
    values = {
        k: v
        for k, v in cfg.flat().items()
        if _counts(k) and LATER_KEYS_AT_OLD_BEHAVIOUR.get(k, _MISSING) != v
    }
    values.update(_resolved_oe_fallback(values))
    if cls is not None:
        values["data.classes"] = [str(cls)]
    if seed is not None:
        values["train.seeds"] = [int(seed)]
    return {k: _plain(v) for k, v in sorted(values.items())}


def _resolved_oe_fallback(values: dict[str, Any]) -> dict[str, Any]:
    """``anomalies.oe_source: auto`` draws from a local ImageNet-1k sample pool where one exists and
    from CIFAR-100 where none does (fcdd/data/oe_pool.py): a run whose ``auto`` fell back counts the
    fallback, so its checkpoint never resumes (or is resumed by) a run that drew from the pool, on
    another worker for instance. ``auto`` that finds the pool keeps the value it always had."""
    if values.get("anomalies.kind") != "oe" or str(values.get("anomalies.oe_source", "")).strip() != AUTO:
        return {}
    choice = choose_oe_source(AUTO, download=False)
    return {"anomalies.oe_source": f"{AUTO}: {choice.source}"} if choice.source == FALLBACK else {}


def _counts(key: str) -> bool:
    return role_of(key) is Role.RESULT


def fingerprint(cfg: Config, cls: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """{"hash": 16 hex digits, "values": result_settings(...)}; plain types, safe for weights_only."""
    values = result_settings(cfg, cls, seed)
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return {"hash": hashlib.sha256(text.encode()).hexdigest()[:16], "values": values}


def mismatch(recorded: Any, current: dict[str, Any]) -> str | None:
    """None when ``recorded`` (a stored fingerprint, or None) matches ``current``; else a short
    description of the differing keys, e.g. "train.lr 0.01 -> 0.5, anomalies.kind 'oe' -> 'none'"."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("values"), dict):
        return "it records no settings fingerprint (written by an older fcdd)"
    if recorded.get("hash") == current["hash"]:
        return None
    old, new = recorded["values"], current["values"]
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING))
    if not keys:
        return None  # same values, hashed by another version of this module
    parts = [f"{k} {_show(old.get(k, _MISSING))} -> {_show(new.get(k, _MISSING))}" for k in keys[:SHOWN_KEYS]]
    if len(keys) > SHOWN_KEYS:
        parts.append(f"and {len(keys) - SHOWN_KEYS} more: {', '.join(keys[SHOWN_KEYS:])}")
    return ", ".join(parts)


_MISSING = object()


def _show(v: Any) -> str:
    return "(unset)" if v is _MISSING else repr(v)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
