"""The UDF as the geopyspark executor runs it (openeo-geotrellis-extensions
``openeo-geotrellis/src/main/scala/org/openeo/geotrellis/udf/Udf.scala``, commit c25f4816:
``runUserCodeSpatioTemporal``, ``setXarraydatacubeInPython``, ``callApplyMetadata``), through
``s2sr.deploy.geopyspark``: in this process (a fresh globals dict per window) and, where the jep
package is installed, in real ``jep.SharedInterpreter``s in a JVM."""

import sys

import numpy as np
import pytest

from s2sr import engine
from s2sr.deploy import geopyspark
from s2sr_testing import make_cube

JEP_MISSING = geopyspark.jep_available()
INTERPRETERS = ["python", pytest.param("jep", marks=pytest.mark.skipif(bool(JEP_MISSING), reason=f"real Jep: {JEP_MISSING}"))]


def _scene(ny=83, nx=71, nt=2, seed=4):
    """A scene that is no multiple of the window (partial keys at the right and bottom edges),
    with a no-data hole across a key border on date 0 and a band missing on date 1."""
    cube = make_cube(ny, nx, nt=nt, seed=seed)
    cube.values[0, :, 30:41, 25:37] = np.nan
    cube.values[1, 4, 5:9, 60:66] = np.nan
    return cube


def test_backend_coordinates_are_float32_and_not_a_regular_10m_grid():
    """The quoted formula, on a 48 px key buffered by 21 px: the overlap counted twice (xdelta
    and overlap_x * gridx), so the step is not 10 m; float32 at UTM magnitudes; the window's
    centre is what it keeps."""
    cube = make_cube(90, 90)
    keys, windows = geopyspark.job_windows(cube, (48, 48), (21, 21))
    interp = geopyspark.PythonInterpreter()
    geopyspark.provide_openeo_driver_errors()
    interp.exec(geopyspark.DEFAULT_IMPORTS)
    for name, value in geopyspark.window_variables(windows[0]).items():
        interp.set(name, value)
    interp.exec(geopyspark.CUBE_COORDS)
    x, y = interp.getValue("coords['x']"), interp.getValue("coords['y']")
    assert x.dtype == np.float32 and y.dtype == np.float32 and x.size == 90 and y.size == 90
    step = (float(x[-1]) - float(x[0])) / (x.size - 1)
    assert abs(step - 10.0 * (48 + 4 * 21 - 1) / (48 + 2 * 21 - 1)) < 0.01  # 14.7 m, not 10
    assert np.ptp(np.diff(y.astype(np.float64))) > 0  # uneven in float32
    true_x = cube.x.values[0] - 21 * 10.0 + np.arange(90) * 10.0  # the key's real pixel centres
    assert abs((float(x[0]) + float(x[-1])) / 2 - true_x.mean()) < 0.05


TOY_UDF = '''
import sys
import numpy as np
import xarray
from openeo.udf import XarrayDataCube

counter = 0
log = sys.modules.setdefault("s2sr_test_persistent", type(sys)("s2sr_test_persistent"))
if not hasattr(log, "events"):
    log.events = []


def apply_metadata(metadata, context):
    log.events.append(("metadata", "data" in globals(), "datacube" in globals()))
    return metadata.resample_spatial(resolution=tuple(d.step / 2 for d in metadata.spatial_dimensions))


def apply_datacube(cube, context):
    global counter
    counter += 1
    log.events.append(("window", counter, dict(context)))
    a = cube.get_array()
    out = np.repeat(np.repeat(a.values, 2, axis=-1), 2, axis=-2).astype(context.get("dtype", "float32"))
    if context.get("drop_t"):
        return XarrayDataCube(xarray.DataArray(out[0], dims=a.dims[1:]))
    return XarrayDataCube(xarray.DataArray(out, dims=a.dims, coords={"t": a.t.values, "bands": a.bands.values}))
'''


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_fresh_globals_per_window_shared_modules_and_metadata_first(interpreter, monkeypatch):
    """A module-level counter starts again in every window; a module in sys.modules persists;
    apply_metadata runs first, alone (no cube in its globals); the context arrives as a dict."""
    cube = make_cube(40, 40, nt=1)
    sys.modules.pop("s2sr_test_persistent", None)
    mosaic, step = geopyspark.run_job(TOY_UDF, cube, (16, 16), (4, 4), {"nested": {"a": 1}, "n": 3},
                                      interpreter=interpreter)
    assert step == (5.0, 5.0)
    expected = np.repeat(np.repeat(cube.values, 2, axis=-1), 2, axis=-2)
    assert np.array_equal(mosaic, expected)
    if interpreter == "python":  # the JVM's modules are its own: the events stay there
        events = sys.modules["s2sr_test_persistent"].events
        assert events[0] == ("metadata", False, False)
        assert [e[1] for e in events[1:]] == [1] * 9  # 3 x 3 keys, each in fresh globals
        assert events[1][2] == {"nested": {"a": 1}, "n": 3}


