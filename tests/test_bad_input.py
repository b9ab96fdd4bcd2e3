"""Every bad input the UDF meets: a clear ValueError naming the problem, or a correct masked
result where that is the right answer.  The README lists these cases."""

import json
import subprocess
import sys
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
    ("int16_from_reflectance", lambda: _cube() / 10000.0, {"scale": 1, "output_dtype": "int16"}, "would be rounded to nothing"),
    ("one_band_in_reflectance", lambda: _values(_cube(), lambda v: v.__setitem__((0, 5), v[0, 5] / 10000.0)), {},
     r"band B06 look like reflectance in \[0, 1\] while the rest"),
    ("one_date_in_reflectance", lambda: _values(_cube(nt=3), lambda v: v.__setitem__(1, v[1] / 10000.0)), {},
     r"on date 2020-06-11.*look like reflectance"),
    ("one_date_in_dn_among_reflectance", lambda: _values(_cube(nt=3) / 10000.0, lambda v: v.__setitem__(2, v[2] * 10000.0)),
     {"scale": 1}, r"band B02 on date 2020-06-12: 256 of 256 values are outside reflectance"),
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


def test_band_labels_as_bytes_are_decoded(udf_module, slim_weights):
    """netCDF char labels arrive as bytes: read as names, shuffled order included."""
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    cube = _cube(seed=12)
    shuffled = cube.isel(bands=[3, 0, 9, 1, 2, 8, 4, 7, 5, 6])
    as_bytes = shuffled.assign_coords(bands=np.array([b.encode() for b in shuffled.bands.values], dtype="S3"))
    np.testing.assert_array_equal(udf_module["apply_datacube"](as_bytes, ctx).values,
                                  udf_module["apply_datacube"](shuffled, ctx).values)


def test_a_rioxarray_cube_keeps_its_crs(udf_module, slim_weights):
    cube = _cube(seed=1).assign_coords(spatial_ref=xarray.DataArray(0, attrs={"crs_wkt": "EPSG:32618", "spatial_ref": "EPSG:32618"}))
    out = udf_module["apply_datacube"](cube, {"weights": str(slim_weights), "precision": "fp32"})
    assert "spatial_ref" in out.coords and out.spatial_ref.attrs["crs_wkt"] == "EPSG:32618"


def _two_weights(tmp_path, slim_weights):
    """Two different weights of the same size (same architecture, other seeds)."""
    from s2sr_testing import export_slim

    a, b = export_slim(tmp_path / "a.pt", seed=1), export_slim(tmp_path / "b.pt", seed=2)
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return a, b


def test_the_cache_never_serves_a_file_that_changed(udf_module, slim_weights, tmp_path):
    """Weights rewritten in place with the same size and the old mtime: the new ones run, and a
    manifest that no longer matches is checked again."""
    import os
    import shutil

    a, b = _two_weights(tmp_path, slim_weights)
    target = tmp_path / "w" / "m.pt"
    target.parent.mkdir()
    shutil.copy(a, target)
    ctx = {"weights": str(target), "precision": "fp32", "runtime": "torch"}
    cube = _cube(seed=6)
    first = udf_module["apply_datacube"](cube, ctx).values
    stat = target.stat()
    shutil.copy(b, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    expected = udf_module["apply_datacube"](cube, {**ctx, "weights": str(b)}).values
    assert np.array_equal(udf_module["apply_datacube"](cube, ctx).values, expected) and not np.array_equal(expected, first)
    (target.parent / "manifest.json").write_text(json.dumps(
        {"default": "m", "models": {"m": {"file": "m.pt", "sha256": engine.sha256_file(a)}}}))
    with pytest.raises(ValueError, match="fails its checksum"):
        udf_module["apply_datacube"](cube, ctx)


@pytest.mark.parametrize("manifest", [[], {"models": []}, {"models": {"m": "m.pt"}}, {"models": {"m": {"file": "m.pt"}}}])
def test_a_manifest_of_the_wrong_shape_is_a_clear_error(udf_module, slim_weights, tmp_path, manifest):
    import shutil

    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copy(slim_weights, folder / "m.pt")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest .* has the wrong shape"):
        udf_module["apply_datacube"](_cube(), {"weights": str(folder / "m.pt")})


def test_a_weights_zip_whose_crc_fails_is_refused(udf_module, slim_weights, tmp_path):
    """A flipped byte inside a stored tensor: the zip's CRC says so before torch reads it."""
    data = bytearray(slim_weights.read_bytes())
    with zipfile.ZipFile(slim_weights) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor, stored
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0xFF
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its CRC check"):
        udf_module["apply_datacube"](_cube(), {"weights": str(path)})


# --------------------------------------------------------------------------- memory

OOM_SCRIPT = """
import resource, sys
import numpy as np
from s2sr import engine
context = {"weights": sys.argv[1], "precision": "fp32", "runtime": "torch", "threads": 1}
module, meta, device = engine.load_model(context)
engine.superresolve(np.full((1, 10, 64, 64), 1000, np.float32), module, meta, context)  # warm: lazy allocations done
window = np.full((1, 10, 1200, 1200), 1000, np.float32)
status = open("/proc/self/status").read().split("VmSize:")[1].split()
resource.setrlimit(resource.RLIMIT_AS, (int(status[0]) * 1024 + 200 * 2**20, resource.RLIM_INFINITY))
try:
    engine.superresolve(window, module, meta, context)
except MemoryError as exc:
    print("MemoryError:", exc)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the address-space limit and /proc are Linux's")
def test_running_out_of_memory_names_the_window_and_what_lowers_it(slim_weights):
    """A real allocation failure: a 1200 px window in a process allowed 200 MB more address space."""
    done = subprocess.run([sys.executable, "-c", OOM_SCRIPT, str(slim_weights)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip()
    assert line.startswith("MemoryError: out of memory super-resolving a 1200 x 1200 px window"), line
    for key in ("apply_neighborhood size", "'batch'", "'precision'", "'runtime'"):
        assert key in line, key


def test_a_runtime_allocation_failure_is_named_too(slim_weights):
    """Torch's own allocator failing inside the network (its RuntimeError) becomes the same
    MemoryError; other runtime errors pass unchanged."""
    meta = engine.read_metadata(slim_weights)
    values = make_cube(40, 40).values

    def greedy(x):  # asks torch's CPU allocator for 4 TiB
        return torch.empty((x.shape[0], 1 << 40), dtype=torch.float32)

    with pytest.raises(MemoryError, match=r"out of memory super-resolving a 40 x 40 px window .*'batch'") as info:
        engine.superresolve(values.copy(), greedy, meta, {})
    assert "DefaultCPUAllocator" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)

    def broken(x):
        raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="^shapes do not match$"):
        engine.superresolve(values.copy(), broken, meta, {})
