"""Every bad input the UDF meets: a clear ValueError naming the problem, or a correct masked
result where that is the right answer.  The README lists these cases."""

import json
import zipfile

import numpy as np
import pytest
import torch
import xarray

from s2sr.training.bands import BANDS
from s2sr.training.export import build_metadata, script
from s2sr.training.models import build_model_from_config
from s2sr import engine
from s2sr_testing import make_cube, run_local


def _save_with_metadata(path, model, meta):
    torch.jit.save(script(model.eval()), str(path), _extra_files={engine.METADATA_FILE: json.dumps(meta)})
    return path


@pytest.fixture(scope="module")
def slim_model(slim_weights):
    module = torch.jit.load(str(slim_weights))
    return module


def _weights_variant(tmp_path, slim_weights, kind):
    """Broken or mismatched weight files derived from the valid slim export."""
    meta = engine.read_metadata(slim_weights)
    model = torch.jit.load(str(slim_weights))
    path = tmp_path / f"{kind}.pt"
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        path.write_bytes(slim_weights.read_bytes()[: slim_weights.stat().st_size * 6 // 10])
    elif kind == "no_metadata":
        torch.jit.save(model, str(path))
    elif kind == "other_bands":
        _save_with_metadata(path, model, {**meta, "bands": ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10"]})
    elif kind == "wrong_factor":
        _save_with_metadata(path, model, {**meta, "factor": 4})
    elif kind == "format_version":
        _save_with_metadata(path, model, {**meta, "format_version": 99})
    elif kind == "too_few_bands":
        _save_with_metadata(path, model, {**meta, "bands": list(BANDS[:4]), "normalization": {"mean": [0.1] * 4}})
    return path


WEIGHT_CASES = [
    ("corrupt", "corrupt or truncated"),
    ("truncated", "corrupt or truncated"),
    ("no_metadata", "not an s2sr weights file"),
    ("other_bands", r"lacks bands \['B01', 'B09', 'B10'\]"),
    ("wrong_factor", "metadata says factor 4"),
    ("format_version", "format version 99"),
    ("too_few_bands", "does not accept the 4 bands"),
]


@pytest.mark.parametrize("kind,message", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_bad_weights(udf_code, slim_weights, tmp_path, kind, message):
    path = _weights_variant(tmp_path, slim_weights, kind)
    with pytest.raises(ValueError, match=message):
        run_local(udf_code, make_cube(16, 16), {"weights": str(path)})


def _cube(**kw):
    return make_cube(16, 16, **kw)


def _drop_band(name):
    cube = _cube()
    return cube.sel(bands=[b for b in BANDS if b != name])


def _with_extra_band():
    cube = _cube(bands=BANDS + ("B01",))
    return cube


def _unnamed(n):
    cube = _cube(bands=BANDS[:n] if n <= 10 else BANDS + ("B01",))
    return cube.drop_vars("bands")


def _values(cube, fn):
    cube = cube.copy()
    fn(cube.values)
    return cube


CUBE_ERRORS = [
    ("missing_band", lambda: _drop_band("B12"), {}, r"lacks bands \['B12'\]"),
    ("extra_band", _with_extra_band, {}, r"unexpected bands \['B01'\].*filter_bands"),
    ("duplicate_band", lambda: _cube().assign_coords(bands=["B02"] * 2 + list(BANDS[2:])), {}, "duplicate band names"),
    ("unnamed_nine_bands", lambda: _unnamed(9), {}, "9 bands without names"),
    ("non_numeric", lambda: _cube().astype(str), {}, "must hold real numbers"),
    ("complex", lambda: _cube().astype(np.complex64), {}, "must hold real numbers"),
    ("no_y_dim", lambda: _cube().isel(y=0), {}, "needs dimensions 'y' and 'x'"),
    ("extra_dim", lambda: _cube().expand_dims(sensor=["S2A"]), {}, r"must have dimensions \(\[t,\] bands, y, x\)"),
    ("empty_extent", lambda: _cube().isel(y=slice(0, 0)), {}, "empty spatial extent"),
    ("nan_coordinates", lambda: _cube().assign_coords(x=np.r_[np.nan, np.arange(1.0, 16.0)]), {}, "x coordinates hold NaN"),
    ("reflectance_with_dn_scale", lambda: _cube() / 10000.0, {}, "looks like reflectance"),
    ("absurd_band", lambda: _values(_cube(), lambda v: v.__setitem__((0, 8), 60000.0)), {}, "band B11: 256 of 256 values are outside"),
    ("unknown_model", _cube, {"model": "carn_9x9"}, "unknown model 'carn_9x9'.*available models"),
    ("model_name_path", _cube, {"model": "../etc/passwd"}, "invalid model name"),
    ("missing_weights_file", _cube, {"weights": "/nonexistent/w.pt"}, "does not exist"),
    ("unknown_context_key", _cube, {"precison": "fp32"}, r"unknown context keys \['precison'\]"),
    ("unknown_precision", _cube, {"precision": "fp8"}, "unknown precision 'fp8'"),
    ("bad_output_dtype", _cube, {"output_dtype": "uint8"}, "unknown output_dtype 'uint8'"),
    ("unknown_device", _cube, {"device": "tpu"}, "context key 'device' must be 'cpu', 'cuda"),
    ("factor_mismatch", _cube, {"factor": 4}, "context expects factor 4"),
    ("bad_scale", _cube, {"scale": 0}, "context key 'scale' must be a positive number"),
    ("threads_as_text", _cube, {"threads": "4"}, "context key 'threads' must be an integer >= 1, got '4'"),
    ("threads_bool", _cube, {"threads": True}, "context key 'threads' must be an integer"),
    ("overlap_null", _cube, {"overlap": None}, "context key 'overlap' must be an integer >= 0, got None"),
    ("nodata_as_text", _cube, {"nodata": "-10000"}, "context key 'nodata' must be a finite number"),
    ("scale_null", _cube, {"scale": None}, "context key 'scale' must be a positive number"),
    ("scale_nan", _cube, {"scale": float("nan")}, "context key 'scale' must be a positive number"),
    ("zero_resolution", _cube, {"resolution": 0}, "context key 'resolution' must be a positive number"),
    ("context_not_a_dict", _cube, None, None),
]


@pytest.mark.parametrize("name,make,context,message", CUBE_ERRORS, ids=[c[0] for c in CUBE_ERRORS])
def test_bad_cube_or_context(udf_module, slim_weights, name, make, context, message):
    if context is None:  # a context that is no dict at all
        ctx, message = ["fp32"], "the UDF context must be a dict, got list"
    else:
        ctx = {"weights": str(slim_weights), **context} if "model" not in context and "weights" not in context else context
    with pytest.raises(ValueError, match=message):
        udf_module["apply_datacube"](make(), ctx)


# ------------------------------------------------------------------ correct results, not errors

def test_wrong_band_order_is_reordered_by_name(udf_module, slim_weights):
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    cube = _cube(seed=9)
    ref = udf_module["apply_datacube"](cube, ctx)
    rev = udf_module["apply_datacube"](cube.isel(bands=slice(None, None, -1)), ctx)
    np.testing.assert_allclose(rev.isel(bands=slice(None, None, -1)).values, ref.values, rtol=1e-6, atol=1e-3)


def test_unnamed_ten_bands_are_taken_in_model_order(udf_module, slim_weights):
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    cube = _cube(seed=2)
    np.testing.assert_allclose(udf_module["apply_datacube"](cube.drop_vars("bands"), ctx).values,
                               udf_module["apply_datacube"](cube, ctx).values, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("ny,nx", [(48, 48), (3, 3), (2, 9), (1, 5)])
def test_small_windows_are_fine(udf_module, slim_weights, ny, nx):
    cube = make_cube(ny, nx, seed=1)
    out = udf_module["apply_datacube"](cube, {"weights": str(slim_weights), "resolution": 10})
    assert out.shape == (1, 10, 2 * ny, 2 * nx) and np.isfinite(out.values).all()


def test_infinities_and_isolated_absurd_values_are_masked(udf_module, slim_weights):
    cube = _cube(seed=4)
    cube.values[0, 0, 3, 3] = np.inf
    cube.values[0, 5, 7, 8] = -np.inf
    cube.values[0, 2, 10, 1] = 90000.0  # reflectance 9: not physical
    cube.values[0, 3, 12, 12] = -25000.0
    out = udf_module["apply_datacube"](cube, {"weights": str(slim_weights), "precision": "fp32"}).values
    for b, y, x in [(0, 3, 3), (5, 7, 8), (2, 10, 1), (3, 12, 12)]:
        assert np.isnan(out[0, b, 2 * y:2 * y + 2, 2 * x:2 * x + 2]).all()
    assert np.isfinite(out).sum() == out.size - 4 * 4


def test_integer_input_is_accepted(udf_module, slim_weights):
    cube = _cube(seed=3)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    np.testing.assert_allclose(udf_module["apply_datacube"](cube.round().astype(np.uint16), ctx).values,
                               udf_module["apply_datacube"](cube.round(), ctx).values, rtol=1e-6, atol=1e-3)


def test_negative_reflectance_within_physics_is_kept(udf_module, slim_weights):
    cube = _cube(seed=5)
    cube.values[0, 0, :2, :2] = -150.0  # slightly negative surface reflectance (L2A over dark water)
    out = udf_module["apply_datacube"](cube, {"weights": str(slim_weights), "precision": "fp32"})
    assert np.isfinite(out.values).all()