@pytest.mark.parametrize("context, message", [
    ({"dtype": "float64"}, "does not have dtype == np.float32"),
    ({"drop_t": True}, r"does not have dimensions \(#dates, #bands, #rows, #cols\)"),
])
def test_the_backend_s_output_checks(context, message):
    cube = make_cube(20, 20)
    with pytest.raises(geopyspark.BackendError, match=message):
        geopyspark.run_job(TOY_UDF, cube, (16, 16), (2, 2), context)


def test_a_result_of_the_wrong_size_is_refused():
    code = TOY_UDF.replace("def apply_metadata", "def without_metadata")  # no layout change: same size expected
    assert "apply_metadata" not in code
    with pytest.raises(geopyspark.BackendError, match="does not have the same rows and columns"):
        geopyspark.run_job(code, make_cube(20, 20), (16, 16), (2, 2), {})


def _whole(cube, ctx):
    from s2sr.engine.cube import superresolve_cube

    return superresolve_cube(cube, ctx).values


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_the_shipped_udf_on_a_multi_window_scene_equals_the_whole_scene_run(interpreter, udf_code, slim_weights, slim_overlap):
    """Every key succeeds (the float32, uneven, double-overlap coordinates are accepted), the
    fp32 mosaic equals the whole-scene run exactly, and no-data stays no-data, exactly."""
    cube = _scene()
    ctx = {"weights": str(slim_weights), "precision": "fp32", "runtime": "torch"}
    mosaic, step = geopyspark.run_job(udf_code, cube, (32, 32), (slim_overlap, slim_overlap), {**ctx, "overlap": slim_overlap},
                                      interpreter=interpreter)
    assert step == (5.0, 5.0)
    whole = _whole(cube, ctx)
    assert np.array_equal(np.isnan(mosaic), np.isnan(whole)) and np.isnan(mosaic).any()
    assert np.array_equal(mosaic, whole, equal_nan=True)


def test_ncnn_and_the_default_path_within_their_contract(udf_code, slim_weights, slim_overlap):
    """ncnn's Winograd tiles follow the window: fp32 within 1e-5 of the range of the whole-scene
    run (rounding: 1e-3 DN measured), no-data identical.  The default (auto) path, whatever this
    CPU's choice: its seams within its own error against fp32 (int8 rounding amplifies the fp32
    layers' last-bit differences)."""
    if not engine.ncnn_available():
        pytest.skip("needs the ncnn package")
    cube = _scene(seed=6)
    geometry = dict(size=(32, 32), overlap=(slim_overlap, slim_overlap))
    fp32 = {"weights": str(slim_weights), "precision": "fp32", "runtime": "ncnn"}
    mosaic, _ = geopyspark.run_job(udf_code, cube, context={**fp32, "overlap": slim_overlap}, **geometry)
    whole = _whole(cube, fp32)
    assert np.array_equal(np.isnan(mosaic), np.isnan(whole))
    assert np.nanmax(np.abs(mosaic - whole)) <= 1e-5 * np.nanmax(np.abs(whole))
    default = {"weights": str(slim_weights)}
    mosaic, _ = geopyspark.run_job(udf_code, cube, context={**default, "overlap": slim_overlap}, **geometry)
    whole_default = _whole(cube, default)
    assert np.array_equal(np.isnan(mosaic), np.isnan(whole))
    assert np.nanmax(np.abs(mosaic - whole_default)) <= np.nanmax(np.abs(whole_default - whole)) + 1e-5 * np.nanmax(whole)


def test_one_model_load_and_one_decision_across_fresh_interpreters(udf_code, slim_weights, slim_overlap, fresh_decisions):
    """The caches live in the engine's modules: nine windows in fresh globals load the model
    once and decide ``auto`` once."""
    from s2sr.engine import precision

    precision.load_torch.cache_clear()
    cube = make_cube(60, 60)
    ctx = {"weights": str(slim_weights), "runtime": "torch", "overlap": slim_overlap}
    geopyspark.run_job(udf_code, cube, (20, 20), (slim_overlap, slim_overlap), ctx)
    info = precision.load_torch.cache_info()
    assert info.misses == 1 and info.hits >= 9
    assert len(fresh_decisions.decisions()) == 1


