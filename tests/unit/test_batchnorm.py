"""train.bn_recalibration: BatchNorm running statistics re-estimated from nominal training images
after training, so eval-mode scores see the statistics of the final net on real images."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from fcdd.batchnorm import recalibrate_batchnorm
from fcdd.detector import Detector
from fcdd.experiment import run_experiment


class Images(Dataset):
    """Nominal images around 0; with ``probability`` 1, every item an 'anomaly' far away at +50."""

    def __init__(self, n: int = 24, probability: float = 0.0):
        self.x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        self.probability = probability

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i] + (50.0 if self.probability > 0 else 0.0)
        return {"image": x, "label": torch.tensor(int(self.probability > 0))}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def _stale(net: nn.Module) -> None:
    """Running statistics left by training on other data (or earlier weights)."""
    bn = net[1]
    bn.running_mean.fill_(30.0)
    bn.running_var.fill_(900.0)


def test_stale_running_stats_collapse_eval_scores_and_recalibration_restores_them():
    data = Images(probability=0.5)  # a training set that injects anomalies
    nominal = Images().x
    net = _net()
    _stale(net)
    net.train()
    with torch.no_grad():
        batch_stats = net(nominal)  # what the net computes with its own statistics of nominal images
    net.eval()
    with torch.no_grad():
        stale = net(nominal)
    # With stale statistics every image maps to nearly the same output: the near-constant scores.
    assert stale.std() < 0.2 * batch_stats.std()

    seen = recalibrate_batchnorm(net, data, torch.device("cpu"), batch_size=len(nominal), mode="nominal")
    assert seen == len(nominal) and not net.training
    with torch.no_grad():
        fixed = net(nominal)
    torch.testing.assert_close(fixed, batch_stats, atol=1e-3, rtol=1e-2)  # unbiased running var
    # Only nominal images counted: the injected anomalies (+50) would have moved the mean.
    conv_out = net[0](nominal)
    torch.testing.assert_close(net[1].running_mean, conv_out.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert net[1].momentum == 0.1  # restored


def test_train_mode_uses_the_training_stream_and_off_leaves_the_model_alone():
    net = _net()
    _stale(net)
    assert recalibrate_batchnorm(net, Images(), torch.device("cpu"), 8, mode="off") == 0
    assert float(net[1].running_mean[0]) == 30.0
    anomalies = Images(probability=1.0)
    recalibrate_batchnorm(net, anomalies, torch.device("cpu"), 24, mode="train")
    shifted = net[0](anomalies.x + 50.0).mean((0, 2, 3))
    torch.testing.assert_close(net[1].running_mean, shifted, atol=1e-3, rtol=1e-4)


def test_frozen_batchnorm_layers_keep_their_statistics():
    net = _net()
    _stale(net)
    net[1].eval()
    original_train = net.train

    def train(mode: bool = True):  # a frozen layer stays in eval mode, as FCDDVGG11 does it
        original_train(mode)
        net[1].eval()
        return net

    net.train = train  # type: ignore[method-assign]
    assert recalibrate_batchnorm(net, Images(), torch.device("cpu"), 8) == 0
    assert float(net[1].running_mean[0]) == 30.0


def test_experiment_recalibrates_and_records_it(defect_folder, make_folder_config, tmp_path):
    cfg = make_folder_config(defect_folder, tmp_path, "train.epochs=1", "train.bn_recalibration=nominal")
    result = run_experiment(cfg, "tiles", seed=0)
    det = Detector.load(result.model_path)
    info = det.meta["bn_recalibration"]
    assert info["mode"] == "nominal"
    assert info["images"] == result.metrics.get("n_train", info["images"]) and info["images"] > 0
