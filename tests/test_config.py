"""fcdd.config.load_config: precedence, presets, validation messages, DVC-edited params files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fcdd.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


LAYERED = """
preset: [first, second]
train: {lr: 0.3}
presets:
  first:
    train: {epochs: 10, lr: 0.1, batch_size: 7}
    model: {net: cnn32, input_size: 32}
  second:
    train: {epochs: 20}
"""


def test_precedence_defaults_then_presets_then_sections_then_overrides(tmp_path):
    cfg = load_config(write_params(tmp_path, LAYERED), overrides=["train.lr=0.5"])
    assert cfg.train.momentum == 0.9  # untouched default
    assert cfg.train.batch_size == 7  # first preset
    assert cfg.train.epochs == 20  # the later preset wins over the earlier one
    assert cfg.model.net == "cnn32" and cfg.model.input_size == 32
    assert cfg.train.lr == 0.5  # override beats section beats preset
    assert load_config(write_params(tmp_path, LAYERED)).train.lr == 0.3
    assert cfg.preset == ["first", "second"]


def test_preset_argument_replaces_the_file_choice(tmp_path):
    cfg = load_config(write_params(tmp_path, LAYERED), preset="second")
    assert cfg.train.epochs == 20 and cfg.train.batch_size == 128  # `first` not applied
    assert cfg.preset == ["second"]


def test_repository_params_resolve_to_the_main_job():
    cfg = load_config(PARAMS)
    assert cfg.data.dataset == "fmnist" and cfg.model.net == "cnn28"
    assert cfg.model.input_size == 28
    assert cfg.train.optimizer == "sgd" and cfg.train.gamma == 0.4  # the cpu profile's fast decay
    assert load_config(PARAMS, preset=["fmnist"]).train.gamma == 0.98  # the paper's, without it
    assert cfg.quantile == 0.85 and cfg.sigma == 1.2
    assert cfg.anomalies.kind == "oe"


def test_preset_combination_mvtec_then_cpu_profile():
    cfg = load_config(PARAMS, preset=["mvtec", "cpu_mvtec"], overrides=["data.dataset=mvtec"])
    assert cfg.model.net == "vgg11_bn"
    assert cfg.model.pretrained is False and cfg.model.freeze == 0  # cpu_mvtec overrides mvtec
    assert cfg.anomalies.kind == "confetti" and cfg.quantile == 0.99 and cfg.sigma == 12.0
    full = load_config(PARAMS, preset=["mvtec"], overrides=["data.dataset=mvtec"])
    assert full.model.freeze == 15 and full.train.accumulate == 8


def test_unknown_key_names_the_key_and_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key train\.epoch\b.*epochs"):
        load_config(write_params(tmp_path, "train: {epoch: 3}\n"))
    with pytest.raises(ConfigError, match=r"unknown key trian"):
        load_config(write_params(tmp_path, "trian: {epochs: 3}\n"))
    with pytest.raises(ConfigError, match=r"unknown key data\.folder\.nominals"):
        load_config(None, overrides=["data.folder.nominals=[a]"])


def test_wrong_type_names_the_key_and_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer, got 'three'"):
        load_config(write_params(tmp_path, "train: {epochs: three}\n"))
    with pytest.raises(ConfigError, match=r"train\.amp: expected true or false"):
        load_config(None, overrides=["train.amp=5"])
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number"):
        load_config(None, overrides=["train.lr=fast"])


def test_bad_values_and_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.dataset: 'mnist' is not one of"):
        load_config(None, overrides=["data.dataset=mnist"])
    with pytest.raises(ConfigError, match=r"unknown preset 'gpu'"):
        load_config(PARAMS, preset="gpu")
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such configuration file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"override 'train\.epochs': expected section\.key=value"):
        load_config(None, overrides=["train.epochs"])


def test_params_edited_by_dvc_exp_run_set_param(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml through Hydra; the result must still load."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text())
    hydra.apply_overrides(
        path,
        ["train.epochs=1", "evaluation.quantile=0.9", "data.classes=['0','3']", "+anomalies.oe_limit=64"],
    )
    edited = yaml.safe_load(path.read_text())
    assert edited["train"]["epochs"] == 1 and "presets" in edited  # the file kept its structure
    cfg = load_config(path)
    assert cfg.train.epochs == 1 and cfg.quantile == 0.9
    assert cfg.data.classes == ["0", "3"] and cfg.anomalies.oe_limit == 64
    assert cfg.train.batch_size == 128  # presets still apply underneath
