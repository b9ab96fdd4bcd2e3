"""Generators: parameter counts vs the seed table, receptive field from the layers vs autograd,
scripted == eager for every architecture."""

from dataclasses import replace

import pytest
import torch

from s2sr.training.export import script
from s2sr.training.models import (
    ARCHITECTURES, SEED_PARAMETER_COUNTS, CARNConfig, RRDBConfig, build_model,
    build_model_from_config, count_parameters, get_config,
)
from s2sr.training.models.receptive_field import measure_receptive_field, receptive_field

#: the seed table's "Recept. Field" column (radius in 5 m pixels, 1x3 and 2x3 swapped there)
SEED_RF = {"carn_1x3x64g4sw": 29, "carn_2x3x64g4sw": 17, "carn_3x3x64g4sw": 41, "carn_4x3x64g4sw": 53,
           "carn_3x3x64g4": 41, "carn_3x3x64g1sw": 41, "esrgan_3x64x32": 36}
#: ours, far side, output pixels (the near side is one less for CARN: 12n + 5)
OUR_RF = {"carn_1x3x64g4sw": 18, "carn_2x3x64g4sw": 30, "carn_3x3x64g4sw": 42, "carn_4x3x64g4sw": 54,
          "carn_3x3x64g4": 42, "carn_3x3x64g1sw": 42, "esrgan_3x64x32": 98}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_parameter_count_matches_seed(name):
    model = build_model(name)
    ours = count_parameters(model)
    print(f"{name:18s} ours {ours:>10,d}  seed {SEED_PARAMETER_COUNTS[name]:>10,d}")
    assert ours == SEED_PARAMETER_COUNTS[name]
    persistent = {k: v for k, v in model.state_dict().items() if k not in dict(model.named_parameters())}
    assert sum(v.numel() for v in persistent.values()) == 21  # mean, std, scale: buffers, not parameters


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_receptive_field_from_layers(name):
    rf = receptive_field(build_model(name))
    print(f"{name:18s} radius {rf.radius_out_px} output px (seed column {SEED_RF[name]}), margin {rf.margin_in_px} input px")
    assert rf.radius_out_px == OUR_RF[name]
    if name.startswith("carn"):
        n = get_config(name).cascades
        assert rf.radius_out_px - 1 == 12 * n + 5  # near side: the seed's 12n + 5
    assert rf.margin_in_px == -(-rf.radius_out_px // 2)


def _slim(name):
    """Same depth and kernels, a few channels: the receptive field does not depend on width."""
    cfg = get_config(name)
    cfg = replace(cfg, features=4) if isinstance(cfg, CARNConfig) else replace(cfg, features=8, growth=4)
    return build_model_from_config(cfg)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_receptive_field_matches_autograd(name):
    model = _slim(name)
    measured, walked = measure_receptive_field(model), receptive_field(model)
    assert (measured.radius_out_px, measured.margin_in_px) == (walked.radius_out_px, walked.margin_in_px)


def test_default_receptive_field_matches_autograd_full_width():
    model = build_model("carn_3x3x64g4sw")
    measured = measure_receptive_field(model)
    assert (measured.radius_out_px, measured.margin_in_px) == (42, 21)


def test_global_skip_alone_has_bicubic_support():
    model = build_model("carn_1x3x64g4sw", zero_init_last=True)
    x = torch.rand(1, 10, 12, 12) * 3000
    ref = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("skip", [True, False])
def test_scripted_equals_eager(name, skip):
    torch.manual_seed(0)
    model = build_model(name, global_skip=skip).eval()
    scripted = script(model)
    x = torch.rand(2, 10, 20, 17) * 4000
    with torch.no_grad():
        eager, out = model(x), scripted(x)
    assert eager.shape == (2, 10, 40, 34)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-3)


def test_script_survives_a_freed_builtin_at_an_attributes_address():
    """torch keeps a freed op's id among its builtins (an op packet refreshed): a conv's padding
    list allocated at that address made ``torch.jit.script`` fail at random in CI."""
    model = build_model("carn_1x3x64g4sw").eval()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.padding_mode != "zeros")
    freed = [*conv._reversed_padding_repeated_twice]
    address = id(freed)
    torch.jit._builtins._register_builtin(freed, "aten::pad")  # what a packet refresh leaves behind
    del freed
    padding = [*conv._reversed_padding_repeated_twice]  # CPython's free list hands the freed list out again
    if id(padding) != address:
        torch.jit._builtins._get_builtin_table().pop(address)
        pytest.skip("this Python did not reuse the freed list's address")
    conv._reversed_padding_repeated_twice = padding
    try:
        with pytest.raises(RuntimeError, match="builtin cannot be used as a value"):
            torch.jit.script(model)
        x = torch.rand(1, 10, 16, 16) * 4000
        with torch.no_grad():
            torch.testing.assert_close(script(model)(x), model(x), rtol=1e-5, atol=1e-3)
    finally:
        torch.jit._builtins._get_builtin_table().pop(address, None)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'carn_9x9'.*carn_3x3x64g4sw"):
        build_model("carn_9x9")


def test_rrdbnet_rejects_non_power_of_two():
    from s2sr.training.models import RRDBNet

    with pytest.raises(ValueError, match="powers of 2"):
        RRDBNet(RRDBConfig(factor=3))
