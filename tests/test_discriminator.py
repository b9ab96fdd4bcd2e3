"""Tests of the UNet spectral-norm discriminator (s2sr.training.models.discriminator)."""

import dataclasses

import pytest
import torch
from torch.nn.utils import parametrize

from s2sr.training.filters import gaussian_blur
from s2sr.training.losses import relativistic_d_loss
from s2sr.training.models.discriminator import (
    UNetDiscriminatorConfig,
    UNetDiscriminatorSN,
    build_discriminator,
)

SMALL = UNetDiscriminatorConfig(bands=4, features=8)


def expected_parameter_count(bands: int, f: int) -> int:
    """From the layer table of the module docstring (SN convs have no bias)."""
    conv0 = bands * f * 9 + f
    down = f * 2 * f * 16 + 2 * f * 4 * f * 16 + 4 * f * 8 * f * 16
    up = 8 * f * 4 * f * 9 + 4 * f * 2 * f * 9 + 2 * f * f * 9
    extra = 2 * f * f * 9
    last = f * 9 + 1
    return conv0 + down + up + extra + last


def test_config_is_frozen_with_seed_defaults():
    cfg = UNetDiscriminatorConfig()
    assert (cfg.bands, cfg.features, cfg.skip, cfg.high_pass_sigma) == (10, 64, True, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bands = 4  # type: ignore[misc]


@pytest.mark.parametrize("hw", [(8, 8), (16, 24), (32, 32)])
def test_output_shape_per_pixel_logits(hw):
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(SMALL)
    out = d(torch.randn(3, 4, *hw))
    assert out.shape == (3, 1, *hw)
    assert torch.isfinite(out).all()


def test_default_parameter_count():
    d = build_discriminator()
    n = sum(p.numel() for p in d.parameters())
    assert n == expected_parameter_count(10, 64) == 4_380_929
    assert d(torch.randn(1, 10, 16, 16)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("shape", [(1, 4, 12, 16), (1, 4, 16, 20), (1, 4, 4, 8), (1, 3, 16, 16), (4, 16, 16)])
def test_bad_inputs_raise_value_error(shape):
    d = UNetDiscriminatorSN(SMALL)
    with pytest.raises(ValueError):
        d(torch.zeros(shape))


def test_bad_sigma_raises():
    with pytest.raises(ValueError):
        UNetDiscriminatorSN(dataclasses.replace(SMALL, high_pass_sigma=0.0))


def test_spectral_norm_on_hidden_convs_only():
    d = UNetDiscriminatorSN(SMALL)
    hidden = [getattr(d, f"conv{i}") for i in range(1, 9)]
    for conv in hidden:
        assert parametrize.is_parametrized(conv, "weight")
        assert hasattr(conv, "parametrizations") or hasattr(conv, "weight_orig")
        assert conv.bias is None
    assert not parametrize.is_parametrized(d.conv0) and not parametrize.is_parametrized(d.conv9)
    # the normalised weights have a largest singular value close to 1 (power iteration)
    d.train()
    x = torch.randn(2, 4, 16, 16)
    for _ in range(5):
        d(x)
    for conv in hidden:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_high_pass_input_ignores_offsets_and_smooth_fields():
    torch.manual_seed(1)
    d = UNetDiscriminatorSN(SMALL).eval()
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(d(x + 5.0), d(x), atol=1e-5, rtol=1e-5)
    raw = UNetDiscriminatorSN(dataclasses.replace(SMALL, high_pass_sigma=None)).eval()
    assert (raw(x + 5.0) - raw(x)).abs().max() > 1e-3


def test_skip_changes_the_output():
    torch.manual_seed(2)
    a = UNetDiscriminatorSN(SMALL).eval()
    b = UNetDiscriminatorSN(dataclasses.replace(SMALL, skip=False)).eval()
    b.load_state_dict(a.state_dict())  # same weights, skips off
    x = torch.randn(1, 4, 16, 16)
    assert (a(x) - b(x)).abs().max() > 1e-4


def test_float64_forward():
    d = UNetDiscriminatorSN(SMALL).double()
    out = d(torch.randn(1, 4, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_training_separates_sharp_real_from_blurred_fake():
    """The GAN-for-SR situation in miniature: real images have texture, fakes are blurred."""
    torch.manual_seed(3)
    d = UNetDiscriminatorSN(SMALL)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.99))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        real = torch.randn(4, 4, 16, 16)
        return real, gaussian_blur(real, 1.5)

    with torch.no_grad():
        r, f = batch()
        before = relativistic_d_loss(d(r), d(f)).item()
    for _ in range(15):
        r, f = batch()
        loss = relativistic_d_loss(d(r), d(f))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r, f = batch()  # fresh samples: it learnt the texture, not the examples
        after = relativistic_d_loss(d(r), d(f)).item()
    assert before == pytest.approx(0.69, abs=0.1)  # untrained: undecided, about log 2
    assert after < 0.5 * before
