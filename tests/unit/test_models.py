"""The FCDD nets: shapes, receptive fields from the layers, VGG weights and freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcdd.config import Config
from fcdd.models import (
    CNN28,
    FCDDVGG11,
    ReceptiveField,
    WeightsError,
    build_model,
    build_net,
    load_vgg_features,
    receptive_field,
    walk_layers,
)
from fcdd.models.vgg import vgg11_bn_features

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("net", "size", "channels", "out", "r", "j", "s"),
    [
        ("cnn28", 28, 1, 7, 16, 4, 1.5),
        ("cnn32", 32, 3, 8, 22, 4, 1.5),
        ("vgg11_bn", 224, 3, 28, 62, 8, 3.5),
        ("vgg11_bn", 256, 3, 32, 62, 8, 3.5),
        ("cnn28", 30, 1, 7, 16, 4, 1.5),  # floor pooling drops the remainder
    ],
)
def test_output_shape_and_receptive_field_table(net, size, channels, out, r, j, s):
    model = build_net(net, size).eval()
    assert model.in_channels == channels and model.input_size == size
    assert model.receptive_field == ReceptiveField(r=r, j=j, s=s)
    assert model.output_size == out
    with torch.no_grad():
        y = model(torch.randn(2, channels, size, size))
    assert y.shape == (2, 1, out, out)


def test_recurrences_on_a_hand_written_layer_list():
    # CNN28's tracked layers: the docs/method.md §2 table numbers follow from conv5/pool2/conv5/pool2/conv1.
    layers = [
        nn.Conv2d(1, 2, 5, padding=2),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(2, 2, 5, padding=2),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(2, 1, 1),
    ]
    assert walk_layers(layers, 28) == (ReceptiveField(16, 4, 1.5), 7)
    # One strided conv without padding: r = k, j = t, s = (k - 1) / 2.
    assert receptive_field([nn.Conv2d(1, 1, 3, stride=2)], 9) == ReceptiveField(3, 2, 1.0)
    # Non-tracked modules (BN, activations) change nothing.
    assert receptive_field(nn.Sequential(nn.BatchNorm2d(1), nn.ReLU()), 5) == ReceptiveField(1, 1, 0.0)


def test_receptive_field_follows_the_layers_not_a_table():
    wider = CNN28(input_size=28)
    wider.features[0] = nn.Conv2d(1, 128, 7, padding=3)  # rebuild: bookkeeping re-walks the modules
    assert receptive_field(wider, 28).r == 18


def test_unsupported_layers_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="dilation"):
        receptive_field([nn.Conv2d(1, 1, 3, dilation=2)], 28)
    with pytest.raises(ValueError, match="too small"):
        build_net("cnn32", 3)
    with pytest.raises(ValueError, match="expected input"):
        build_net("cnn28", 28)(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="model.net"):
        build_net("resnet", 28)
    with pytest.raises(ValueError, match="vgg11_bn only"):
        build_net("cnn28", 28, freeze=3)


def test_build_model_reads_the_config():
    cfg = Config()
    cfg.model.net, cfg.model.input_size = "cnn32", 32
    model = build_model(cfg)
    assert model.receptive_field.r == 22 and model.in_channels == 3
    assert build_model(cfg, in_channels=1).in_channels == 1


def _features_state() -> dict[str, torch.Tensor]:
    full = vgg11_bn_features()
    return {f"features.{k}": v for k, v in full.state_dict().items()}


def test_vgg_loads_a_local_state_dict_before_truncation(tmp_path):
    state = _features_state()
    state["classifier.0.bias"] = torch.zeros(4)  # classifier keys of a whole-model file are ignored
    path = tmp_path / "vgg11_bn.pth"
    torch.save(state, path)
    model = FCDDVGG11(input_size=64, weights_path=path)
    loaded = model.features.state_dict()
    assert len(model.features) == 21
    for key, value in loaded.items():
        assert torch.equal(value, state[f"features.{key}"]), key
    assert "features.21.weight" not in {f"features.{k}" for k in loaded}  # the 4th block is cut


def test_vgg_weights_errors_name_the_file_and_keys(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth.*not found"):
        FCDDVGG11(weights_path=missing)
    state = _features_state()
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    del state["features.4.bias"]
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match=r"bad\.pth") as info:
        FCDDVGG11(weights_path=bad)
    assert (
        "4.bias" in str(info.value) and "0.weight" in str(info.value) and "(32, 3, 3, 3)" in str(info.value)
    )
    junk = tmp_path / "junk.pth"
    junk.write_text("not a torch file")
    with pytest.raises(WeightsError, match="junk.pth"):
        FCDDVGG11(weights_path=junk)


def test_frozen_layers_get_no_gradient_and_their_bn_stays_in_eval():
    model = FCDDVGG11(input_size=32, freeze=15)
    model.train()
    frozen, trainable = list(model.features)[:15], list(model.features)[15:]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in trainable for p in m.parameters())
    frozen_bn = [m for m in frozen if isinstance(m, nn.BatchNorm2d)]
    live_bn = [m for m in trainable if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bn and live_bn
    assert all(not m.training for m in frozen_bn) and all(m.training for m in live_bn)
    before = frozen_bn[0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 5 + 3).sum().backward()
    assert torch.equal(frozen_bn[0].running_mean, before)  # statistics do not drift
    assert frozen[0].weight.grad is None and trainable[0].weight.grad is not None
    model.eval()
    model.train()
    assert all(not m.training for m in frozen_bn)
    with pytest.raises(ValueError, match="freeze"):
        FCDDVGG11(freeze=22)


def test_features_only_state_dict_loads_too(tmp_path):
    source = vgg11_bn_features()
    path = tmp_path / "features.pth"
    torch.save(source.state_dict(), path)  # keys "0.weight", ... without the "features." prefix
    target = vgg11_bn_features()
    load_vgg_features(target, path)
    assert torch.equal(target[8].weight, source[8].weight)


def test_imagenet_weights_unreachable_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr("fcdd.models.vgg.vgg11_bn", offline)  # never download in tests
    with pytest.raises(WeightsError, match="weights_path"):
        FCDDVGG11(pretrained=True)
