"""The objective interface: FCDD through it, and another objective plugged in without touching the loop."""

from __future__ import annotations

import pytest
import torch

import fcdd.objectives as objectives
from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.config import Config, ConfigError
from fcdd.detector import Detector, DetectorError
from fcdd.errors import TrainingError
from fcdd.objectives import FCDDObjective, Objective, build_objective, fcdd_loss, pixel_loss
from fcdd.scoring import AnomalyScores, anomaly_scores, image_score, pseudo_huber
from fcdd.training import CHECKPOINT, load_checkpoint, train, train_packed
from tests.shared_fixtures import tiny_detector
from tests.unit.test_engine import SquaresOnNoise, tiny_cfg, tiny_model

torch.set_num_threads(1)


def _batch(n: int = 6, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    items = [SquaresOnNoise(n, size=size)[i] for i in range(n)]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in ("image", "label", "mask")}


def test_fcdd_is_the_default_and_reads_train_loss():
    cfg = Config()
    cfg.data.dataset, cfg.anomalies.kind = "fmnist", "oe"
    image = build_objective(cfg)
    assert isinstance(image, FCDDObjective) and image.loss_kind == "image" and image.keys == ("label",)
    cfg.data.dataset = "mvtec"  # auto: pixel-wise where training data carry maps
    model = tiny_model()
    pixel = build_objective(cfg, ReceptiveFieldUpsampler.for_model(model, 1.2))
    assert pixel.loss_kind == "pixel" and pixel.keys == ("mask",)
    with pytest.raises(TrainingError, match="upsampler"):
        build_objective(cfg)
    cfg.train.objective = "hsc-not-here"  # a key a later configuration adds
    with pytest.raises(ConfigError, match="train.objective: 'hsc-not-here' is not one of ae, fcdd, hsc"):
        build_objective(cfg)


def test_fcdd_objective_loss_is_the_fcdd_loss_of_the_raw_output():
    model = tiny_model()
    up = ReceptiveFieldUpsampler.for_model(model, 1.2)
    batch = _batch()
    out = model(batch["image"])
    assert torch.equal(FCDDObjective("image").loss(out, batch), fcdd_loss(out, batch["label"]))
    expected = pixel_loss(up(pseudo_huber(out.float())), batch["mask"])
    assert torch.equal(FCDDObjective("pixel", up).loss(out, batch), expected)


@pytest.mark.parametrize("kind", ["image", "pixel"])
def test_packed_loss_equals_each_nets_loss(kind):
    """The pixel-wise objective upsamples K nets' maps in one call; the result is each net's loss."""
    models = [tiny_model(s) for s in (1, 2, 3)]
    up = ReceptiveFieldUpsampler.for_model(models[0], 1.2)
    objective = FCDDObjective(kind, up)
    batches = [_batch(seed=s) for s in range(3)]
    out = torch.stack([m(b["image"]) for m, b in zip(models, batches, strict=True)])
    stacked = {k: torch.stack([b[k] for b in batches]) for k in batches[0]}
    separate = torch.stack([objective.loss(out[k], batches[k]) for k in range(3)])
    torch.testing.assert_close(objective.packed_loss(out, stacked), separate, rtol=1e-6, atol=0)


def test_scoring_forms_agree():
    out = torch.randn(4, 1, 5, 7) * torch.tensor([1e-6, 1.0, 1e3, 1e20]).view(4, 1, 1, 1)
    torch.testing.assert_close(pseudo_huber(out, exportable=True), pseudo_huber(out), rtol=1e-6, atol=0)
    a = pseudo_huber(out)
    assert torch.equal(image_score(a), a.mean(dim=(1, 2, 3)))
    up = ReceptiveFieldUpsampler(tiny_model().receptive_field, 1.2, 16)
    scores = anomaly_scores(torch.randn(2, 1, 2, 2), up)
    assert scores.pixel.shape == (2, 1, 16, 16) and scores.image.shape == (2,)


