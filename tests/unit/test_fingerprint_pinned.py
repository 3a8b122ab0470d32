"""The run fingerprint of a configuration never changes by accident: existing checkpoints must keep
resuming and existing model.pt files must keep matching their settings.

The hashes below were computed on commit af5f9d0, before the configuration's key roles were
declared in one place; any change to which keys count, how values are written or how they are
hashed shows up here.

Re-pinned once on purpose (issue 22): the default ``anomalies.oe_source`` became ``auto`` (no path of
one machine in params.yaml), and the OE pool now leaves out the ImageNet instances of the test
classes, so a checkpoint of the earlier settings draws another OE set and must not resume
silently: it is refused with the differing key named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fcdd.config import load_config
from fcdd.fingerprint import fingerprint

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
MIX = "{perlin: 0.5, cutpaste: 0.25, scar: 0.25}"  # the random-init presets' anomalies until 2026-12-06

# (what, params file?, overrides, presets, class, seed, hash, number of counted keys)
PINNED = [
    ("defaults", False, [], None, None, None, "b7618d52f12a5c2f", 42),
    ("main job", True, [], None, "t-shirt-top", 0, "ec46ffb3dd992282", 42),
    # confetti and the mean image score: what these presets trained when the hashes were computed
    # (checkpoints of then resume)
    (
        "mvtec cpu",
        True,
        ["data.dataset=mvtec", "anomalies.kind=confetti", "model.image_score=mean"],
        ["mvtec", "cpu_mvtec"],
        "bottle",
        1,
        "a1643ae7f265ee2a",
        42,
    ),
    # the presets' earlier synthetic-anomaly mix: each share is a counted key (anomalies.kind.perlin,
    # ...); with the mean image score, as the presets trained it before scoring by the heatmap maximum
    (
        "mvtec cpu mix",
        True,
        ["data.dataset=mvtec", f"anomalies.kind={MIX}", "model.image_score=mean"],
        ["mvtec", "cpu_mvtec"],
        "bottle",
        1,
        "46d88b08d9540a84",
        44,
    ),
    # the mix scored by the heatmap maximum: model.image_score counts when not the mean
    (
        "mvtec cpu mix max",
        True,
        ["data.dataset=mvtec", f"anomalies.kind={MIX}"],
        ["mvtec", "cpu_mvtec"],
        "bottle",
        1,
        "e703a2854e54fac9",
        45,
    ),
    # the presets as they are: CutPaste patches and scars, the heatmap maximum
    (
        "mvtec cpu cutpaste max",
        True,
        ["data.dataset=mvtec"],
        ["mvtec", "cpu_mvtec"],
        "bottle",
        1,
        "c4dbaacb915767d5",
        44,
    ),
    (
        "folder keep_aspect",
        True,
        [
            "anomalies.kind=confetti",
            "model.image_score=mean",
            "data.dataset=folder",
            "data.resize=keep_aspect",
            "model.input_size=224",
            "data.folder.nominal=[good]",
        ],
        ["folder"],
        "folder",
        0,
        "e382ab49796454b5",
        43,
    ),
    (
        "cifar10 calibrated",
        True,
        ["data.dataset=cifar10", "evaluation.calibration=0.2", "train.amp=false", "data.train_limit=100"],
        ["cifar10", "cpu"],
        "cat",
        3,
        "e351918bc91fff52",
        42,
    ),
    (
        "imagenet30 rectangle",
        True,
        ["data.dataset=imagenet30", "model.input_size=[224, 320]", "train.seeds=[4, 5]"],
        ["imagenet30"],
        "acorn",
        5,
        "b59c53568aea178c",
        42,
    ),
    (
        "main job, runtime, evaluation and service keys changed",
        True,
        [
            "train.epochs=9",
            "train.threads=1",
            "train.device=cpu",
            "data.num_workers=0",
            "data.cache_dir=elsewhere",
            "train.compile=default",
            "train.bn_recalibration=nominal",
            "evaluation.quantile=0.5",
            "evaluation.heatmap_count=3",
            "tracking.enabled=false",
            "orchestration.pack=2",
            "train.checkpoint_keep=5",
            "train.output_dir=other",
            "train.progress=false",
            "data.strict=true",
            "data.download=true",
            "train.channels_last=false",
        ],
        None,
        "t-shirt-top",
        0,
        "ec46ffb3dd992282",  # the main job's: none of these keys changes what a run learns
        42,
    ),
]


@pytest.fixture()
def beside_a_local_oe_pool(tmp_path, monkeypatch):
    """``oe_source: auto`` counts as it always did where a local ImageNet-1k pool exists (the pins'
    machine): the same hashes wherever the tests run."""
    (tmp_path / "data" / "imagenet1k_samples").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("case", PINNED, ids=[c[0] for c in PINNED])
def test_fingerprint_hash_is_the_recorded_one(case, beside_a_local_oe_pool):
    _, use_params, overrides, presets, cls, seed, expected, counted = case
    cfg = load_config(PARAMS if use_params else None, overrides, presets)
    got = fingerprint(cfg, cls, seed)
    assert (got["hash"], len(got["values"])) == (expected, counted)


def test_a_result_key_changes_the_hash(beside_a_local_oe_pool):
    """The pins are not vacuous: one key that changes what a run learns gives another hash."""
    base = fingerprint(load_config(PARAMS), "t-shirt-top", 0)["hash"]
    for override in (
        "train.lr=0.02",
        "anomalies.kind=confetti",
        "evaluation.calibration=0.3",
        "data.strict=true",
    ):
        changed = fingerprint(load_config(PARAMS, [override]), "t-shirt-top", 0)["hash"]
        assert (changed != base) == (override != "data.strict=true"), override


def test_an_auto_oe_source_that_fell_back_to_cifar100_counts_the_fallback(tmp_path, monkeypatch):
    """A checkpoint of a run whose ``auto`` found the ImageNet-1k pool must not resume on a worker
    where ``auto`` falls back to CIFAR-100 (another OE set), nor the other way round; runs that draw
    no OE images do not depend on where the pool is."""
    main = load_config(PARAMS)
    confetti = load_config(PARAMS, ["anomalies.kind=confetti"])
    explicit = load_config(PARAMS, ["anomalies.oe_source=some/pool"])
    (tmp_path / "with" / "data" / "imagenet1k_samples").mkdir(parents=True)
    (tmp_path / "without").mkdir()
    seen = {}
    for where in ("with", "without"):
        monkeypatch.chdir(tmp_path / where)
        seen[where] = [fingerprint(c, "t-shirt-top", 0) for c in (main, confetti, explicit)]
    assert seen["with"][0]["hash"] == "ec46ffb3dd992282"  # the main job's pin
    assert seen["without"][0]["hash"] != seen["with"][0]["hash"]
    assert seen["without"][0]["values"]["anomalies.oe_source"] == "auto: cifar100:data/cifar100"
    assert [f["hash"] for f in seen["with"][1:]] == [f["hash"] for f in seen["without"][1:]]
