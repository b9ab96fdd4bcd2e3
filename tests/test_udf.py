"""The UDF as backends run it: run_code (plain Python) and the Python-Jep call, metadata,
coordinates, nodata, bands, dates."""

import numpy as np
import pytest

import xarray
from hypothesis import given, settings
from hypothesis import strategies as st
from openeo.metadata import CollectionMetadata

from s2sr import engine
from s2sr_testing import make_cube, patch_engine, run_jep, run_local


def test_udf_is_a_thin_adapter_over_the_engine(udf_code):
    """The UDF text imports only what every openEO worker has; the engine comes from the s2sr
    package (the dependency archive or an install); no torch at the top, no __future__ import."""
    imports = [line.split()[1] for line in udf_code.splitlines() if line.startswith(("import ", "from "))]
    roots = {name.split(".")[0] for name in imports}
    assert roots <= {"os", "sys", "numpy", "xarray", "openeo"}, roots
    assert "from __future__" not in udf_code
    assert len(udf_code.splitlines()) <= 300


def test_apply_metadata_needs_neither_torch_nor_the_weights(udf_code, tmp_path):
    """In a fresh process, as a backend's executor runs it: the factor comes from the context,
    the weights' metadata only cross-checks it where they are found; torch is not imported."""
    import subprocess
    import sys

    script = f"""
import sys
code = open({str(tmp_path / "udf.py")!r}).read()
from openeo.metadata import CollectionMetadata
md = CollectionMetadata({{"cube:dimensions": {{"x": {{"type": "spatial", "axis": "x", "step": 10.0, "reference_system": 32631}},
                                            "y": {{"type": "spatial", "axis": "y", "step": 10.0, "reference_system": 32631}},
                                            "t": {{"type": "temporal"}}}}}})
for context in ({{}}, {{"weights_dir": "/nonexistent", "model": "nowhere", "factor": 4}}):
    scope = {{}}
    exec(code, scope)
    steps = [d.step for d in scope["apply_metadata"](md, context).spatial_dimensions]
    print(steps)
print("torch" in sys.modules)
"""
    (tmp_path / "udf.py").write_text(udf_code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[5.0,", "5.0]", "[2.5,", "2.5]", "False"]


def test_the_dependency_archive_folder_goes_on_sys_path(udf_code, tmp_path, monkeypatch):
    import sys

    (tmp_path / "s2sr_deps").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(udf_code, {})
    scope = {}
    exec(udf_code, scope)
    scope["apply_metadata"].__globals__["_dependency_path"]()
    assert sys.path[0] == str(tmp_path / "s2sr_deps") and sys.path.count(str(tmp_path / "s2sr_deps")) == 1


def test_run_code_default_context(udf_code):
    cube = make_cube(32, 40)
    out = run_local(udf_code, cube, {})
    assert out.dims == cube.dims and out.shape == (1, 10, 64, 80)
    assert list(out.bands.values) == list(cube.bands.values)
    assert np.array_equal(out.t.values, cube.t.values)
    assert np.isfinite(out.values).all()


def test_jep_call_path(udf_module, slim_weights):
    cube = make_cube(24, 24, nt=2)
    out = run_jep(udf_module, cube, {"weights": str(slim_weights), "precision": "fp32"})
    assert out.shape == (2, 10, 48, 48) and out.dims == ("t", "bands", "y", "x")
    assert np.array_equal(out.t.values, cube.t.values) and np.isfinite(out.values).all()


def test_both_runtimes_agree(udf_code, udf_module, slim_weights):
    cube = make_cube(24, 30, nt=2, seed=3)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    np.testing.assert_allclose(run_jep(udf_module, cube, ctx).values, run_local(udf_code, cube, ctx).values, rtol=1e-5, atol=1e-2)


def test_coordinates_from_pixel_edges(udf_code, slim_weights):
    cube = make_cube(20, 26)
    out = run_local(udf_code, cube, {"weights": str(slim_weights), "precision": "fp32"})
    x_edge, y_edge = 435730.0, 4179460.0
    assert np.array_equal(out.x.values, x_edge + (np.arange(52) + 0.5) * 5.0)
    assert np.array_equal(out.y.values, y_edge - (np.arange(40) + 0.5) * 5.0)
    # every 10 m centre is the midpoint of the 2 x 2 block of 5 m centres it covers
    assert np.array_equal(out.x.values.reshape(-1, 2).mean(axis=1), cube.x.values)
    assert np.array_equal(out.y.values.reshape(-1, 2).mean(axis=1), cube.y.values)


def test_float32_backend_coordinates(udf_module, slim_weights):
    cube = make_cube(16, 16)
    cube = cube.assign_coords(x=cube.x.astype(np.float32), y=cube.y.astype(np.float32))
    out = run_jep(udf_module, cube, {"weights": str(slim_weights), "precision": "fp32"})
    assert np.array_equal(out.x.values, 435730.0 + (np.arange(32) + 0.5) * 5.0)


def test_apply_metadata_halves_step(udf_module):
    metadata = CollectionMetadata({
        "cube:dimensions": {
            "x": {"type": "spatial", "axis": "x", "step": 10, "reference_system": 32631},
            "y": {"type": "spatial", "axis": "y", "step": 10, "reference_system": 32631},
            "t": {"type": "temporal"},
            "band": {"type": "bands", "values": ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]},
        }
    })
    out = udf_module["apply_metadata"](metadata, {})
    assert [d.step for d in out.spatial_dimensions] == [5.0, 5.0]
    assert out.band_dimension.name == "band" and out.band_dimension.band_names == metadata.band_dimension.band_names