class MeanSquare(Objective):
    """A toy objective on the interface: the mean squared output of the nominal images only (as an
    autoencoder trains), scored by the output's channel mean. It records the batch keys it saw."""

    name = "mean-square"
    loss_kind = "nominal-mean-square"
    keys = ("label",)
    seen: set[str] = set()

    def loss(self, out, batch):
        MeanSquare.seen |= set(batch)
        nominal = (batch["label"] == 0).float()
        per_sample = out.float().pow(2).flatten(1).mean(1)
        return (per_sample * nominal).sum() / nominal.sum().clamp_min(1)

    @torch.no_grad()
    def score(self, model, x):
        out = model(x)
        heat = torch.nn.functional.interpolate(out.mean(1, keepdim=True), size=x.shape[-2:])
        return AnomalyScores(amap=None, image=image_score(out), pixel=heat)

    @classmethod
    def from_config(cls, cfg, upsampler=None):
        return cls()

    @classmethod
    def for_scoring(cls, meta, upsampler=None):
        return cls()


@pytest.fixture
def mean_square(monkeypatch):
    monkeypatch.setitem(objectives.OBJECTIVES, MeanSquare.name, MeanSquare)
    MeanSquare.seen = set()
    cfg = tiny_cfg(epochs=2)
    cfg.train.objective = MeanSquare.name
    return cfg


def test_another_objective_trains_through_the_same_loop(mean_square, tmp_path):
    model = tiny_model()
    before = model(SquaresOnNoise(8, fixed=True)[0]["image"][None]).pow(2).mean().item()
    result = train(model, SquaresOnNoise(32), mean_square, "cpu", tmp_path / "one")
    assert MeanSquare.seen == {"image", "label"}  # "mask" was not collated
    assert result["loss_kind"] == "nominal-mean-square"
    assert load_checkpoint(tmp_path / "one" / CHECKPOINT)["loss_kind"] == "nominal-mean-square"
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    after = model(SquaresOnNoise(8, fixed=True)[0]["image"][None]).pow(2).mean().item()
    assert after < before

    packed = train_packed(
        [tiny_model(s) for s in (3, 4)],
        [SquaresOnNoise(16), SquaresOnNoise(16)],
        mean_square,
        "cpu",
        [tmp_path / "p0", tmp_path / "p1"],
        [3, 4],
    )
    assert [r["loss_kind"] for r in packed] == ["nominal-mean-square"] * 2


def test_detector_scores_through_the_objective_its_file_names(mean_square, tmp_path):
    det = tiny_detector()
    assert isinstance(det.objective, FCDDObjective)  # files without "objective" are FCDD's
    det.meta["objective"] = MeanSquare.name
    x = torch.rand(2, 1, 28, 28)
    scores, maps, heat = det.score_tensor(x)
    torch.testing.assert_close(scores, image_score(det.model(x)).detach())
    assert heat.shape == (2, 28, 28)

    det.meta["objective"] = "unknown"
    det.save(tmp_path / "model.pt")
    with pytest.raises(DetectorError, match="objective 'unknown', which this fcdd does not know"):
        Detector.load(tmp_path / "model.pt")


def test_a_run_with_another_objective_records_it_in_model_pt(
    mean_square, defect_folder, make_folder_config, tmp_path
):
    from fcdd.experiment import run_experiment

    cfg = make_folder_config(defect_folder, tmp_path, "train.epochs=1")
    cfg.train.objective = MeanSquare.name
    result = run_experiment(cfg, "tiles", 0)
    det = Detector.load(result.model_path)
    assert det.meta["objective"] == MeanSquare.name and isinstance(det.objective, MeanSquare)
    assert result.metrics["n_test"] > 0 and result.history[0]["loss"] >= 0
    assert load_checkpoint(result.run_dir / CHECKPOINT)["loss_kind"] == "nominal-mean-square"
    # FCDD's own files name no objective: their bytes are as before objectives were pluggable.
    del cfg.train.objective
    plain = run_experiment(cfg, "tiles", 1)
    assert "objective" not in Detector.load(plain.model_path).meta
