"""The local engine runs the committed UDP JSON as a backend would: the windowed run equals the
UDF applied to the whole merged cube (windows are independent: no result-cache leak), the
over-fetch feeds the edge windows real data, the 5 m grid sits on the 10 m edges, and bad
inputs fail with messages naming the process."""

import re
import shutil
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
import xarray
from openeo.udf.run_code import load_module_from_string

from s2sr.deploy import local
from s2sr.deploy.udp import build_udp, load_udp_json
from s2sr.training.bands import BANDS
from s2sr.training.degradation import cubic_upsample
from s2sr.udf import udf_source
from s2sr_testing import run_jep

TOL_REFLECTANCE = 1e-5
P = "SENTINEL2_L1C"
X0, Y0 = 437020.0, 4178180.0  # the sample's upper-left corner (EPSG:32618)


@pytest.fixture(scope="module")
def slim_dir(slim_weights, tmp_path_factory):
    """Slim random weights under the default model's name: the UDF finds them through
    $S2SR_WEIGHTS_DIR (its documented search path), so the committed UDP runs them unchanged."""
    folder = tmp_path_factory.mktemp("slim_default")
    shutil.copy(slim_weights, folder / "carn_3x3x64g4sw.pt")
    return folder


@pytest.fixture
def slim_env(slim_dir, monkeypatch):
    monkeypatch.setenv("S2SR_WEIGHTS_DIR", str(slim_dir))


@pytest.fixture(scope="module")
def catalogue():
    return local.sample_catalogue()


def _utm_bbox(col0, row0, col1, row1):
    return {"west": X0 + 10 * col0, "east": X0 + 10 * col1, "north": Y0 - 10 * row0, "south": Y0 - 10 * row1, "crs": 32618}


def _arguments(catalogue, bbox=None, **kw):
    # fp32: the seam-free contract is exact there (reduced precisions: tests/test_precision.py)
    return {"product": P, "spatial_extent": bbox or local.collection_extent(catalogue, P),
            "temporal_extent": local.collection_dates(catalogue, P), "precision": "fp32", **kw}


