"""FCDD loss and scores (docs/method.md §1) against hand-computed numbers, and at extreme values."""

from __future__ import annotations

import math

import pytest
import torch

from fcdd.anomaly_map import ReceptiveFieldUpsampler
from fcdd.models import ReceptiveField
from fcdd.objectives import fcdd_loss, pixel_loss
from fcdd.scoring import anomaly_scores, pseudo_huber


def _const(values: list[float], size: int = 2) -> torch.Tensor:
    """A batch [B, 1, size, size] whose sample b is the constant values[b]."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()


def test_pseudo_huber_values():
    out = torch.tensor([0.0, 1.0, -3.0, 1e-4])
    expected = torch.tensor([0.0, math.sqrt(2) - 1, math.sqrt(10) - 1, 5e-9])
    torch.testing.assert_close(pseudo_huber(out), expected, rtol=1e-6, atol=0)


def test_pseudo_huber_is_finite_and_exact_at_both_ends():
    out = torch.tensor([1e-30, 1e20, 3e38, -3e38], requires_grad=True)
    a = pseudo_huber(out)
    assert torch.isfinite(a).all()
    assert a[1].item() == pytest.approx(1e20, rel=1e-6)  # sqrt(x² + 1) would overflow x² in float32
    a.sum().backward()
    torch.testing.assert_close(out.grad, torch.tensor([1e-30, 1.0, 1.0, -1.0]))


def test_image_loss_hand_computed():
    out = _const([1.0, 2.0])
    a1, a2 = math.sqrt(2) - 1, math.sqrt(5) - 1
    loss = fcdd_loss(out, torch.tensor([0, 1]))
    expected = (a1 + -math.log(1 - math.exp(-a2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Only nominal samples: the mean of A (the unsupervised case).
    assert fcdd_loss(out, torch.tensor([0, 0])).item() == pytest.approx((a1 + a2) / 2, rel=1e-6)


def test_image_loss_averages_a_over_the_map_first():
    out = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    mean_a = sum(math.sqrt(v * v + 1) - 1 for v in (0, 1, 2, 3)) / 4
    loss = fcdd_loss(out, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(-math.log(1 - math.exp(-mean_a)) / 2, rel=1e-6)


@pytest.mark.parametrize("label", [0, 1])
def test_single_label_batch_minimises_the_plain_mean_of_a(label):
    # docs/method.md §1, single-label batches: no −log term when the batch has one label only.
    out = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    mean_a = (sum(math.sqrt(v * v + 1) - 1 for v in (0, 1, 2, 3)) / 4 + math.sqrt(2) - 1) / 2
    assert fcdd_loss(out, torch.tensor([label, label])).item() == pytest.approx(mean_a, rel=1e-6)


@pytest.mark.parametrize("value", [0.0, 1e-20, 1e-4, 1e4, 1e30])
def test_image_loss_finite_with_finite_gradients_at_extremes(value):
    out = _const([value, value]).requires_grad_()
    loss = fcdd_loss(out, torch.tensor([1, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(out.grad).all()
    if value == 0.0:  # A = 0: the 1e-31 inside the log caps the anomalous term
        assert loss.item() == pytest.approx(-math.log(1e-31) / 2, rel=1e-5)


def test_tiny_mean_a_keeps_its_precision():
    # 1 − exp(−m) in float32 is 0 for m < 6e-8; −expm1(−m) is m. So the loss is −log(m), not −log(1e-31).
    out = _const([1e-4, 0.0])  # A = 5e-9, 0
    assert fcdd_loss(out, torch.tensor([1, 0])).item() == pytest.approx(-math.log(5e-9) / 2, rel=1e-4)


def test_label_shape_is_checked():
    with pytest.raises(ValueError, match="labels"):
        fcdd_loss(_const([1.0, 2.0]), torch.tensor([0, 1, 1]))


def test_pixel_loss_hand_computed_means_divide_by_all_pixels():
    a_up = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    masks = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    first = (1 + 3) / 4 - math.log(1 - math.exp(-(2 + 4) / 4))  # H·W = 4, not the masked count 2
    second = 1.0  # no anomalous pixel: no log term
    assert pixel_loss(a_up, masks).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_pixel_loss_with_full_mask_equals_the_log_term():
    a_up = torch.full((1, 1, 3, 3), 0.5)
    loss = pixel_loss(a_up, torch.ones_like(a_up))
    assert loss.item() == pytest.approx(-math.log(1 - math.exp(-0.5)), rel=1e-6)


def test_pixel_loss_stable_and_shape_checked():
    a_up = torch.zeros(2, 1, 4, 4, requires_grad=True)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, 0, 0] = 1
    loss = pixel_loss(a_up, masks)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a_up.grad).all()
    with pytest.raises(ValueError, match="shape"):
        pixel_loss(a_up, torch.zeros(2, 1, 4, 5))


def test_anomaly_scores():
    out = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]).repeat(2, 1, 1, 1)
    out[1] *= 2
    up = ReceptiveFieldUpsampler(ReceptiveField(3, 2, 0.0), 1.0, 4)
    scores = anomaly_scores(out, up)
    torch.testing.assert_close(scores.amap, torch.sqrt(out**2 + 1) - 1)
    torch.testing.assert_close(scores.image, scores.amap.flatten(1).mean(1))
    assert scores.image[1] > scores.image[0]
    assert scores.pixel is not None and scores.pixel.shape == (2, 1, 4, 4)
    torch.testing.assert_close(scores.pixel, up(scores.amap))
    assert anomaly_scores(out).pixel is None
