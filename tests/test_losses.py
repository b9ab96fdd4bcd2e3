"""Tests of s2sr.training.losses: L1, relativistic GAN losses, GAN schedule (the filters: test_filters.py)."""

import math

import pytest
import torch

from s2sr.training.losses import (
    gan_weight,
    l1_loss,
    relativistic_d_loss,
    relativistic_g_loss,
)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# ---------------------------------------------------------------- l1_loss


def test_l1_plain_value():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[0.0, 4.0], [3.0, 0.0]]]])
    assert l1_loss(pred, target).item() == pytest.approx((1 + 2 + 0 + 4) / 4)


def test_l1_band_mask_averages_unmasked_only():
    torch.manual_seed(0)
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[:, 0] = 1.0  # band 0 errors 1
    target[:, 1] = 5.0  # band 1 errors 5 (masked out in sample 0)
    target[:, 2] = 100.0  # band 2 errors 100 (always masked out)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool).view(2, 3, 1, 1)
    # unmasked elements: sample 0 band 0 (16 x 1), sample 1 bands 0 and 1 (16 x 1 + 16 x 5)
    expected = (16 * 1 + 16 * 1 + 16 * 5) / 48
    assert l1_loss(pred, target, mask).item() == pytest.approx(expected)
    # a full-resolution mask with the same content gives the same value
    full = mask.expand(2, 3, 4, 4).float()
    assert l1_loss(pred, target, full).item() == pytest.approx(expected)


def test_l1_pixel_mask_and_all_masked():
    pred = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_()
    target = torch.zeros(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    mask[..., 3, 3] = 1
    assert l1_loss(pred, target, mask).item() == pytest.approx((0 + 15) / 2)
    zero = l1_loss(pred, target, torch.zeros(1, 1, 1, 1))
    assert zero.item() == 0.0 and not torch.isnan(zero)
    zero.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_l1_rejects_bad_shapes():
    with pytest.raises(ValueError):
        l1_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3))
    with pytest.raises(ValueError):  # a mask that would enlarge the result
        l1_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(3, 2, 1, 1))


def test_l1_float64():
    p, t = torch.rand(2, 2, 3, 3, dtype=torch.float64), torch.rand(2, 2, 3, 3, dtype=torch.float64)
    m = torch.ones(2, 2, 1, 1)  # float32 mask must not downcast
    assert l1_loss(p, t, m).dtype == torch.float64
    assert l1_loss(p, t, m).item() == pytest.approx((p - t).abs().mean().item(), rel=1e-12)


# ---------------------------------------------------------------- relativistic losses


def test_relativistic_hand_computed_scalar_case():
    real, fake = torch.tensor([2.0]), torch.tensor([0.0])
    # d: 0.5 (softplus(-(2 - 0)) + softplus(0 - 2)) = softplus(-2)
    assert relativistic_d_loss(real, fake).item() == pytest.approx(softplus(-2.0), rel=1e-6)
    # g: 0.5 (softplus(2 - 0) + softplus(-(0 - 2))) = softplus(2)
    assert relativistic_g_loss(real, fake).item() == pytest.approx(softplus(2.0), rel=1e-6)


def test_relativistic_hand_computed_map_case():
    # per-pixel maps [B=1, 1, 1, 2]: mean real = 2, mean fake = -1
    real = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    fake = torch.tensor([0.0, -2.0]).view(1, 1, 1, 2)
    # real - mean fake = [2, 4]; fake - mean real = [-2, -4]
    d = 0.5 * ((softplus(-2) + softplus(-4)) / 2 + (softplus(-2) + softplus(-4)) / 2)
    g = 0.5 * ((softplus(2) + softplus(4)) / 2 + (softplus(2) + softplus(4)) / 2)
    assert relativistic_d_loss(real, fake).item() == pytest.approx(d, rel=1e-6)
    assert relativistic_g_loss(real, fake).item() == pytest.approx(g, rel=1e-6)


