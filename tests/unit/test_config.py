"""fcdd.config.load_config: precedence, presets, validation messages, DVC-edited params files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fcdd.config import ConfigError, load_config, packaged_presets

REPO = Path(__file__).resolve().parents[2]
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


def test_presets_ship_with_the_package_and_a_params_file_replaces_them(tmp_path):
    """fcdd's presets work from any folder; a params file's own definition of a name replaces fcdd's."""
    bare = write_params(tmp_path, "preset: [folder, cpu_mvtec]\ndata: {dataset: folder, root: x}\n")
    cfg = load_config(bare)
    assert (cfg.model.net, cfg.train.epochs, cfg.quantile) == ("vgg11_bn", 25, 0.99)
    own = write_params(tmp_path, "preset: [folder]\npresets:\n  folder:\n    train: {epochs: 3}\n")
    cfg = load_config(own)
    assert cfg.train.epochs == 3 and cfg.model.net == "cnn28"  # the whole preset replaced, not merged
    assert load_config(None, preset=["mvtec", "cpu_mvtec"]).model.freeze == 0
    with pytest.raises(ConfigError, match=r"unknown preset 'nosuch'; known presets: cifar10, cpu, cpu_mvtec"):
        load_config(None, preset=["nosuch"])
    assert (
        "presets" not in yaml.safe_load(PARAMS.read_text())
        or not yaml.safe_load(PARAMS.read_text())["presets"]
    )


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
    # from random init, cpu_mvtec's recommended anomalies replace mvtec's confetti (docs/synthetic-anomalies.md)
    assert cfg.anomalies.kind == {"cutpaste": 0.5, "scar": 0.5}
    assert cfg.model.image_score == "max"  # ... and score images by their heatmap maximum
    assert cfg.quantile == 0.99 and cfg.sigma == 12.0
    full = load_config(PARAMS, preset=["mvtec"], overrides=["data.dataset=mvtec"])
    assert full.model.freeze == 15 and full.train.accumulate == 8 and full.anomalies.kind == "confetti"
    assert full.model.image_score == "mean"  # with ImageNet weights: the paper's protocol
    assert load_config(PARAMS, preset=["folder"]).model.image_score == "max"


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


BAD_VALUES = [
    ("evaluation.quantile=0", r"evaluation\.quantile: must be in \(0, 1\]"),
    ("evaluation.quantile=1.5", r"evaluation\.quantile: must be in \(0, 1\]"),
    ("evaluation.heatmap_count=0", r"evaluation\.heatmap_count: must be at least 1"),
    ("evaluation.aupro_max_fpr=0", r"evaluation\.aupro_max_fpr: must be in \(0, 1\]"),
    ("train.lr=.nan", r"train\.lr: must be a finite number, got nan"),
    ("train.lr=.inf", r"train\.lr: must be a finite number, got inf"),
    ("train.momentum=-0.1", r"train\.momentum: must be at least 0"),
    ("train.weight_decay=-1e-4", r"train\.weight_decay: must be at least 0"),
    ("train.betas=[0.9, 1.0]", r"train\.betas\[1\]: must be in \[0, 1\)"),
    ("train.betas=[0.9]", r"train\.betas: must be two numbers"),
    ("train.gamma=0", r"train\.gamma: must be positive"),
    ("train.threads=-1", r"train\.threads: must be at least 0"),
    ("data.num_workers=-2", r"data\.num_workers: must be at least 0"),
    ("train.seeds=[0, -1]", r"train\.seeds\[1\]: must be in \[0, 2\^63 - 1\)"),
    ("train.seeds=[3, 3]", r"train\.seeds: must be distinct \(repeated: \[3\]\)"),
    ("train.milestones=[0]", r"train\.milestones\[0\]: must be an epoch number"),
    ("train.device=gpu", r"train\.device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("data.train_limit=0", r"data\.train_limit: must be at least 1"),
    ("data.test_limit=-5", r"data\.test_limit: must be at least 1"),
    ("anomalies.oe_limit=0", r"anomalies\.oe_limit: must be at least 1"),
    ("anomalies.semi_k=0", r"anomalies\.semi_k: must be at least 1"),
    ("anomalies.probability=1.2", r"anomalies\.probability: must be in \[0, 1\]"),
    ("model.sigma=0", r"model\.sigma: must be positive"),
    ("model.freeze=-1", r"model\.freeze: must be at least 0"),
    ("model.image_score=p99", r"model\.image_score: 'p99' is not one of mean, max"),
    ("data.stored_size=0", r"data\.stored_size: must be at least 1"),
    ("data.folder.mask_threshold=255", r"data\.folder\.mask_threshold: must be in \[0, 254\]"),
    ("data.folder.test_ratio=.nan", r"data\.folder\.test_ratio: must be a finite number"),
    ("data.root=''", r"data\.root: must be a non-empty path"),
    ("evaluation.threshold=.nan", r"evaluation\.threshold: must be a finite number"),
    ("tracking.model_name=fcdd-{class}", r"tracking\.model_name: 'fcdd-\{class\}' is not a name template"),
    ("orchestration.deployment=nameonly", r"orchestration\.deployment: must be FLOW_NAME/DEPLOYMENT_NAME"),
    ("orchestration.retries=-1", r"orchestration\.retries: must be at least 0"),
    ("orchestration.max_parallel=0", r"orchestration\.max_parallel: must be at least 1"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_every_value_is_checked_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, overrides=[override])


def test_every_preset_passes_validation():
    for name in packaged_presets():
        load_config(PARAMS, preset=[name])


def test_exponent_without_a_dot_is_a_number():
    """PyYAML reads `1e-4` as a string; a float setting takes it as the number it means."""
    assert load_config(None, overrides=["train.lr=1e-4"]).train.lr == 1e-4
    assert load_config(None, overrides=["train.weight_decay=5E-6"]).train.weight_decay == 5e-6


def test_no_run_packs_unless_asked():
    """Packing is slower on a CPU (docs/benchmarks.md, bench_packed): the default, the main job and
    every preset fcdd ships train one run at a time; only an explicit orchestration.pack packs."""
    assert load_config(None).orchestration.pack == 1
    assert load_config(PARAMS).orchestration.pack == 1
    for name in packaged_presets():
        assert load_config(PARAMS, preset=[name]).orchestration.pack == 1, name
    assert load_config(PARAMS, overrides=["orchestration.pack=10"]).orchestration.pack == 10
