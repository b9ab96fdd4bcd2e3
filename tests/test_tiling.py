"""Seam-free tiling: the UDF inside an emulation of the backend's apply_neighborhood (windows
with overlap, NaN past the cube's edges, the 2x result cropped by 2 x overlap, stitched)
reassembles to the whole-scene result."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2sr.deploy.neighborhood import apply_neighborhood
from s2sr.engine.coords import fine_axis
from s2sr_testing import chunking_vs_own_error, flat_swir, make_cube, run_local

TOL_REFLECTANCE = 1e-5  # |chunked - whole| everywhere, in reflectance (DN / 10000)


def _chunked(udf_code, cube, ctx, size, overlap, coord_dtype=np.float64):
    process = lambda window: run_local(udf_code, window, {**ctx, "overlap": overlap})  # noqa: E731
    return apply_neighborhood(cube, process, size=size, overlap=overlap, coord_dtype=coord_dtype)


def _assert_same(chunked, whole):
    assert chunked.shape == whole.shape
    a, b = chunked.values, whole.values
    assert np.array_equal(np.isnan(a), np.isnan(b)), "no-data differs between chunked and whole runs"
    diff = np.nanmax(np.abs(a - b)) / 10000.0 if np.isfinite(b).any() else 0.0
    assert diff <= TOL_REFLECTANCE, f"max |chunked - whole| = {diff:.2e} reflectance"
    assert np.array_equal(chunked.x.values, whole.x.values) and np.array_equal(chunked.y.values, whole.y.values)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ny=st.integers(20, 70), nx=st.integers(20, 70), size=st.integers(12, 40), extra_overlap=st.integers(0, 6),
    holes=st.lists(st.tuples(st.integers(0, 69), st.integers(0, 69), st.integers(1, 12), st.integers(0, 9)), max_size=3),
    seed=st.integers(0, 2**16), snow=st.booleans(),
)
def test_chunks_reassemble_to_whole_scene(udf_code, slim_weights, slim_overlap, ny, nx, size, extra_overlap, holes, seed, snow):
    cube = make_cube(ny, nx, seed=seed)
    if snow:  # flat SWIR: the cap on its detail at work (test_swir_cap.py)
        cube = flat_swir(cube, seed)
    for y, x, n, band in holes:  # no-data patches, some crossing window borders
        cube.values[0, band, y:y + n, x:x + n] = np.nan
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    whole = run_local(udf_code, cube, ctx)  # one window, the UDF pads the margin itself
    chunked = _chunked(udf_code, cube, ctx, size, slim_overlap + extra_overlap)
    _assert_same(chunked, whole)


def test_default_weights_two_by_two_windows(udf_code):
    """The shipped model, a scene cut into 2 x 2 windows with the model's own margin: the FP32
    contract, and on the default path (``auto``, which may pick a reduced precision: int8_dynamic
    on ncnn, bf16) a chunked run as close to FP32 as the whole one, no-data identical.

    On a reduced precision the two runs are two roundings of one function, not one: ncnn's
    Winograd tiles start at each window's origin, so float32 sums differ by ~1e-6 between
    chunkings, which flips int8 (or bf16) roundings that sat on a tie, and the flips carry on
    through the network.  Measured with the shipped weights (int8_dynamic on ncnn, Zen 4), over
    four seeded cubes: seams 9.7-12.1 DN against 9.7-12.9 DN from FP32 for either run (this cube:
    11.9 against 10.3 and 9.9).  A chunk with wrong scales or a shifted grid is off by far more."""
    from s2sr import engine
    from s2sr.udf import default_weights_path

    margin = engine.read_metadata(default_weights_path())["margin"]
    cube = make_cube(40, 36, seed=11)
    cube.values[0, 4, 18:23, 15:21] = np.nan
    fp32 = {"precision": "fp32"}
    whole = run_local(udf_code, cube, fp32)
    _assert_same(_chunked(udf_code, cube, fp32, 20, margin), whole)
    seams, whole_error, chunked_error = chunking_vs_own_error(udf_code, cube, {}, margin, detail=True)
    assert chunked_error <= 1.5 * whole_error  # chunking costs no accuracy
    assert seams <= 1.5 * max(whole_error, chunked_error)  # the two roundings differ by about one error


def test_seams_exact_with_the_swir_cap_at_work(udf_code, slim_weights, slim_overlap):
    """Flat SWIR (the cap scales the detail down nearly everywhere) and no-data across window
    borders, at exactly the overlap the model needs (its margin, the cap's reach, the fill's):
    the stitched windows equal the whole scene.  (That the reach is enough: test_swir_cap.py.)"""
    cube = flat_swir(make_cube(44, 40, seed=4), seed=4)
    cube.values[0, 8, 18:23, 17:23] = np.nan  # B11, across the borders of the 20 px windows
    cube.values[0, 2, 1:4, 30:36] = np.nan
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    whole = run_local(udf_code, cube, ctx)
    _assert_same(_chunked(udf_code, cube, ctx, 20, slim_overlap), whole)
    raw = run_local(udf_code, cube, {**ctx, "swir_cap": 0})
    assert np.nanmean(np.abs(raw.values[0, 8:] - whole.values[0, 8:]) > 1.0) > 0.5  # the cap is at work


def test_float32_coordinates_like_backends(udf_code, slim_weights, slim_overlap):
    cube = make_cube(30, 30, seed=1)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    chunked = _chunked(udf_code, cube, ctx, 16, slim_overlap, coord_dtype=np.float32)
    assert np.array_equal(chunked.x.values, fine_axis(cube.x.values, 2, "x", None))
    _assert_same(chunked, run_local(udf_code, cube, ctx))


def test_too_small_overlap_shows_seams(udf_code, slim_weights, slim_overlap):
    """The comparison is not vacuous: with an overlap of 2 px, tiles disagree at seams.

    (Whether the margin is large enough is the receptive-field tests' job: autograd shows
    that no input beyond the margin moves an output pixel.)"""
    cube = make_cube(40, 40, seed=3)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    whole = run_local(udf_code, cube, ctx)
    chunked = _chunked(udf_code, cube, ctx, 20, 2)
    assert np.nanmax(np.abs(chunked.values - whole.values)) / 10000.0 > 100 * TOL_REFLECTANCE


def test_harness_rejects_inconsistent_coordinates(udf_code, slim_weights, slim_overlap):
    cube = make_cube(24, 24)

    def shifted(window):
        out = run_local(udf_code, window, {"weights": str(slim_weights), "overlap": slim_overlap})
        return out.assign_coords(x=out.x + 2.5)  # a half-pixel shift

    with pytest.raises(ValueError, match="x coordinates off the expected fine grid"):
        apply_neighborhood(cube, shifted, size=12, overlap=slim_overlap)


def test_more_overlap_than_the_model_needs_runs_only_what_it_needs(udf_code, slim_weights, slim_overlap):
    """A window with more overlap than the model needs (the UDP's is the largest shipped model's)
    runs the window less the excess, with the overlap it needs: the kept pixels are those of that
    smaller window, and the excess's output (in the overlap the backend crops) is no-data."""
    extra = 5
    cube = make_cube(64, 60, seed=3)
    ctx = {"weights": str(slim_weights), "precision": "fp32"}
    more = run_local(udf_code, cube, {**ctx, "overlap": slim_overlap + extra}).values
    need = run_local(udf_code, cube.isel(y=slice(extra, -extra), x=slice(extra, -extra)),
                     {**ctx, "overlap": slim_overlap}).values
    ring = np.ones(more.shape, dtype=bool)
    ring[..., 2 * extra:-2 * extra, 2 * extra:-2 * extra] = False
    assert np.isnan(more[ring]).all()
    np.testing.assert_array_equal(more[..., 2 * extra:-2 * extra, 2 * extra:-2 * extra], need)