def test_relativistic_mean_is_over_batch_and_space():
    # Two samples whose logits differ only by a per-sample offset: a per-sample mean would
    # cancel the offset, the batch-and-space mean of the formulation does not.
    real = torch.tensor([0.0, 10.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    fake = torch.tensor([0.0, 10.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    # mean over everything: 5 each; rel = [-5, 5] on both sides
    d = 0.5 * ((softplus(5) + softplus(-5)) / 2 + (softplus(-5) + softplus(5)) / 2)
    assert relativistic_d_loss(real, fake).item() == pytest.approx(d, rel=1e-6)


def test_undecided_discriminator_gives_log2():
    x = torch.full((3, 1, 4, 4), 1.7)
    assert relativistic_d_loss(x, x).item() == pytest.approx(math.log(2))
    assert relativistic_g_loss(x, x).item() == pytest.approx(math.log(2))


def test_swapped_roles_symmetry():
    torch.manual_seed(1)
    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8) - 0.5
    # the generator's loss is the discriminator's with real and fake exchanged
    torch.testing.assert_close(relativistic_g_loss(real, fake), relativistic_d_loss(fake, real))
    torch.testing.assert_close(relativistic_d_loss(real, fake), relativistic_g_loss(fake, real))
    # shifting every logit by a constant changes nothing (only differences matter)
    torch.testing.assert_close(relativistic_d_loss(real + 3, fake + 3), relativistic_d_loss(real, fake))


def test_confident_discriminator_small_d_large_g():
    torch.manual_seed(2)
    real = 10 + torch.randn(4, 1, 8, 8) * 0.1
    fake = -10 + torch.randn(4, 1, 8, 8) * 0.1
    d, g = relativistic_d_loss(real, fake), relativistic_g_loss(real, fake)
    assert d.item() < 1e-6
    assert g.item() > 15.0
    # and the opposite when the generator fools the discriminator completely
    assert relativistic_d_loss(fake, real).item() > 15.0
    assert relativistic_g_loss(fake, real).item() < 1e-6


def test_stable_for_huge_logits():
    real, fake = torch.tensor([1e4]), torch.tensor([-1e4])
    d, g = relativistic_d_loss(real, fake), relativistic_g_loss(real, fake)
    assert torch.isfinite(d) and torch.isfinite(g)
    assert g.item() == pytest.approx(2e4, rel=1e-6)


def test_gradients_flow_and_point_the_right_way():
    torch.manual_seed(3)
    real = torch.randn(2, 1, 4, 4).requires_grad_()
    fake = torch.randn(2, 1, 4, 4).requires_grad_()
    relativistic_d_loss(real, fake).backward()
    # descending the d loss raises real logits and lowers fake ones
    assert (real.grad < 0).all() and (fake.grad > 0).all()

    fake_g = fake.detach().clone().requires_grad_()
    relativistic_g_loss(real.detach(), fake_g).backward()
    assert fake_g.grad is not None and (fake_g.grad < 0).all()  # G raises its fakes' logits
    assert fake_g.grad.abs().sum() > 0


def test_relativistic_float64():
    r = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    f = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    assert relativistic_d_loss(r, f).dtype == torch.float64
    assert relativistic_g_loss(r, f).dtype == torch.float64


# ---------------------------------------------------------------- schedule


def test_gan_weight_schedule():
    w = 0.01
    assert gan_weight(0, 2000, 500, w) == 0.0
    assert gan_weight(2000, 2000, 500, w) == 0.0
    assert gan_weight(2250, 2000, 500, w) == pytest.approx(0.005)
    assert gan_weight(2500, 2000, 500, w) == pytest.approx(w)
    assert gan_weight(10**6, 2000, 500, w) == pytest.approx(w)
    assert gan_weight(2001, 2000, 0, w) == w
    values = [gan_weight(s, 100, 50, w) for s in range(0, 300)]
    assert all(b >= a for a, b in zip(values, values[1:]))  # monotone
    with pytest.raises(ValueError):
        gan_weight(0, -1, 10, w)
