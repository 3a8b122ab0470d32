"""Receptive-field upsampling (docs/method.md §3) against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler, default_sigma, gaussian_kernel, resize_nearest
from fcdd.models import ReceptiveField, build_net

torch.set_num_threads(1)


def test_odd_kernel_is_an_outer_product_with_peak_one():
    g = gaussian_kernel(3, 1.0)
    e = math.exp(-0.5)
    expected = torch.tensor([[e * e, e, e * e], [e, 1.0, e], [e * e, e, e * e]])
    torch.testing.assert_close(g, expected)


def test_even_kernel_duplicates_the_centre_of_the_odd_window_and_peaks_at_a_quarter():
    sigma = 1.3
    g = gaussian_kernel(4, sigma)
    w = math.exp(-0.5 / sigma**2)
    line = torch.tensor([w, 1.0, 1.0, w]) / 2  # window of length 3, centre duplicated, halved
    torch.testing.assert_close(g, torch.outer(line, line))
    assert g.max().item() == pytest.approx(0.25)
    assert gaussian_kernel(62, 12.0).shape == (62, 62)
    assert gaussian_kernel(1, 5.0).item() == 1.0


def test_kernel_rejects_bad_values():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(3, 0.0)
    with pytest.raises(ValueError, match="r must"):
        gaussian_kernel(0, 1.0)


def test_default_sigma_formula():
    assert default_sigma(16) == pytest.approx(math.log10(0.45 * 16 + 1) + 0.25)
    assert default_sigma(22) == pytest.approx(math.log10(10.9) + 0.25)
    assert default_sigma(62) == 10.0
    assert ReceptiveFieldUpsampler(ReceptiveField(16, 4, 1.5), None, 28).sigma == pytest.approx(
        default_sigma(16)
    )


def test_single_one_in_a_2x2_map_hand_computed():
    # A conv3, stride 2, padding 1 layer on a 4x4 image: r 3, j 2, s 0. Low-res pixel (0, 0) is
    # centred on input pixel (0, 0), so only the lower-right 2x2 of G falls inside the image.
    up = ReceptiveFieldUpsampler(ReceptiveField(3, 2, 0.0), sigma=1.0, input_size=4)
    a = torch.zeros(1, 1, 2, 2)
    a[0, 0, 0, 0] = 1.0
    e = math.exp(-0.5)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, :2, :2] = torch.tensor([[1.0, e], [e, e * e]])
    torch.testing.assert_close(up(a), expected)
    # Pixel (1, 1) lands at (2, 2): its whole 3x3 kernel fits, overlapping (0, 0)'s at (1, 1).
    a[0, 0, 1, 1] = 2.0
    out = up(a)[0, 0]
    assert out[2, 2].item() == pytest.approx(2.0)
    assert out[1, 1].item() == pytest.approx(e * e + 2 * e * e)
    assert out[3, 3].item() == pytest.approx(2 * e * e)


def test_shift_moves_the_crop():
    # conv3, stride 2, no padding: s = 1, so pixel 0 is centred on input pixel 1 (full G inside).
    up = ReceptiveFieldUpsampler(ReceptiveField(3, 2, 1.0), sigma=1.0, input_size=5)
    a = torch.zeros(1, 1, 2, 2)
    a[0, 0, 0, 0] = 1.0
    out = up(a)[0, 0]
    torch.testing.assert_close(out[:3, :3], gaussian_kernel(3, 1.0))
    assert out[3:].abs().sum() == 0 and out[:, 3:].abs().sum() == 0


@pytest.mark.parametrize(
    ("net", "size", "sigma"), [("cnn28", 28, 1.2), ("cnn32", 32, 1.2), ("vgg11_bn", 224, 12.0)]
)
def test_exact_size_and_peaks_land_at_i_j_plus_s(net, size, sigma):
    model = build_net(net, size)
    rf, u = model.receptive_field, model.output_size
    up = ReceptiveFieldUpsampler.for_model(model, sigma)
    for i, k in [(0, 0), (2, 3), (u - 1, u // 2)]:
        a = torch.zeros(1, 1, u, u)
        a[0, 0, i, k] = 1.0
        out = up(a)[0, 0]
        assert out.shape == (size, size)
        rows, cols = torch.nonzero(out == out.max(), as_tuple=True)
        # Even r: the peak is two pixels wide, centred on the half-integer i*j + s.
        assert rows.float().mean().item() == pytest.approx(i * rf.j + rf.s)
        assert cols.float().mean().item() == pytest.approx(k * rf.j + rf.s)


def test_other_input_sizes_batches_and_channels():
    for net, size in [("vgg11_bn", 256), ("cnn28", 30)]:
        model = build_net(net, size)
        up = ReceptiveFieldUpsampler.for_model(model)
        out = up(torch.rand(3, 2, model.output_size, model.output_size))
        assert out.shape == (3, 2, size, size)
    # 30 = 7 * 4 + 2: the last rows no receptive-field centre reaches still get the tails.
    model = build_net("cnn28", 30)
    out = ReceptiveFieldUpsampler.for_model(model, 1.2)(torch.ones(1, 1, 7, 7))
    assert out[0, 0, -1].min() > 0
    with pytest.raises(ValueError, match="expected"):
        up(torch.zeros(7, 7))


def test_constant_map_gives_a_periodic_interior_nearly_constant_for_wide_sigma():
    # A sum of Gaussians every j pixels is periodic with period j, not exactly flat: the ripple
    # depends on σ/j (docs/method.md §3's "constant interior" holds for σ large against j, e.g. VGG σ 12).
    model = build_net("vgg11_bn", 224)
    rf = model.receptive_field
    out = ReceptiveFieldUpsampler.for_model(model, 12.0)(torch.ones(1, 1, 28, 28))[0, 0]
    margin = rf.r
    interior = out[margin:-margin, margin:-margin]
    torch.testing.assert_close(interior[: -rf.j], interior[rf.j :])
    torch.testing.assert_close(interior[:, : -rf.j], interior[:, rf.j :])
    assert (interior.max() - interior.min()) / interior.mean() < 0.03
    assert out[0, 0] < interior.mean()  # borders see fewer kernels


def test_gradient_flows_through_the_upsampler():
    up = ReceptiveFieldUpsampler(ReceptiveField(16, 4, 1.5), 1.2, 28)
    a = torch.rand(2, 1, 7, 7, requires_grad=True)
    up(a).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and (a.grad > 0).all()


def test_resize_nearest_to_mask_resolution():
    maps = torch.arange(4.0).reshape(1, 1, 2, 2)
    out = resize_nearest(maps, (4, 6))
    assert out.shape == (1, 1, 4, 6)
    assert out[0, 0, 3, 5] == 3.0 and out[0, 0, 0, 0] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    up = ReceptiveFieldUpsampler(ReceptiveField(62, 8, 3.5), 12.0, 224)
    a = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(up.cuda()(a.cuda()).cpu(), up.cpu()(a), rtol=1e-4, atol=1e-4)