def test_apply_metadata_names_missing_bands(udf_module):
    metadata = CollectionMetadata({"cube:dimensions": {
        "x": {"type": "spatial", "axis": "x", "step": 10}, "y": {"type": "spatial", "axis": "y", "step": 10},
        "bands": {"type": "bands", "values": ["B02", "B03", "B04"]}}})
    with pytest.raises(ValueError, match="lacks bands .*B08"):
        udf_module["apply_metadata"](metadata, {})


def test_cube_without_time_and_band_dim_named_band(udf_module, slim_weights):
    # (run_code's execute_local_udf only transposes a dim called "bands", so call the entry
    # point directly, with a bare DataArray, as a caller outside the openEO runner would)
    cube = make_cube(16, 18, time=False, band_dim="band")
    out = udf_module["apply_datacube"](cube, {"weights": str(slim_weights), "precision": "fp32"})
    assert isinstance(out, xarray.DataArray)
    assert out.dims == ("band", "y", "x") and out.shape == (10, 32, 36)


def test_band_order_is_by_name(udf_code, slim_weights):
    cube = make_cube(16, 16, seed=4)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    ref = run_local(udf_code, cube, ctx)
    shuffled = cube.isel(bands=[9, 2, 0, 5, 1, 3, 8, 7, 6, 4])
    shuffled = shuffled.assign_coords(bands=[b.replace("B0", "B") for b in shuffled.bands.values])  # aliases: B2 == B02
    out = run_local(udf_code, shuffled, ctx)
    assert list(out.bands.values) == list(shuffled.bands.values)
    np.testing.assert_allclose(out.values, ref.isel(bands=[9, 2, 0, 5, 1, 3, 8, 7, 6, 4]).values, rtol=1e-6, atol=1e-3)


def test_dates_are_independent_and_batched(udf_code, slim_weights):
    cube = make_cube(16, 16, nt=3, seed=7)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    full = run_local(udf_code, cube, {**ctx, "batch": 2})
    for t in range(3):
        single = run_local(udf_code, cube.isel(t=[t]), ctx)
        np.testing.assert_allclose(full.isel(t=[t]).values, single.values, rtol=1e-5, atol=1e-2)


