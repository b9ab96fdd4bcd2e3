"""The low-frequency hard constraint: the output re-degraded reproduces the input, locally."""

from dataclasses import replace

import pytest
import torch

from s2sr.training.bands import BANDS, MTF_NYQUIST
from s2sr.training.degradation import mtf_downsample
from s2sr.training.export import script
from s2sr.training.models import ARCHITECTURES, build_model_from_config
from s2sr.training.models.constraint import LowFrequencyConstraint
from s2sr.training.models.receptive_field import measure_receptive_field, receptive_field

MTF = [MTF_NYQUIST[b] for b in BANDS]


def test_down_is_the_simulation_degradation():
    c = LowFrequencyConstraint(MTF).double()
    y = torch.randn(2, 10, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(c.down(y), mtf_downsample(y, 2, MTF), rtol=0, atol=1e-6)


@pytest.mark.parametrize("radius,iterations,tol", [(8, 1, 0.05), (8, 2, 1e-3), (12, 2, 3e-4)])
def test_projection_makes_the_output_consistent(radius, iterations, tol):
    c = LowFrequencyConstraint(MTF, 2, radius, iterations).double()
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, 10, 96, 96, generator=g, dtype=torch.float64)  # worst case: white residual
    x = torch.randn(1, 10, 48, 48, generator=g, dtype=torch.float64)
    before = (c.down(y) - x)[..., 12:-12, 12:-12].abs().max()
    after = (c.down(c(y, x)) - x)[..., 12:-12, 12:-12].abs().max()
    assert after < tol * before


def test_consistent_input_is_left_alone():
    c = LowFrequencyConstraint(MTF).double()
    y = torch.randn(1, 10, 80, 80, dtype=torch.float64)
    out = c(y, c.down(y))
    assert (out - y)[..., 20:-20, 20:-20].abs().max() < 1e-3


def test_model_option_scripts_and_stays_local():
    cfg = replace(ARCHITECTURES["carn_1x3x64g4sw"], features=4)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, hard_constraint=True).eval()
    x = torch.rand(1, 10, 40, 40) * 3000
    with torch.no_grad():
        torch.testing.assert_close(script(model)(x), model(x), rtol=1e-5, atol=1e-2)
    walked, measured = receptive_field(model), measure_receptive_field(model)
    assert walked.radius_out_px >= measured.radius_out_px >= walked.radius_out_px - 4  # a tight upper bound
    assert walked.margin_in_px >= measured.margin_in_px
    assert walked.margin_in_px > receptive_field(build_model_from_config(cfg)).margin_in_px


def test_model_output_reproduces_its_input_when_degraded():
    cfg = replace(ARCHITECTURES["carn_1x3x64g4sw"], features=4)
    torch.manual_seed(1)
    plain = build_model_from_config(cfg).eval()
    faithful = build_model_from_config(cfg, hard_constraint=True).eval()
    faithful.load_state_dict(plain.state_dict())  # the layer has no trained parameters
    x = 500 + torch.rand(1, 10, 64, 64) * 3000
    with torch.no_grad():
        err = lambda m, b: (mtf_downsample(m(x), 2, MTF) - x)[:, b, 16:-16, 16:-16].abs().mean()  # noqa: E731
        native = slice(0, 4)  # B02 B03 B04 B08: constrained
        assert err(faithful, native) < 0.02 * err(plain, native)
        torch.testing.assert_close(faithful(x)[:, 4:], plain(x)[:, 4:])  # 20 m bands left alone
