"""Each configuration key's role (changes the result / runtime only / evaluation only / service) is
declared once, with the key (fcdd/config/sections.py), and that one declaration decides the run
fingerprint, the configuration stored in model.pt and the evaluate stage's settings check."""

from __future__ import annotations

import dataclasses

import pytest

from fcdd.config import KEY_ROLES, Config, Role, load_config, role_of, settings_of_role
from fcdd.config import roles as roles_module
from fcdd.config.keys import walk_keys
from fcdd.fingerprint import LATER_KEYS_AT_OLD_BEHAVIOUR, fingerprint
from fcdd.stored_config import LATER_KEYS_AT_DEFAULT, config_to_store
from pipelines.stages.evaluate import _evaluation_settings

# What counted before the roles were declared with the keys (data, model, train, anomalies but
# their runtime knobs, plus evaluation.calibration); tests/unit/test_fingerprint_pinned.py pins the hashes.
RUNTIME = {
    "preset",
    "data.cache_dir",
    "data.download",
    "data.num_workers",
    "data.strict",
    "train.bn_recalibration",
    "train.channels_last",
    "train.checkpoint_keep",
    "train.checkpoint_uri",
    "train.compile",
    "train.device",
    "train.epochs",
    "train.output_dir",
    "train.progress",
    "train.threads",
}


def test_every_key_has_exactly_the_role_it_had():
    flat = Config().flat()
    assert set(KEY_ROLES) == set(flat)  # every key, nested data.folder.* included
    by_role = {role: {k for k, r in KEY_ROLES.items() if r is role} for role in Role}
    assert by_role[Role.RUNTIME] == RUNTIME
    service = ("tracking.", "registry.", "orchestration.")  # registry: the quality gate (issue 22)
    assert by_role[Role.SERVICE] == {k for k in flat if k.startswith(service)}
    assert by_role[Role.EVALUATION] == {k for k in flat if k.startswith("evaluation.")} - {
        "evaluation.calibration"
    }
    sections = ("data.", "model.", "train.", "anomalies.")
    assert by_role[Role.RESULT] == {k for k in flat if k.startswith(sections)} - RUNTIME | {
        "evaluation.calibration"
    }


def test_a_role_is_declared_next_to_its_key():
    """Per field or by the section's ROLE: nowhere else (no list of keys in another module)."""
    for name, _, f, owner in walk_keys(Config()):
        declared = f.metadata.get("role") or getattr(owner, "ROLE", None)
        assert declared is KEY_ROLES[name], name


def test_the_fingerprint_reads_the_declaration(monkeypatch):
    cfg = load_config(None)
    result_keys = {k for k, r in KEY_ROLES.items() if r is Role.RESULT}
    # data.resize, train.objective and model.image_score came later: left out at their old
    # behaviour ("fixed", "fcdd", "mean"), so older checkpoints resume
    assert set(LATER_KEYS_AT_OLD_BEHAVIOUR) == {"data.resize", "train.objective", "model.image_score"}
    assert set(fingerprint(cfg)["values"]) == result_keys - set(LATER_KEYS_AT_OLD_BEHAVIOUR)
    monkeypatch.setitem(roles_module.KEY_ROLES, "train.lr", Role.RUNTIME)
    assert "train.lr" not in fingerprint(cfg)["values"]
    monkeypatch.setitem(roles_module.KEY_ROLES, "evaluation.heatmap_count", Role.RESULT)
    assert fingerprint(cfg)["values"]["evaluation.heatmap_count"] == 16


def test_model_pt_stores_every_key_but_the_service_ones(monkeypatch):
    flat = load_config(None).flat()
    stored = config_to_store(flat)
    # and the later keys at their defaults (train.objective, evaluation.blur_heatmaps,
    # model.image_score): FCDD's
    # model.pt keeps its bytes
    later = set(LATER_KEYS_AT_DEFAULT)
    assert set(flat) - set(stored) == {k for k in flat if role_of(k) is Role.SERVICE} | later
    changed = load_config(
        None, ["train.objective=hsc", "evaluation.blur_heatmaps=true", "model.image_score=max"]
    ).flat()
    assert later <= set(config_to_store(changed))
    assert "preset" in stored and "train.device" in stored and "evaluation.quantile" in stored
    monkeypatch.setitem(roles_module.KEY_ROLES, "train.progress", Role.SERVICE)
    assert "train.progress" not in config_to_store(flat)


def test_the_evaluate_stage_compares_the_evaluation_keys():
    old = load_config(None).flat()
    same = load_config(
        None, ["train.threads=1", "tracking.enabled=false", "evaluation.calibration=0.2"]
    ).flat()
    assert _evaluation_settings(old) == _evaluation_settings(same)  # calibration: the fingerprint's
    new = load_config(None, ["evaluation.quantile=0.9"]).flat()
    assert _evaluation_settings(old) != _evaluation_settings(new)
    assert set(_evaluation_settings(old)) == set(settings_of_role(old, Role.EVALUATION))


def test_a_key_of_an_older_model_takes_its_sections_role():
    assert role_of("evaluation.some_old_key") is Role.EVALUATION
    assert role_of("tracking.gone") is Role.SERVICE and role_of("train.removed") is Role.RESULT
    assert role_of("nosection") is None


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(Config) if f.name != "preset"])
def test_each_section_declares_a_role(section):
    assert isinstance(getattr(Config(), section).ROLE, Role)