def test_nodata_stays_nodata_and_does_not_bleed(udf_code, slim_weights):
    cube = make_cube(32, 32, seed=2)
    holes = cube.copy()
    holes.values[0, 3, 10:14, 5:9] = np.nan  # one band only
    holes.values[0, :, 20, 20] = np.nan  # all bands, one pixel
    out = run_local(udf_code, holes, {"weights": str(slim_weights), "precision": "fp32"}).values
    expected = np.isnan(holes.values).repeat(2, axis=-2).repeat(2, axis=-1)
    assert np.array_equal(np.isnan(out), expected)


def test_nodata_value_and_int16_output(udf_code, udf_module, slim_weights):
    cube = make_cube(16, 16, seed=5)
    cube.values[0, :, 0, 0] = -10000
    ctx = {"weights": str(slim_weights), "nodata": -10000, "output_dtype": "int16"}
    out = run_local(udf_code, cube, ctx)
    assert out.dtype == np.float32  # through XarrayDataCube (what the runtimes read): int16 values in float32
    assert udf_module["apply_datacube"](cube, ctx).dtype == np.int16  # a bare DataArray caller gets int16
    values = out.values
    assert (values[0, :, :2, :2] == -10000).all()
    assert (values[0, :, 2:, 2:] != -10000).all() and np.array_equal(values, np.rint(values))


