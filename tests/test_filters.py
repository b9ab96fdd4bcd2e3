"""Tests of s2sr.training.filters: the Gaussian blur and the high-pass filter the discriminator
sees its input through."""

import pytest
import torch

from s2sr.training.filters import gaussian_blur, gaussian_kernel, high_pass


# ---------------------------------------------------------------- high-pass


def test_high_pass_of_constant_is_zero():
    x = torch.full((2, 3, 16, 16), 0.25, dtype=torch.float64)
    x[1] = -7.0
    hp = high_pass(x, 1.0)
    assert hp.shape == x.shape and hp.dtype == torch.float64
    assert hp.abs().max().item() < 1e-12


def test_high_pass_keeps_checkerboard_and_removes_ramp():
    i = torch.arange(16)
    checker = ((i.view(-1, 1) + i.view(1, -1)) % 2).float() * 2 - 1  # +-1, Nyquist both axes
    x = checker.view(1, 1, 16, 16)
    hp = high_pass(x, 1.0)
    # a Gaussian of sigma 1 px passes ~(1e-2)^2 of Nyquist: the high-pass keeps > 95 %
    assert (hp * x).sum() / (x * x).sum() > 0.95
    # while a smooth (linear) ramp away from the borders is removed
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    assert high_pass(ramp, 1.0)[..., 4:-4].abs().max().item() < 1e-6


def test_high_pass_is_per_channel():
    x = torch.zeros(1, 3, 16, 16)
    x[0, 1, 8, 8] = 1.0  # impulse in channel 1 only
    hp = high_pass(x, 1.5)
    assert hp[0, 0].abs().max() == 0 and hp[0, 2].abs().max() == 0
    assert hp[0, 1].sum().abs().item() < 1e-5  # blur keeps the mass, high-pass has none
    assert hp[0, 1, 8, 8].item() > 0.5


def test_gaussian_blur_rejects_bad_input():
    with pytest.raises(ValueError):
        gaussian_blur(torch.zeros(1, 1, 8, 8), 0.0)
    with pytest.raises(ValueError):
        gaussian_blur(torch.zeros(1, 1, 3, 8), 1.0)  # radius 3 needs > 3 px
    with pytest.raises(ValueError):
        gaussian_blur(torch.zeros(8, 8), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_filters_follow_the_input_dtype(dtype):
    k = gaussian_kernel(1.0, dtype, torch.device("cpu"))
    assert k.dtype == dtype and k.numel() == 7 and abs(float(k.double().sum()) - 1) < 1e-2
    x = torch.rand(1, 2, 12, 12).to(dtype)
    assert gaussian_blur(x, 1.0).dtype == dtype and high_pass(x, 1.0).dtype == dtype


def test_the_discriminator_and_the_filters_module_share_one_high_pass():
    from s2sr.training import losses
    from s2sr.training.models import discriminator

    assert discriminator.high_pass is high_pass
    assert not any(hasattr(losses, name) for name in ("high_pass", "gaussian_blur", "gaussian_kernel1d"))