@pytest.mark.parametrize("context, message", [
    ({"precison": "fp32"}, r"unknown context keys \['precison'\]"),
    ({"threads": "2"}, "context key 'threads' must be an integer"),
    ({"model": "carn_9x9"}, "unknown model 'carn_9x9'"),
])
def test_bad_context_through_the_backend_sequence(udf_code, context, message):
    """tests/test_bad_input.py's errors hold on the executor's path too: raised by
    apply_metadata, the first thing the backend runs."""
    with pytest.raises(ValueError, match=message):
        geopyspark.run_job(udf_code, make_cube(20, 20), (16, 16), (2, 2), context)


def test_missing_bands_through_the_backend_sequence(udf_code, slim_weights):
    cube = make_cube(20, 20).isel(bands=slice(0, 9))
    with pytest.raises(ValueError, match=r"lacks bands \['B12'\]"):
        geopyspark.run_job(udf_code, cube, (16, 16), (2, 2), {"weights": str(slim_weights)})


def _bad_input_cases():
    """tests/test_bad_input.py's weights and context cases (the backend always hands a float32
    [t, bands, y, x] cube with the ten named bands, so the cube cases cannot reach it)."""
    import test_bad_input as bad

    context_cases = [c for c in bad.CUBE_ERRORS if c[2] is not None and c[2]]
    return bad, context_cases


@pytest.mark.parametrize("kind", [c[0] for c in _bad_input_cases()[0].WEIGHT_CASES])
def test_every_bad_weights_case_on_the_backend_path(udf_code, slim_weights, tmp_path, kind):
    bad, _ = _bad_input_cases()
    message = dict(bad.WEIGHT_CASES)[kind]
    path = bad._weights_variant(tmp_path, slim_weights, kind)
    with pytest.raises(ValueError, match=message):
        geopyspark.run_job(udf_code, make_cube(16, 16), (16, 16), (0, 0), {"weights": str(path)})


@pytest.mark.parametrize("name", [c[0] for c in _bad_input_cases()[1]])
def test_every_bad_context_case_on_the_backend_path(udf_code, slim_weights, name):
    _, cases = _bad_input_cases()
    _, make, context, message = next(c for c in cases if c[0] == name)
    ctx = {"weights": str(slim_weights), **context} if "model" not in context and "weights" not in context else context
    with pytest.raises(ValueError, match=message):
        geopyspark.run_job(udf_code, make(), (16, 16), (0, 0), ctx)


def test_output_grid_from_the_backend_s_float32_coordinates():
    """The executor's float32, double-overlap coordinates of a 90 px key: the output is the 5 m
    grid centred on the window (within float32's resolution at UTM northings), its step exactly
    5 m; an exact input grid gives the exact refinement."""
    from s2sr.engine.coords import fine_axis

    cube = make_cube(90, 90)
    _, windows = geopyspark.job_windows(cube, (48, 48), (21, 21))
    interp = geopyspark.PythonInterpreter()
    interp.exec(geopyspark.DEFAULT_IMPORTS.replace("from openeo_driver.errors import OpenEOApiException", ""))
    for name, value in geopyspark.window_variables(windows[0]).items():
        interp.set(name, value)
    interp.exec(geopyspark.CUBE_COORDS)
    true_y = cube.y.values[0] + 21 * 10.0 - np.arange(90) * 10.0  # the key's real 10 m centres (y descending)
    y = fine_axis(interp.getValue("coords['y']"), 2, "y", 10.0)
    exact = fine_axis(true_y, 2, "y", 10.0)
    assert np.allclose(np.diff(y), -5.0, rtol=0, atol=1e-9)
    assert np.max(np.abs(y - exact)) < 0.5  # float32 at 4.18e6 m resolves 0.5 m
    assert np.array_equal(exact, true_y[0] + 5.0 - (np.arange(180) + 0.5) * 5.0)
    with pytest.raises(ValueError, match="NaN"):
        fine_axis(np.array([np.nan, 1.0], dtype=np.float32), 2, "x", 10.0)
    assert np.array_equal(fine_axis(np.array([105.0]), 2, "x", 10.0), [102.5, 107.5])  # one pixel: the resolution