def test_int16_conversion_rounds_clips_and_marks_nodata(udf_module):
    out = np.array([1.4, 1.6, -2.5, 40000.0, -40000.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    assert engine.to_int16(out).tolist() == [1, 2, -2, 32767, -9999, -10000, -10000, -10000]


def test_one_pass_output_equals_the_cropped_paths_with_nodata(udf_module, slim_weights, slim_overlap):
    """With the margin's overlap in the window and all dates in one pass, the network's output is
    the UDF's output as it is (no crop, no copy); it must equal date-by-date passes, and the UDF
    padding the window itself on the pixels the padding cannot reach, no-data included."""
    m = slim_overlap
    cube = make_cube(20 + 2 * m, 22 + 2 * m, nt=2, seed=11)
    cube.values[1] = np.nan  # a whole date of no-data in the same pass
    cube.values[0, 4, m + 3:m + 6, m + 2] = np.nan
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    one_pass = udf_module["apply_datacube"](cube, {**ctx, "overlap": m, "batch": 2}).values
    by_date = udf_module["apply_datacube"](cube, {**ctx, "overlap": m, "batch": 1}).values
    padded = udf_module["apply_datacube"](cube, {**ctx, "overlap": 0, "batch": 2}).values
    assert np.isnan(one_pass[1]).all() and np.array_equal(np.isnan(one_pass), np.isnan(by_date))
    np.testing.assert_allclose(one_pass, by_date, rtol=0, atol=1e-5 * 10000)
    inner = (Ellipsis, slice(2 * m, -2 * m), slice(2 * m, -2 * m))
    assert np.array_equal(np.isnan(one_pass[inner]), np.isnan(padded[inner]))
    np.testing.assert_allclose(one_pass[inner], padded[inner], rtol=0, atol=1e-5 * 10000)


@settings(max_examples=150, deadline=None)
@given(t=st.integers(1, 2), h=st.integers(1, 60), w=st.integers(1, 60), pad=st.integers(0, 5),
       margin=st.integers(0, 12), seed=st.integers(0, 2**16), density=st.floats(0.0, 0.2))
def test_valid_extent_holds_every_valid_pixels_receptive_field(udf_module, t, h, w, pad, margin, seed, density):
    """Every valid pixel lies ``margin`` or more inside the extent (or the extent reaches the
    padded window's edge), the extent stays in the window, and is the net's smallest input or more."""
    rng = np.random.default_rng(seed)
    valid = rng.random((t, 2, h, w)) < density
    valid[rng.integers(t), rng.integers(2), rng.integers(h), rng.integers(w)] = True  # one at least
    rows, cols = engine.valid_extent(valid, pad, margin)
    n_min = engine.runtimes.MIN_NET_SIZE
    for span, axis, n in ((rows, (0, 1, 3), h), (cols, (0, 1, 2), w)):
        idx = np.flatnonzero(valid.any(axis=axis)) + pad
        assert 0 <= span.start < span.stop <= n + 2 * pad
        assert span.start == 0 or span.start <= idx[0] - margin
        assert span.stop == n + 2 * pad or span.stop >= idx[-1] + 1 + margin
        assert span.stop - span.start >= min(n_min, n + 2 * pad)
        # no wider than it needs: the margin box, or the smallest input
        assert span.stop - span.start <= max(idx[-1] + 1 - idx[0] + 2 * margin, n_min)


def test_a_window_over_the_scene_edge_computes_only_the_scene(udf_module, slim_weights, slim_overlap, monkeypatch):
    """Backends fill a window past the scene's edge with no-data: the network then runs on the
    valid part and its margin only, with the same output as on the whole window (FP32 contract)
    and no-data where the input was."""
    m = slim_overlap
    cube = make_cube(40 + 2 * m, 36 + 2 * m, nt=2, seed=13)
    cube.values[:, :, 30 + m:] = np.nan  # the scene ends below row 30 + m ...
    cube.values[:, :, :, :m + 12] = np.nan  # ... and starts at column m + 12
    cube.values[1, 3, 5, 20] = np.nan  # a hole inside
    module, meta, _ = engine.load_model({"weights": str(slim_weights), "precision": "fp32", "runtime": "torch"})
    shapes = []

    def recording(x):
        shapes.append(tuple(x.shape))
        return module(x)

    values = cube.values.astype(np.float32)
    ctx = {"overlap": m, "batch": 2}
    cropped = engine.superresolve(values.copy(), recording, meta, ctx)
    mm = meta["margin"] + engine.CAP_REACH  # the receptive field's, then the SWIR cap's: what the valid pixels need
    assert shapes == [(2, 10, 30 + m + mm, 24 + m + mm)]  # the rows and columns the valid pixels need
    whole_extent = lambda valid, pad, margin: (slice(0, valid.shape[2] + 2 * pad), slice(0, valid.shape[3] + 2 * pad))  # noqa: E731
    patch_engine(monkeypatch, "valid_extent", whole_extent)
    whole = engine.superresolve(values.copy(), module, meta, ctx)
    assert np.array_equal(np.isnan(cropped), np.isnan(whole))
    assert np.array_equal(np.isnan(cropped), np.isnan(values).repeat(2, axis=-2).repeat(2, axis=-1))
    np.testing.assert_allclose(cropped, whole, rtol=0, atol=1e-5 * 10000)


def test_all_nodata_window_skips_the_network(udf_module):
    values = np.full((1, 10, 12, 12), np.nan, dtype=np.float32)

    def exploding(_):
        raise AssertionError("the network must not run on an all-nodata window")

    meta = {"factor": 2, "margin": 21, "bands": ["B%02d" % i for i in range(10)],
            "input_scaling": {"scale": 10000.0}, "normalization": {"mean": [0.1] * 10}}
    out = engine.superresolve(values, exploding, meta, {})
    assert out.shape == (1, 10, 24, 24) and np.isnan(out).all()


def test_l1c_offset_and_scale_context(udf_code, slim_weights):
    """The same reflectance given as L2A DN or as L1C baseline-4 DN (+1000) gives the same image."""
    cube = make_cube(16, 16, seed=6)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    l2a = run_local(udf_code, cube, ctx)
    l1c = run_local(udf_code, cube + 1000.0, {**ctx, "offset": -1000})
    np.testing.assert_allclose(l1c.values - 1000.0, l2a.values, rtol=1e-5, atol=1e-2)
    refl = run_local(udf_code, cube / 10000.0, {**ctx, "scale": 1})
    np.testing.assert_allclose(refl.values * 10000.0, l2a.values, rtol=1e-5, atol=1e-2)
