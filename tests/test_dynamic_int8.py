"""The dynamic int8 path (``precision: "int8_dynamic"``): the trunk's convs quantized at load from
the float weights, each activation quantized over its own range per call (it cannot clip).
Its arithmetic against a float emulation, head and tail kept float, the error against FP32, the
chunking contract within its own error, bright targets, and clear errors."""

import logging
import shutil

import numpy as np
import pytest
from s2sr_testing import patch_engine
import torch
from torch import nn

from s2sr.training.export import script
from s2sr import engine
from s2sr_testing import chunking_vs_own_error, cube_with_gap, error_vs_fp32, make_cube, run_local

pytestmark = pytest.mark.skipif(engine.QUANTIZED_ENGINE not in torch.backends.quantized.supported_engines,
                                reason="torch without the oneDNN quantized engine")


class _Net(nn.Module):
    """head (10 bands in) -> two grouped trunk convs summed -> LeakyReLU -> tail (10 bands out)."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.tail = nn.Conv2d(10, 32, 3, padding=1), nn.Conv2d(32, 10, 1)
        self.trunk = nn.ModuleList([nn.Conv2d(32, 32, 3, padding=1, groups=4) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        y = self.trunk[0](nn.functional.leaky_relu(h, 0.2)) + self.trunk[1](h)  # two ranges, one sum
        return self.tail(nn.functional.leaky_relu(y, 0.2))


def _fake_quant(conv: nn.Conv2d, h: torch.Tensor, levels: int) -> torch.Tensor:
    """``conv`` with its input and weights rounded as the int8 path does, in float."""
    lo, hi = min(float(h.min()), 0.0), max(float(h.max()), 0.0)
    scale = (hi - lo) / levels
    zero = round(-lo / scale)
    hq = (torch.clamp(torch.round(h / scale) + zero, 0, levels) - zero) * scale
    ws = conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    return nn.functional.conv2d(hq, torch.round(conv.weight / ws) * ws, conv.bias, padding=1, groups=4)


def _fake_quant_trunk(net: _Net, x: torch.Tensor, levels: int) -> torch.Tensor:
    h = net.head(x)
    y = _fake_quant(net.trunk[0], nn.functional.leaky_relu(h, 0.2), levels) + _fake_quant(net.trunk[1], h, levels)
    return net.tail(nn.functional.leaky_relu(y, 0.2))


@pytest.mark.parametrize("levels", [127, 255])
def test_int8_arithmetic_is_the_float_emulation(levels):
    if levels == 255 and not engine.int8_products_exact():
        pytest.skip("this CPU saturates 8-bit int8 products (no VNNI): the UDF uses 7 bits here")
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(1, 10, 24, 20)
    quantized = engine.dynamic_int8(script(net), bands=10, levels=levels)
    with torch.no_grad():
        got, want, exact = quantized(x), _fake_quant_trunk(net, x, levels), net(x)
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    assert float((got - exact).abs().max()) > 1e-4 * float(exact.abs().max())  # it really is quantized
    assert [n.kind() for n in quantized.graph.nodes()].count("onednn::qconv2d_pointwise") == 2


def test_only_the_trunks_3x3_convs_are_quantized(slim_weights):
    module = torch.jit.load(str(slim_weights)).eval()
    frozen = torch.jit.freeze(module)
    convs = [n.inputsAt(1).toIValue().shape for n in frozen.graph.nodes() if n.kind() == "aten::conv2d"]
    quantized = engine.dynamic_int8(module, bands=10, levels=127)
    kept = [n.inputsAt(1).toIValue().shape for n in quantized.graph.nodes() if n.kind() == "aten::conv2d"]
    # head (10 bands in) and tail (10 bands out) stay float32: the radiometry is never rounded;
    # the 1 x 1 convs too: they read the residual stream's wide sums
    assert kept == [w for w in convs if 10 in w[:2] or tuple(w[2:]) == (1, 1)]
    n_int8 = [n.kind() for n in quantized.graph.nodes()].count("onednn::qconv2d_pointwise")
    assert n_int8 == len(convs) - len(kept) > 0


@pytest.fixture(scope="module")
def cube():
    return cube_with_gap(44, 40, 31, 3, slice(5, 9), slice(20, 26))


def test_close_to_fp32_nodata_identical(udf_code, slim_weights, cube):
    err = error_vs_fp32(udf_code, cube, {"weights": str(slim_weights), "runtime": "torch"}, "int8_dynamic")
    assert 0 < err < 0.05  # a different path, bounded (reflectance)


def test_chunking_within_the_sum_of_its_errors(udf_code, slim_weights, slim_overlap, cube):
    """Weaker than the other paths' contract, and why ``auto``'s table
    (src/s2sr/engine/auto_choices.json, Zen 3) runs int8_dynamic on ncnn, whose per-pixel scales
    follow no chunking, and not on torch: here each chunk quantizes over its own activation
    ranges, so a pixel's rounding differs between chunkings, and the two errors can point in
    opposite directions (measured: 18.4 DN between chunkings against 12.7 and 14.4 DN from FP32).
    Bounded by their sum, and no chunking is worse."""
    ctx = {"weights": str(slim_weights), "precision": "int8_dynamic", "runtime": "torch"}
    seams, whole_error, chunked_error = chunking_vs_own_error(udf_code, cube, ctx, slim_overlap, detail=True)
    assert seams <= whole_error + chunked_error
    assert chunked_error <= 2 * whole_error  # chunks quantize over their own ranges: no less accurate


def test_a_bright_target_is_not_clipped(udf_code, slim_weights):
    """A roof 3x brighter than anything else in the window: the activation ranges follow it."""
    c = make_cube(40, 40, seed=3)
    c.values[0, :, 18:21, 18:21] = 3 * float(np.nanmax(c.values))
    ctx = {"weights": str(slim_weights), "runtime": "torch"}
    fp32 = run_local(udf_code, c, {**ctx, "precision": "fp32"}).values
    dyn = run_local(udf_code, c, {**ctx, "precision": "int8_dynamic"}).values
    roof = (Ellipsis, slice(36, 42), slice(36, 42))
    assert np.abs(dyn[roof] - fp32[roof]).max() < 0.03 * np.abs(fp32[roof]).max()


def test_seven_bits_where_int8_sums_saturate(udf_module, slim_weights, tmp_path, monkeypatch, caplog):
    """8-bit activations where the CPU sums int8 products exactly (VNNI), 7 bits where it saturates."""
    cases = [(engine.int8_products_exact(), "real")]
    if cases[0][0]:
        cases.append((False, "forced"))  # a VNNI CPU runs the 7-bit graph too; the reverse would saturate
    for exact, name in cases:
        shutil.copy(slim_weights, tmp_path / f"{name}.pt")  # a fresh path: loaded anew
        patch_engine(monkeypatch, "int8_products_exact", lambda exact=exact: exact)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="s2sr.engine"):
            engine.load_model({"weights": str(tmp_path / f"{name}.pt"), "precision": "int8_dynamic", "runtime": "torch"})
        assert f"dynamic int8 with {8 if exact else 7}-bit activations" in caplog.text


def test_clear_errors(udf_module, slim_weights, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="'int8_dynamic' runs on the CPU only"):
        engine.choose_path(slim_weights, "int8_dynamic", "cuda")
    shutil.copy(slim_weights, tmp_path / "broken.pt")

    def broken(*args, **kwargs):
        raise RuntimeError("no int8 kernels")

    patch_engine(monkeypatch, "dynamic_int8", broken)
    with pytest.raises(ValueError, match=r"'int8_dynamic' is unavailable .*no int8 kernels.*use precision 'fp32'"):
        engine.load_model({"weights": str(tmp_path / "broken.pt"), "precision": "int8_dynamic", "runtime": "torch"})

