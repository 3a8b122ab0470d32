"""HSC and autoencoder baselines (docs/baselines.md): nets, losses and scores against hand-computed
values, the gradient heatmap against torch.autograd.grad per sample, the display blur."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fcdd.models import (
    AE28,
    AE32,
    AE224,
    HSC28,
    HSC32,
    HSCVGG11,
    WeightsError,
    build_net,
    fcdd_receptive_field,
)
from fcdd.models.vgg import vgg11_bn_features
from fcdd.objectives.ae import ae_loss, ae_maps, ae_scores
from fcdd.objectives.blur import DisplayBlur, blur_kernel
from fcdd.objectives.hsc import gradient_heatmap, hsc_loss, hsc_score, hsc_scores

torch.set_num_threads(1)


# ---------------------------------------------------------------- nets
@pytest.mark.parametrize(
    ("net", "size", "channels", "cls", "dim"),
    [("cnn28", 28, 1, HSC28, 48), ("cnn32", 32, 3, HSC32, 64), ("vgg11_bn", 64, 3, HSCVGG11, 4096)],
)
def test_hsc_nets_map_an_image_to_one_vector(net, size, channels, cls, dim):
    model = build_net(net, size, variant="hsc").eval()
    assert isinstance(model, cls) and model.in_channels == channels
    with torch.no_grad():
        assert model(torch.randn(3, channels, size, size)).shape == (3, dim)
    # The display blur is as large as the FCDD twin's receptive field (docs/method.md §2 table).
    assert model.receptive_field == build_net(net, size).receptive_field
    assert model.output_size == size  # the gradient heatmap has the input's size


@pytest.mark.parametrize(
    ("net", "size", "channels", "cls"),
    [
        ("cnn28", 28, 1, AE28),
        ("cnn32", 32, 3, AE32),
        ("vgg11_bn", 64, 3, AE224),
        ("vgg11_bn", [64, 80], 3, AE224),
    ],
)
def test_autoencoders_reconstruct_at_the_input_size(net, size, channels, cls):
    model = build_net(net, size, variant="ae").eval()
    h, w = (size, size) if isinstance(size, int) else size
    assert isinstance(model, cls)
    with torch.no_grad():
        assert model(torch.randn(2, channels, h, w)).shape == (2, channels, h, w)
    assert model.receptive_field == fcdd_receptive_field(net)


def test_the_original_sizes_of_the_224_baselines():
    # 4096-d VGG embedding; the AE bottleneck is 512x7x7 at 224 px, as in the original AE224_VGG.
    with torch.device("meta"):  # shapes only: no memory, no init
        hsc = build_net("vgg11_bn", 224, variant="hsc")
        ae = build_net("vgg11_bn", 224, variant="ae")
    assert hsc.head[-1].out_features == 4096 and len(hsc.trunk[0]) == 29
    assert ae.decoder[2].out_features == 512 * 7 * 7


def test_small_autoencoders_refuse_other_input_sizes():
    with pytest.raises(ValueError, match="AE28 reconstructs 28x28 images; model.input_size is 32"):
        build_net("cnn28", 32, variant="ae")
    with pytest.raises(ValueError, match="AE32 reconstructs 32x32"):
        build_net("cnn32", [32, 40], variant="ae")
    with pytest.raises(ValueError, match="net variant"):
        build_net("cnn28", 28, variant="svdd")
    with pytest.raises(ValueError, match="too small"):
        build_net("cnn32", 4, variant="hsc")


def test_a_training_batch_of_one_does_not_fail():
    # BatchNorm1d cannot normalise one sample with batch statistics; a last batch of one must train.
    model = build_net("cnn32", 32, variant="ae").train()
    out = model(torch.randn(1, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (1, 3, 32, 32)


def test_hsc_vgg_loads_features_and_classifier_of_a_local_file_and_freezes(tmp_path):
    from torchvision.models import vgg11_bn

    full = vgg11_bn(weights=None)
    path = tmp_path / "vgg.pth"
    torch.save(full.state_dict(), path)
    model = HSCVGG11(64, weights_path=path, freeze=15).train()
    assert torch.equal(model.trunk[0][8].weight, full.features[8].weight)
    assert torch.equal(model.head[3].weight, full.classifier[3].weight)
    assert all(not p.requires_grad for m in list(model.trunk[0])[:15] for p in m.parameters())
    assert not model.trunk[0][1].training and model.trunk[0][16].training  # frozen BN stays in eval
    # A features-only file: the classifier keeps its init, the features load.
    features = vgg11_bn_features()
    torch.save(features.state_dict(), tmp_path / "features.pth")
    part = HSCVGG11(64, weights_path=tmp_path / "features.pth")
    assert torch.equal(part.trunk[0][0].weight, features[0].weight)
    with pytest.raises(WeightsError, match="missing.pth"):
        HSCVGG11(64, weights_path=tmp_path / "missing.pth")


# ---------------------------------------------------------------- HSC loss and score
def test_hsc_score_and_loss_hand_computed():
    features = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    a = [math.sqrt(26) - 1, math.sqrt(2) - 1, math.sqrt(5) - 1]
    torch.testing.assert_close(hsc_score(features), torch.tensor(a), rtol=1e-6, atol=0)
    loss = hsc_loss(features, torch.tensor([0, 1, 1]))
    expected = (a[0] - math.log(1 - math.exp(-a[1])) - math.log(1 - math.exp(-a[2]))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # A batch of anomalies keeps its log terms (the original HSC; FCDD's loss would take mean A).
    only = hsc_loss(features[1:2], torch.tensor([1]))
    assert only.item() == pytest.approx(-math.log(1 - math.exp(-a[1])), rel=1e-6)
    assert hsc_loss(features, torch.zeros(3)).item() == pytest.approx(sum(a) / 3, rel=1e-6)


def test_hsc_score_is_exact_for_tiny_and_smooth_at_the_centre():
    tiny = torch.tensor([[1e-4, 0.0]])
    assert hsc_score(tiny).item() == pytest.approx(0.5e-8, rel=1e-5)  # sqrt(1 + 1e-8) - 1 cancels in float32
    zero = torch.zeros(2, 3, requires_grad=True)
    hsc_loss(zero, torch.tensor([0, 1])).backward()
    assert torch.isfinite(zero.grad).all()
    with pytest.raises(ValueError, match="labels"):
        hsc_loss(torch.zeros(2, 3), torch.zeros(3))


# ---------------------------------------------------------------- HSC gradient heatmap
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))


def test_gradient_heatmap_equals_autograd_per_sample_by_hand():
    net = _Tiny()
    net.train()
    net(torch.randn(8, 2, 5, 5))  # move the BN running statistics off their init
    net.eval()
    x = torch.randn(3, 2, 5, 5)
    scores, heat = hsc_scores(net, x)
    assert heat.shape == (3, 1, 5, 5)
    for i in range(3):
        xi = x[i : i + 1].clone().requires_grad_(True)
        a = torch.sqrt((net(xi) ** 2).sum() + 1) - 1  # A by hand, for this sample alone
        (g,) = torch.autograd.grad(a, xi)
        torch.testing.assert_close(heat[i], g.abs().sum(1), rtol=1e-5, atol=1e-7)
        assert scores[i].item() == pytest.approx(a.item(), rel=1e-5)
    assert all(p.grad is None for p in net.parameters())  # no parameter gradients were computed


def test_gradient_heatmap_works_under_no_grad_and_refuses_train_mode():
    net = _Tiny().eval()
    with torch.no_grad():
        scores, heat = gradient_heatmap(lambda x: hsc_score(net(x)), torch.randn(2, 2, 5, 5))
    assert scores.shape == (2,) and heat.shape == (2, 1, 5, 5) and (heat >= 0).all()
    with pytest.raises(ValueError, match="eval mode"):
        hsc_scores(net.train(), torch.randn(2, 2, 5, 5))


# ---------------------------------------------------------------- AE loss and scores
def test_ae_loss_and_maps_hand_computed():
    x = torch.zeros(2, 3, 2, 2)
    recon = x.clone()
    recon[0, 0, 0, 0] = 3.0  # one element of sample 0 off by 3: error 9
    recon[1] += 0.5  # sample 1 off by 0.5 everywhere: error 0.25
    assert ae_loss(recon, x).item() == pytest.approx((9 + 0.25 * 12) / 24)
    image, pixel = ae_maps(recon, x)
    assert pixel.shape == (2, 1, 2, 2)
    assert pixel[0, 0, 0, 0].item() == pytest.approx(3.0) and pixel[0, 0, 1, 1].item() == 0
    torch.testing.assert_close(pixel[1], torch.full((1, 2, 2), 0.25))
    torch.testing.assert_close(image, torch.tensor([9 / 12, 0.25]))
    with pytest.raises(ValueError, match="differ"):
        ae_loss(recon[:, :1], x)


def test_ae_learns_a_constant_image_and_finds_what_differs():
    torch.manual_seed(0)
    model = AE28()
    constant = torch.full((2, 1, 28, 28), 0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = ae_loss(model(constant), constant)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4  # it learns to reconstruct the constant image
    model.eval()
    odd = constant[:1].clone()
    odd[..., 10:16, 10:16] = 1.0
    image, pixel = ae_scores(model, torch.cat([constant[:1], odd]))
    assert image[1] > image[0]
    inside, corner = pixel[1, 0, 10:16, 10:16].mean(), pixel[1, 0, :6, :6].mean()
    assert inside > 100 * corner  # the error map points at the square it never saw


# ---------------------------------------------------------------- display blur
def test_blur_kernel_size_and_normalisation():
    assert blur_kernel(16, 1.2).numel() == 15 and blur_kernel(61, 12).numel() == 61
    assert blur_kernel(62, 12).numel() == 61
    assert blur_kernel(15, 1.2).sum().item() == pytest.approx(1.0, abs=1e-6)
    k = blur_kernel(5, 1.0).double()
    expected = torch.exp(-0.5 * torch.arange(-2.0, 3.0, dtype=torch.float64) ** 2)
    torch.testing.assert_close(k, (expected / expected.sum()), rtol=1e-6, atol=1e-7)


def test_display_blur_keeps_constants_and_spreads_an_impulse_over_the_receptive_field():
    blur = DisplayBlur(16, 1.2)
    flat = torch.full((1, 1, 28, 28), 2.0)
    torch.testing.assert_close(blur(flat), flat)  # reflected borders: constant stays constant
    impulse = torch.zeros(1, 1, 28, 28)
    impulse[0, 0, 14, 14] = 1.0
    out = blur(impulse)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    nonzero = (out[0, 0] > 0).nonzero()
    assert nonzero[:, 0].max() - nonzero[:, 0].min() + 1 == 15  # r - 1 for the even r of cnn28
    small = DisplayBlur(62, 12)(torch.rand(2, 1, 20, 20))  # maps smaller than the kernel: replicated
    assert small.shape == (2, 1, 20, 20) and torch.isfinite(small).all()