def _reference_cube(col0, row0, col1, row1):
    """The merged ten-band 10 m cube over sample pixels [row0:row1, col0:col1], built from the
    files without the engine: 20 m bands by the GDAL-exact cubic of s2sr.training (x2)."""
    p10, p20 = local.sample_paths()
    c20, r20 = col0 // 2, row0 // 2
    with rasterio.open(p10) as src:
        b10 = src.read(window=((row0, row1), (col0, col1))).astype(np.float32)
    with rasterio.open(p20) as src:
        b20 = src.read(window=((r20, -(-row1 // 2)), (c20, -(-col1 // 2)))).astype(np.float32)
    up = cubic_upsample(torch.from_numpy(b20)[None], 2)[0].numpy()
    up = up[:, row0 - 2 * r20:row0 - 2 * r20 + row1 - row0, col0 - 2 * c20:col0 - 2 * c20 + col1 - col0]
    coords = {"t": [np.datetime64("2017-01-01", "ns")], "bands": list(BANDS),
              "y": Y0 - (np.arange(row0, row1) + 0.5) * 10, "x": X0 + (np.arange(col0, col1) + 0.5) * 10}
    return xarray.DataArray(np.concatenate([b10, up])[None], dims=("t", "bands", "y", "x"), coords=coords)


def _max_diff(a, b):
    assert a.shape == b.shape and not np.isnan(a).any() and not np.isnan(b).any()
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) / 10000.0


# --------------------------------------------------------------------------- the UDP on the sample

def test_windowed_udp_equals_udf_on_whole_merged_cube(slim_env, catalogue):
    """Whole sample (256 px, 4 windows of 208 + 2 x 24 px): each window must get its own
    run_udf result; a cached first window would differ from the whole-cube UDF by far."""
    engine = local.LocalEngine(catalogue, workers=2)
    # 256 px windows (the committed UDP's 512 px would cover the sample in one window)
    execution = engine.run_udp(build_udp(window=256), arguments=_arguments(catalogue))
    stats = execution.stats["apply_neighborhood"][0]
    assert stats["windows"] == 4 and stats["size"] == (208, 208) and stats["overlap"] == (24, 24)
    whole = run_jep(load_module_from_string(udf_source()), _reference_cube(0, 0, 256, 256), {"precision": "fp32"})
    sr = execution.result
    assert sr.dims == ("t", "bands", "y", "x") and sr.shape == (1, 10, 512, 512)
    assert _max_diff(sr.values, whole.values) <= TOL_REFLECTANCE
    np.testing.assert_array_equal(sr.x.values, whole.x.values)
    np.testing.assert_array_equal(sr.y.values, whole.y.values)
    quadrants = [sr.values[..., :428, :428], sr.values[..., 428:, 428:]]
    assert quadrants[0].shape != quadrants[1].shape or not np.allclose(*quadrants)


def test_default_weights_bbox_grid_and_overfetch(catalogue):
    """The shipped weights over a 40 x 40 px box: equal to the UDF on the merged cube read with
    the overlap buffer (24 px) around the box, then clipped; 5 m centres on the 10 m edges."""
    col0, row0, col1, row1 = 60, 80, 100, 120
    execution = local.LocalEngine(catalogue).run_udp(arguments=_arguments(catalogue, _utm_bbox(col0, row0, col1, row1)))
    loaded = execution.results["loadcollection1"]
    assert loaded.sizes["x"] == loaded.sizes["y"] == 40 + 2 * 24, "load_collection must over-fetch by the overlap"
    ref_cube = _reference_cube(col0 - 24, row0 - 24, col1 + 24, row1 + 24)
    assert _max_diff(execution.results["mergecubes1"].values, ref_cube.values) <= 1e-6
    whole = run_jep(load_module_from_string(udf_source()), ref_cube, {"precision": "fp32"})
    sr = execution.result
    assert sr.shape == (1, 10, 80, 80)
    assert _max_diff(sr.values, whole.values[..., 48:128, 48:128]) <= TOL_REFLECTANCE
    # the 5 m grid: pixel centres half a 5 m pixel inside the 10 m edges of the box
    np.testing.assert_allclose(sr.x.values, X0 + 10 * col0 + (np.arange(80) + 0.5) * 5, atol=1e-6)
    np.testing.assert_allclose(sr.y.values, Y0 - 10 * row0 - (np.arange(80) + 0.5) * 5, atol=1e-6)
    grid = local.cube_grid(sr)
    assert grid.crs == "EPSG:32618" and grid.res == (5.0, 5.0)
    assert tuple(grid.transform)[:6] == (5.0, 0.0, X0 + 10 * col0, 0.0, -5.0, Y0 - 10 * row0)


def test_without_overfetch_the_edges_differ(slim_env, catalogue):
    """The buffer matters: the UDF on the box alone (no-data around it) differs at its edges."""
    box = (60, 80, 100, 120)
    sr = local.LocalEngine(catalogue).run_udp(arguments=_arguments(catalogue, _utm_bbox(*box))).result
    bare = run_jep(load_module_from_string(udf_source()), _reference_cube(*box), {})
    assert _max_diff(sr.values, bare.values) > 100 * TOL_REFLECTANCE


def test_bbox_in_wgs84_covers_its_envelope(slim_env, catalogue):
    bbox = {"west": -75.705, "south": 37.73, "east": -75.697, "north": 37.736}  # no crs: EPSG:4326
    sr = local.run_udp({"spatial_extent": bbox}, catalogue)
    w, s, e, n = rasterio.warp.transform_bounds("EPSG:4326", "EPSG:32618", *bbox.values(), densify_pts=21)
    gw, gs, ge, gn = local.cube_grid(sr).bounds
    assert w - 2.5 <= gw <= w + 2.5 and e - 2.5 <= ge <= e + 2.5 and s - 2.5 <= gs <= s + 2.5 and n - 2.5 <= gn <= n + 2.5
    assert not np.isnan(sr.values).any()


# --------------------------------------------------------------------------- the executor, with a toy UDF

TOY_UDF = textwrap.dedent('''
    import time
    import numpy as np
    import xarray
    from openeo.udf import XarrayDataCube

    def apply_metadata(metadata, context: dict):
        return metadata.resample_spatial(resolution=tuple(d.step / context["factor"] for d in metadata.spatial_dimensions))

    def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:
        array = cube.get_array()
        assert isinstance(cube, XarrayDataCube) and array.dtype == np.float32
        assert array.dims == ("t", "bands", "y", "x") and "t" in array.coords, array.dims
        time.sleep(context["sleep"])
        f = context["factor"]
        values = array.values.repeat(f, axis=-2).repeat(f, axis=-1) * context["gain"]
        coords = {d: array[d].values for d in ("t", "bands")}
        for d in ("y", "x"):
            c = array[d].values
            step = c[1] - c[0]
            coords[d] = c[0] - step / 2 + (np.arange(c.size * f) + 0.5) * step / f
        return XarrayDataCube(xarray.DataArray(values, dims=array.dims, coords=coords))
''')


def _toy_graph(size=16, overlap=4):
    ext = {"from_parameter": "spatial_extent"}
    return {
        "load": {"process_id": "load_collection", "arguments": {
            "id": "TOY", "spatial_extent": ext, "temporal_extent": None, "bands": ["B02", "B04"]}},
        "neigh": {"process_id": "apply_neighborhood", "arguments": {
            "data": {"from_node": "load"},
            "size": [{"dimension": d, "value": size, "unit": "px"} for d in "xy"],
            "overlap": [{"dimension": d, "value": overlap, "unit": "px"} for d in "xy"],
            "process": {"process_graph": {"udf": {"process_id": "run_udf", "result": True, "arguments": {
                "data": {"from_parameter": "data"}, "udf": TOY_UDF, "runtime": "Python-Jep",
                "context": {"gain": {"from_parameter": "gain"}, "factor": 2, "sleep": {"from_parameter": "sleep"}}}}}}}},
        "clip": {"process_id": "filter_bbox", "arguments": {"data": {"from_node": "neigh"}, "extent": ext}, "result": True},
    }


def _write_tif(path, data, names, x0=X0, y0=Y0, res=10.0, tags=None):
    profile = dict(driver="GTiff", dtype=str(data.dtype), count=data.shape[0], height=data.shape[1], width=data.shape[2],
                   crs="EPSG:32618", transform=rasterio.Affine(res, 0, x0, 0, -res, y0), nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if names:
            dst.descriptions = tuple(names)
        dst.update_tags(**(tags or {}))
    return path


@pytest.fixture(scope="module")
def toy_catalogue(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 5000, (3, 40, 44)).astype(np.uint16)
    path = _write_tif(tmp_path_factory.mktemp("toy") / "toy.tif", data, ["B02", "B03", "B04"], tags={"DATETIME": "2020-05-01"})
    catalogue = local.Catalogue()
    catalogue.register_files("TOY", [path])
    return catalogue, data


def test_every_window_runs_its_own_callback_in_parallel(toy_catalogue):
    catalogue, data = toy_catalogue
    engine = local.LocalEngine(catalogue, workers=2)
    execution = engine.run_graph(_toy_graph(), {"gain": 3.0, "sleep": 0.05, "spatial_extent": None})
    expected = data[[0, 2]].astype(np.float32).repeat(2, axis=-2).repeat(2, axis=-1) * 3.0
    np.testing.assert_array_equal(execution.result.values[0], expected)
    stats = execution.stats["apply_neighborhood"][0]
    assert stats["windows"] == 9 and len(stats["threads"]) == 2
    assert list(execution.result.bands.values) == ["B02", "B04"]


def test_distributed_scheduler(toy_catalogue):
    distributed = pytest.importorskip("distributed")
    catalogue, data = toy_catalogue
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        engine = local.LocalEngine(catalogue, scheduler=cluster.scheduler_address)
        result = engine.run_graph(_toy_graph(), {"gain": 1.0, "sleep": 0.0, "spatial_extent": None}).result
    np.testing.assert_array_equal(result.values[0], data[[0, 2]].astype(np.float32).repeat(2, -2).repeat(2, -1))


def test_error_inside_a_window_names_both_processes(toy_catalogue):
    catalogue, _ = toy_catalogue
    with pytest.raises(local.ProcessError, match=r"^apply_neighborhood \(node 'neigh'\): run_udf \(node 'udf'\): TypeError"):
        local.LocalEngine(catalogue).run_graph(_toy_graph(), {"gain": 1.0, "sleep": "soon", "spatial_extent": None})
    with pytest.raises(local.ProcessError, match=r"run_udf \(node 'udf'\): parameter 'sleep' has no value"):
        local.LocalEngine(catalogue).run_graph(_toy_graph(), {"gain": 1.0, "spatial_extent": None})


def test_unknown_process_fails_before_running(toy_catalogue):
    graph = _toy_graph()
    graph["neigh"]["arguments"]["process"]["process_graph"]["udf"]["process_id"] = "run_magic"
    with pytest.raises(local.ProcessMissing, match="run_magic.*not supported by the local engine"):
        local.LocalEngine(toy_catalogue[0]).run_graph(graph, {})


# --------------------------------------------------------------------------- load_collection

def test_load_reads_requested_bands_extent_and_buffer(toy_catalogue):
    catalogue, data = toy_catalogue
    engine = local.LocalEngine(catalogue)
    bbox = _utm_bbox(10, 5, 20, 12)
    args = {"id": "TOY", "bands": ["B04"], "spatial_extent": bbox}
    cube = local.load_collection(args, local.Call(engine, "n", "load_collection"))
    np.testing.assert_array_equal(cube.values[0, 0], data[2, 5:12, 10:20])
    buffered = local.load_collection(args, local.Call(engine, "n", "load_collection", pixel_buffer=8))
    np.testing.assert_array_equal(buffered.values[0, 0], data[2, 0:20, 2:28])  # clipped at the top edge


def test_pixel_buffer_dry_run_marks_both_loads():
    graph = load_udp_json()["process_graph"]
    assert local.pixel_buffers(graph, {}) == {"loadcollection1": 24, "loadcollection2": 24}


@pytest.mark.parametrize("arguments, message", [
    ({"spatial_extent": {"west": 10.0, "south": 45.0, "east": 10.1, "north": 45.1}}, "does not intersect collection"),
    ({"temporal_extent": ["2020-01-01", "2020-02-01"]}, "holds no date of collection"),
    ({"temporal_extent": ["2017-02-01", "2017-01-01"]}, "empty"),
    ({"model": "no_such_model"}, "model 'no_such_model' is not one of"),
    ({"product": "SENTINEL2_L2A"}, "unknown collection 'SENTINEL2_L2A'"),
    ({"bogus": 1}, "has no parameters"),
])
def test_bad_arguments_fail_clearly(catalogue, arguments, message):
    args = {**_arguments(catalogue), **arguments}
    with pytest.raises((local.ProcessError, local.ParameterError), match=message):
        local.LocalEngine(catalogue).run_udp(arguments=args)


def test_bad_extent_error_names_load_collection(catalogue):
    args = _arguments(catalogue, {"west": 10.0, "south": 45.0, "east": 10.1, "north": 45.1})
    with pytest.raises(local.ProcessError, match=r"^load_collection \(node 'loadcollection1'\)"):
        local.LocalEngine(catalogue).run_udp(arguments=args)


def test_missing_required_parameter():
    with pytest.raises(local.ParameterError, match="missing required parameter 'spatial_extent'"):
        local.LocalEngine(local.Catalogue()).run_udp(arguments={"temporal_extent": ["2017-01-01", None]})


def test_cloud_cover_property_filters_items(tmp_path):
    data = np.full((10, 8, 8), 1000, np.uint16)
    catalogue = local.Catalogue()
    catalogue.register_files(P, [_write_tif(tmp_path / "c.tif", data, list(BANDS), tags={"CLOUD_COVER": "80"})])
    graph = load_udp_json()["process_graph"]
    call = local.Call(local.LocalEngine(catalogue), "loadcollection1", "load_collection")
    lte = local.Callback(graph["loadcollection1"]["arguments"]["properties"]["eo:cloud_cover"]["process_graph"],
                         {"max_cloud_cover": 50}, call.engine, "loadcollection1")
    with pytest.raises(ValueError, match="passes the property filters"):
        local.load_collection({"id": P, "properties": {"eo:cloud_cover": lte}}, call)
    lte.scope["max_cloud_cover"] = 90
    assert local.load_collection({"id": P, "properties": {"eo:cloud_cover": lte}}, call).sizes["t"] == 1


def test_ten_band_geotiff_and_netcdf_inputs(tmp_path):
    """A user's ten bands in one file (10 m): GeoTIFF by band descriptions, NetCDF by variable
    names with a time axis; both load the same values."""
    import rioxarray  # noqa: F401

    rng = np.random.default_rng(1)
    data = rng.integers(100, 4000, (10, 12, 14)).astype(np.uint16)
    tif = _write_tif(tmp_path / "ten.tif", data, [b.replace("B0", "B") for b in BANDS], tags={"DATETIME": "2021:06:02 10:00:00"})
    coords = {"t": np.array(["2021-06-01", "2021-06-02"], dtype="datetime64[ns]"),
              "y": Y0 - (np.arange(12) + 0.5) * 10, "x": X0 + (np.arange(14) + 0.5) * 10}
    ds = xarray.Dataset({b: (("t", "y", "x"), np.stack([data[i] * 0, data[i]]).astype(np.float32)) for i, b in enumerate(BANDS)},
                        coords=coords).rio.write_crs("EPSG:32618")
    nc = tmp_path / "ten.nc"
    ds.to_netcdf(nc)
    for path in (tif, nc):
        catalogue = local.Catalogue()
        catalogue.register_files("MINE", [path])
        engine = local.LocalEngine(catalogue)
        cube = local.load_collection({"id": "MINE", "bands": ["B8A", "B02"], "temporal_extent": ["2021-06-02", "2021-06-03"]},
                                     local.Call(engine, "n", "load_collection"))
        assert cube.sizes["t"] == 1 and str(cube.t.values[0])[:10] == "2021-06-02", path
        np.testing.assert_array_equal(cube.values[0], data[[7, 0]].astype(np.float32))
        assert cube.attrs["crs"] == "EPSG:32618"


def test_unnamed_bands_of_odd_count_are_refused(tmp_path):
    path = _write_tif(tmp_path / "three.tif", np.ones((3, 4, 4), np.uint16), None)
    with pytest.raises(ValueError, match="3 unnamed bands"):
        local.Catalogue().register_files("X", [path])
    with pytest.raises(ValueError, match="does not exist"):
        local.Catalogue().register_files("X", [tmp_path / "nope.tif"])


def test_to_geotiff_int16(tmp_path, toy_catalogue):
    catalogue, data = toy_catalogue
    cube = local.load_collection({"id": "TOY"}, local.Call(local.LocalEngine(catalogue), "n", "load_collection"))
    cube.values[0, 0, 0, 0] = np.nan
    path = local.to_geotiff(cube, tmp_path / "x.tif", "int16")
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "int16" and src.nodata == -10000 and src.descriptions == ("B02", "B03", "B04")
        assert src.read(1)[0, 0] == -10000 and src.read(3)[5, 5] == data[2, 5, 5]
        assert src.transform == rasterio.Affine(10, 0, X0, 0, -10, Y0) and src.crs.to_epsg() == 32618


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


PER_DATE_UDF = textwrap.dedent('''
    import numpy as np
    import xarray
    from openeo.udf import XarrayDataCube

    def apply_metadata(metadata, context: dict):
        return metadata.resample_spatial(resolution=tuple(d.step / 2 for d in metadata.spatial_dimensions))

    def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:
        array = cube.get_array()
        assert array.dims == ("bands", "y", "x") and "t" not in array.coords, array.dims  # one date's tile
        values = array.values.repeat(2, axis=-2).repeat(2, axis=-1)
        return XarrayDataCube(xarray.DataArray(values, dims=array.dims))
''')


def test_one_date_per_window_p1d(tmp_path):
    """apply_neighborhood with t size P1D: each date's windows alone, as a (bands, y, x) cube
    (the geopyspark driver's apply_tiles, Udf.scala runUserCodeWithBands); dates stitched back."""
    rng = np.random.default_rng(3)
    data = [rng.integers(1, 5000, (2, 30, 34)).astype(np.uint16) for _ in range(2)]
    paths = [_write_tif(tmp_path / f"d{i}.tif", d, ["B02", "B04"], tags={"DATETIME": f"2020-05-0{i + 1}"})
             for i, d in enumerate(data)]
    catalogue = local.Catalogue()
    catalogue.register_files("TWO", paths)
    graph = _toy_graph()
    graph["load"]["arguments"]["id"] = "TWO"
    neigh = graph["neigh"]["arguments"]
    neigh["size"] = neigh["size"] + [{"dimension": "t", "value": "P1D"}]
    neigh["process"]["process_graph"]["udf"]["arguments"].update(udf=PER_DATE_UDF, context={})
    result = local.LocalEngine(catalogue, workers=2).run_graph(graph, {"spatial_extent": None}).result
    assert result.dims == ("t", "bands", "y", "x") and result.sizes["t"] == 2
    for i in range(2):
        np.testing.assert_array_equal(result.values[i], data[i].astype(np.float32).repeat(2, -2).repeat(2, -1))
    with pytest.raises(local.ProcessError, match="a null or 'P1D' t"):
        neigh["size"][-1]["value"] = "P2D"
        local.LocalEngine(catalogue).run_graph(graph, {"spatial_extent": None})


# --------------------------------------------------------------------------- progress

def _sample_on_dates(n: int) -> local.Catalogue:
    """The sample scene registered as ``n`` dates (the same files, 2017-01-01 onwards)."""
    (item,) = local.sample_catalogue().items(P)
    catalogue = local.Catalogue()
    catalogue.register(P, [local.Item(item.date + np.timedelta64(i, "D"), dict(item.bands), dict(item.properties))
                           for i in range(n)])
    return catalogue


def test_progress_counts_windows_times_dates_as_they_finish(slim_env, capsys, monkeypatch):
    """The committed UDP with 96 px windows over the 256 px sample on 2 dates: 9 windows x 2
    dates, counted one by one (callback and bar), not 0 then 100 %."""
    import functools

    import tqdm.auto

    # the bar redraws on every update (tqdm reads TQDM_* variables once, when it is first
    # imported: setting them here came too late in a full run, and fast windows drew 4 counts)
    monkeypatch.setattr(tqdm.auto, "tqdm", functools.partial(tqdm.auto.tqdm, mininterval=0, miniters=1))
    udp = load_udp_json()
    node = next(n for n in udp["process_graph"].values() if n["process_id"] == "apply_neighborhood")
    for entry in node["arguments"]["size"]:
        if entry["dimension"] in ("x", "y"):
            entry["value"] = 96
    catalogue, seen = _sample_on_dates(2), []
    engine = local.LocalEngine(catalogue, workers=2, progress=True, on_progress=lambda done, total: seen.append((done, total)))
    execution = engine.run_udp(udp, arguments=_arguments(catalogue, runtime="torch"))
    assert execution.result.sizes["t"] == 2 and execution.stats["apply_neighborhood"][0]["windows"] == 9
    assert seen == [(k, 18) for k in range(19)]  # every count from 0 to 9 x 2, in order
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert "s2sr 9 windows x 2 dates" in bar
    counts = {int(m) for m in re.findall(r"\b(\d+)/18\b", bar)}
    assert 0 in counts and max(counts) > 9 and len(counts) >= 5, sorted(counts)  # one bar, moving through both dates
