"""Shared checkpoints (train.checkpoint_uri): a run cut on one worker resumes exactly on another."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from fcdd.checkpoint_store import CheckpointStore, run_key
from fcdd.config import Config, ConfigError, validate
from fcdd.training import CHECKPOINT, train
from tests.unit.test_engine import Interrupt, SquaresOnNoise, StopAfter, tiny_cfg, tiny_model


def _worker_cfg(tmp_path, worker: str, uri: str, **train_cfg):
    cfg = tiny_cfg(epochs=3, checkpoint_uri=uri, **train_cfg)
    cfg.train.output_dir = str(tmp_path / worker / "runs")  # each worker has its own folder
    return cfg


def _run_dir(cfg) -> Path:
    return Path(cfg.train.output_dir) / "toy" / "squares" / "seed3"


@pytest.mark.parametrize("scheme", ["path", "memory"])
def test_run_cut_on_one_worker_resumes_on_another(tmp_path, scheme):
    uri = str(tmp_path / "shared") if scheme == "path" else f"memory://fcdd-{uuid.uuid4().hex}"
    data = SquaresOnNoise(20)
    whole = tiny_model()
    expected = train(whole, data, tiny_cfg(epochs=3), "cpu", tmp_path / "whole")

    first = _worker_cfg(tmp_path, "w1", uri)
    with pytest.raises(Interrupt):
        train(tiny_model(), data, first, "cpu", _run_dir(first), callbacks=StopAfter(epoch=1))

    second = _worker_cfg(tmp_path, "w2", uri)
    assert not (_run_dir(second) / CHECKPOINT).exists()  # a fresh worker: nothing local
    model = tiny_model(seed=99)
    resumed = train(model, data, second, "cpu", _run_dir(second))

    assert resumed["resumed_from_epoch"] == 1
    for key, value in whole.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in expected["history"]]
    store = CheckpointStore(uri, "toy/squares/seed3", keep=2)
    assert store.epochs() == [2, 3]  # pruned to the newest two
    assert all(not str(n).endswith(".tmp") for n in store.fs.ls(store.folder, detail=False))


def test_newer_local_checkpoint_wins_and_unreadable_shared_one_is_skipped(tmp_path):
    uri = str(tmp_path / "shared")
    data = SquaresOnNoise(12)
    cfg = _worker_cfg(tmp_path, "w1", uri, checkpoint_keep=3)
    with pytest.raises(Interrupt):
        train(tiny_model(), data, cfg, "cpu", _run_dir(cfg), callbacks=StopAfter(epoch=2))
    store = CheckpointStore(uri, "toy/squares/seed3", keep=3)
    assert store.epochs() == [1, 2]
    # A dead worker's torn upload of epoch 2 (on a store without atomic rename): epoch 1 is used.
    (tmp_path / "shared" / "toy" / "squares" / "seed3" / "checkpoint-000002.pt").write_bytes(b"torn")
    local = tmp_path / "w3" / CHECKPOINT
    local.parent.mkdir(parents=True)
    assert store.fetch(local, None) == 1
    assert int(torch.load(local, weights_only=True)["epoch"]) == 1
    # The local file of w1 (epoch 2) is newer than anything readable in the store: kept as it is.
    before = (_run_dir(cfg) / CHECKPOINT).read_bytes()
    assert store.fetch(_run_dir(cfg) / CHECKPOINT, 2) is None
    assert (_run_dir(cfg) / CHECKPOINT).read_bytes() == before


def test_run_key_is_the_same_on_every_worker(tmp_path):
    assert run_key(tmp_path / "a" / "runs" / "mnist" / "zero" / "seed0", str(tmp_path / "a" / "runs")) == (
        "mnist/zero/seed0"
    )
    assert run_key(tmp_path / "x" / "y" / "z", "elsewhere") == "x/y/z"


def test_unusable_checkpoint_uri_is_a_one_line_config_error():
    cfg = Config()
    cfg.train.checkpoint_uri = "nosuchproto://bucket/ckpt"
    with pytest.raises(ConfigError, match=r"train.checkpoint_uri 'nosuchproto://bucket/ckpt'"):
        validate(cfg)
    cfg.train.checkpoint_uri = "  "
    with pytest.raises(ConfigError, match="train.checkpoint_uri"):
        validate(cfg)
    cfg.train.checkpoint_uri, cfg.train.checkpoint_keep = None, 0
    with pytest.raises(ConfigError, match="train.checkpoint_keep: must be at least 1"):
        validate(cfg)
