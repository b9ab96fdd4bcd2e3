"""The cap on the SWIR detail (s2sr.engine.swir_cap): what it changes, what it keeps, how far
it reads, and that windows stitched by the backend still equal the whole scene with it on."""

import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2sr import engine
from s2sr.engine.swir_cap import CAP_REACH, SWIR_CAP_K, bicubic_x2, cap_detail, cap_factor, local_std
from s2sr.training.bands import BANDS
from s2sr_testing import flat_swir, make_cube, run_local

B11, B12 = BANDS.index("B11"), BANDS.index("B12")
OTHERS = [i for i in range(10) if i not in (B11, B12)]


def _torch_bicubic(x: np.ndarray) -> np.ndarray:
    return F.interpolate(torch.from_numpy(x), scale_factor=2.0, mode="bicubic", align_corners=False).numpy()


def _torch_std(x: np.ndarray, k: int) -> np.ndarray:
    t = torch.from_numpy(x)
    mean = F.avg_pool2d(t, k, 1, k // 2, count_include_pad=False)
    return (F.avg_pool2d(t * t, k, 1, k // 2, count_include_pad=False) - mean * mean).clamp_min(0).sqrt().numpy()


@pytest.mark.parametrize("shape", [(1, 2, 7, 9), (2, 10, 16, 5)])
def test_bicubic_and_local_std_equal_torch(shape):
    """The numpy ops (the engine runs where torch is absent) against PyTorch's own, borders included."""
    x = np.random.default_rng(0).normal(size=shape)
    np.testing.assert_allclose(bicubic_x2(x), _torch_bicubic(x), atol=1e-12)
    for k in (3, 5):
        np.testing.assert_allclose(local_std(x, k), _torch_std(x, k), atol=1e-12)


def test_flat_swir_input_gets_no_detail_and_other_bands_are_kept():
    rng = np.random.default_rng(0)
    x = (1000 + 300 * rng.random((1, 10, 16, 16))).astype(np.float32)
    x[0, B11] = 500.0  # a flat band: no contrast of its own
    y = (_torch_bicubic(x.astype(np.float64)) + 80 * rng.normal(size=(1, 10, 32, 32))).astype(np.float32)
    out = cap_detail(y.copy(), x, BANDS, 2.0)
    np.testing.assert_array_equal(out[:, OTHERS], y[:, OTHERS])  # bit for bit
    np.testing.assert_allclose(out[0, B11], 500.0, atol=1e-3)  # the detail is gone: bicubic of a flat band
    assert out.dtype == y.dtype and out.shape == y.shape


def test_detail_within_the_bands_own_contrast_is_kept_and_beyond_it_is_scaled_down():
    rng = np.random.default_rng(1)
    x = 1000 + 400 * rng.random((1, 10, 16, 16))  # textured: local std ~ 100 DN
    base = _torch_bicubic(x)
    small = base + 5 * rng.normal(size=(1, 10, 32, 32))
    np.testing.assert_array_equal(cap_detail(small.copy(), x, BANDS, SWIR_CAP_K), small)
    large = base + 2000 * rng.normal(size=(1, 10, 32, 32))
    out = cap_detail(large.copy(), x, BANDS, SWIR_CAP_K)
    room = SWIR_CAP_K * np.repeat(np.repeat(_torch_std(x, 3), 2, axis=-2), 2, axis=-1)
    spread = _torch_std(large - base, 5)
    for c in (B11, B12):  # each pixel's detail scaled by room / spread: that local spread brought to the room
        np.testing.assert_allclose((out - base)[0, c], ((large - base) * room / spread)[0, c], rtol=1e-9)
    assert np.array_equal(cap_detail(large.copy(), x, BANDS, 0), large)  # k = 0: no cap


def test_cap_reads_within_its_reach():
    """A change of the network's output at one pixel moves the capped output within 2 output px
    (the detail's 5 x 5), a change of the input within 3 input px (bicubic's 2, then that 5 x 5):
    so an output pixel depends on input up to ``margin + CAP_REACH`` away, for every shipped model."""
    rng = np.random.default_rng(2)
    x = 1000 + 300 * rng.random((1, 10, 24, 24))
    y = _torch_bicubic(x) + 500 * rng.normal(size=(1, 10, 48, 48))
    ref = cap_detail(y.copy(), x, BANDS)
    y2 = y.copy()
    y2[0, B11, 20, 27] += 300.0
    rows, cols = np.nonzero(cap_detail(y2, x, BANDS)[0, B11] != ref[0, B11])
    assert rows.min() >= 18 and rows.max() <= 22 and cols.min() >= 25 and cols.max() <= 29 and rows.size > 1
    x2 = x.copy()
    x2[0, B12, 12, 12] += 300.0
    rows, cols = np.nonzero(cap_detail(y.copy(), x2, BANDS)[0, B12] != ref[0, B12])
    assert rows.min() == cols.min() == 2 * (12 - 3) + 1 and rows.max() == cols.max() == 2 * (12 + 3)
    for path in sorted(engine.package_weights_dir().glob("*.pt")):
        rf = engine.read_metadata(path)["receptive_field"]
        assert math.ceil((rf["radius_out_px"] + 2) / 2) <= rf["margin_in_px"] + CAP_REACH, path.name


def test_required_overlap_counts_the_cap():
    meta = engine.read_metadata(engine.resolve_weights({}))
    assert engine.required_overlap(meta) == meta["margin"] + CAP_REACH + engine.FILL_REACH


def test_context_key_and_its_check(udf_code, slim_weights, slim_overlap):
    """Through the UDF: ``swir_cap`` 0 leaves the network's output, the default caps B11 / B12
    alone; a bad value is a clear error.  Also shows that the slim test model's SWIR detail is
    capped where B11 / B12 are flat, so the seam tests (test_tiling.py) stitch windows with the cap on."""
    cube = flat_swir(make_cube(40, 40, seed=5))
    ctx = {"weights": str(slim_weights), "precision": "fp32", "runtime": "torch"}
    capped = run_local(udf_code, cube, ctx).values
    raw = run_local(udf_code, cube, {**ctx, "swir_cap": 0}).values
    assert np.array_equal(run_local(udf_code, cube, {**ctx, "swir_cap": None}).values, capped)
    np.testing.assert_array_equal(capped[:, OTHERS], raw[:, OTHERS])
    changed = np.abs(capped[:, [B11, B12]] - raw[:, [B11, B12]]) > 1.0  # DN
    assert changed.mean() > 0.5
    assert cap_factor({}) == SWIR_CAP_K and cap_factor({"swir_cap": 3}) == 3.0
    for bad in (-1, "high", float("nan")):
        with pytest.raises(ValueError, match="swir_cap"):
            run_local(udf_code, cube, {**ctx, "swir_cap": bad})


@pytest.mark.parametrize("runtime", ["ncnn", "onnxruntime"])
def test_every_runtime_runs_the_cap(udf_code, slim_weights, runtime, tmp_path):
    """The cap runs after the network, whatever runs it: the same output as torch's in fp32
    (ncnn computes only the pixels the UDF keeps and the cap reads: a narrower field would show)."""
    if runtime == "ncnn" and not engine.ncnn_available():
        pytest.skip("ncnn not installed")
    if runtime == "onnxruntime" and not engine.onnxruntime_available():
        pytest.skip("onnxruntime not installed")
    weights = tmp_path / slim_weights.name
    shutil.copy(slim_weights, weights)
    if runtime == "onnxruntime":
        from s2sr.training.onnx_export import export_onnx

        export_onnx(weights)  # <stem>.onnx beside the weights, as s2sr-export --onnx writes it
    cube = flat_swir(make_cube(36, 36, seed=6))
    ctx = {"weights": str(weights), "precision": "fp32"}
    ref = run_local(udf_code, cube, {**ctx, "runtime": "torch"}).values
    out = run_local(udf_code, cube, {**ctx, "runtime": runtime}).values
    raw = run_local(udf_code, cube, {**ctx, "runtime": runtime, "swir_cap": 0}).values
    assert np.nanmax(np.abs(out - ref)) / 10000 < 1e-5
    assert np.nanmax(np.abs(out[:, [B11, B12]] - raw[:, [B11, B12]])) > 1.0
