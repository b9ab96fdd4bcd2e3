"""The UDP builder: committed JSON == builder output, graph shape, parameters, overlap from the
receptive field, job options without a URL of ours, the light import."""

import json
import re
import subprocess
import sys

import pytest

from s2sr.deploy import udp as udp_module
from s2sr.deploy.udp import (
    ARCHIVE_TARGET, ONNX_DEPS_ARCHIVE, UDP_JSON, build_udp, job_options, load_udp_json, neighborhood_geometry,
    shipped_models, superresolve,
)
from s2sr import engine
from s2sr.udf import udf_source


def test_committed_json_equals_builder():
    assert load_udp_json() == build_udp(), f"regenerate {UDP_JSON.name}: python -c 'from s2sr.deploy.udp import write_udp_json; write_udp_json()'"


def test_graph_shape_and_processes():
    udp = build_udp()
    graph = udp["process_graph"]
    ids = [node["process_id"] for node in graph.values()]
    assert ids.count("load_collection") == 2 and "resample_cube_spatial" in ids and "merge_cubes" in ids
    resample = next(n for n in graph.values() if n["process_id"] == "resample_cube_spatial")
    assert resample["arguments"]["method"] == "cubic"
    neigh = next(n for n in graph.values() if n["process_id"] == "apply_neighborhood")
    run_udf = next(iter(neigh["arguments"]["process"]["process_graph"].values()))
    assert run_udf["process_id"] == "run_udf" and run_udf["arguments"]["runtime"] == "Python-Jep"
    assert run_udf["arguments"]["version"] == "3.11"  # the Python the hosted dependency archives are built for
    assert run_udf["arguments"]["udf"] == udf_source()
    margin = engine.required_overlap(engine.read_metadata(engine.resolve_weights({})))  # margin + fill reach
    assert {o["value"] for o in neigh["arguments"]["overlap"]} == {margin}
    assert run_udf["arguments"]["context"]["overlap"] == margin
    size = {o["value"] for o in neigh["arguments"]["size"] if o["dimension"] in ("x", "y")}.pop()
    assert size + 2 * margin == 512 and size > margin
    assert {o["dimension"] for o in neigh["arguments"]["size"]} == {"x", "y", "t"}  # one date a window (P1D, see below)
    assert {"dimension": "t", "value": "P1D"} in neigh["arguments"]["size"]
    last = next(n for n in graph.values() if n.get("result"))
    assert last["process_id"] == "filter_bbox" and last["arguments"]["extent"] == {"from_parameter": "spatial_extent"}


def test_parameters_and_job_options():
    udp = build_udp()
    params = {p["name"]: p for p in udp["parameters"]}
    assert set(params) == {"spatial_extent", "temporal_extent", "product", "model", "max_cloud_cover", "radiometric_offset",
                           "precision", "runtime", "swir_cap"}  # no output_dtype: the executor returns float32 only
    assert params["swir_cap"]["default"] == 2.5 and params["swir_cap"]["schema"]["type"] == "number"
    graph_context = next(n for n in udp["process_graph"].values() if n["process_id"] == "apply_neighborhood")
    assert '"from_parameter": "swir_cap"' in json.dumps(graph_context)
    assert params["precision"]["default"] == "auto" and "fp32" in params["precision"]["schema"]["enum"]
    assert params["runtime"]["default"] == "auto" and {"auto", "torch", "ncnn"} <= set(params["runtime"]["schema"]["enum"])
    assert params["product"]["schema"]["enum"] == ["SENTINEL2_L2A", "SENTINEL2_L1C"]
    assert params["model"]["default"] == "carn_3x3x64g4sw" and params["model"]["schema"]["enum"] == sorted(shipped_models())
    assert "optional" not in params["spatial_extent"] or not params["spatial_extent"]["optional"]
    # a bounding box only: the final filter_bbox refuses polygons and null
    extent = params["spatial_extent"]["schema"]
    assert extent["type"] == "object" and extent["subtype"] == "bounding-box"
    assert set(extent["required"]) == {"west", "south", "east", "north"}
    used = json.dumps(udp["process_graph"])
    for name in params:
        assert f'"from_parameter": "{name}"' in used, name


def _mib(option: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([mg])", option).groups()
    return int(value) * (1024 if unit == "g" else 1)


def test_committed_job_options_name_no_url_of_ours():
    committed = load_udp_json()
    text = json.dumps(committed)
    assert "example.org" not in text and "<host>" not in text
    urls = set(re.findall(r"https?://[^\s\"#]+", json.dumps(committed["default_job_options"])))
    assert urls == {ONNX_DEPS_ARCHIVE.split("#")[0]}  # the hosted onnxruntime archive, a real one
    assert committed["default_job_options"]["udf-dependency-archives"] == [ONNX_DEPS_ARCHIVE]


def test_archive_url_makes_a_deployable_udp():
    url = "https://data.test/s2sr/s2sr_deps-0.1.0.zip"
    udp = build_udp(archive_url=url)
    assert udp["default_job_options"]["udf-dependency-archives"] == [f"{url}#s2sr_deps", ONNX_DEPS_ARCHIVE]
    assert udp_module.archive_urls(udp) == [url] and udp_module.archive_urls(build_udp()) == []
    assert udp["process_graph"] == build_udp()["process_graph"]  # only the job options differ


def test_archive_folder_is_the_one_the_udf_and_the_archive_use():
    from s2sr.udf import udf_source

    dirs = re.search(r"^DEPENDENCY_DIRS = \((.*)\)$", udf_source(), re.M).group(1)
    assert json.loads(f"[{dirs.rstrip(',')}]".replace("'", '"'))[0] == ARCHIVE_TARGET == "s2sr_deps"
    assert ONNX_DEPS_ARCHIVE.endswith("#onnx_deps") and "onnx_deps" in dirs
    archive = pytest.importorskip("s2sr.deploy.archive", reason="s2sr.deploy.archive (the archive builder) not here yet")
    assert archive.TARGET_DIR == ARCHIVE_TARGET


def test_job_options_cover_the_measured_peak():
    opts = job_options()
    # Jep's Python lives in the executor JVM: its memory is executor-memoryOverhead; python-memory
    # (pyspark's workers) is switched off so that it neither reserves memory nor shrinks the overhead
    assert opts["python-memory"] == "disable"
    overhead, heap = _mib(opts["executor-memoryOverhead"]), _mib(opts["executor-memory"])
    peak = max(udp_module.WINDOW_PEAK_GIB.values())
    assert peak == 4.06  # onnxruntime at 512 px (docs/benchmarks_zen4.md, the largest measured): what onnx_deps runs
    dates = 1 if udp_module.ONE_DATE_PER_WINDOW else udp_module.MAX_DATES_PER_WINDOW
    # two windows at once per executor (2 cores, 1 each): each window's peak and dates count twice, the JVM's margin once
    tasks = opts["executor-cores"] // opts["task-cpus"]
    assert (opts["executor-cores"], opts["task-cpus"], tasks) == (2, 1, 2)
    needed = tasks * (peak * 1024 + dates * udp_module.DATE_NATIVE_MIB) + udp_module.MARGIN_GIB * 1024
    assert needed <= overhead < needed + 256  # covered, and not padded further than the 256 MiB rounding
    assert heap >= tasks * (dates * udp_module.DATE_HEAP_MIB + 1024)
    assert overhead + heap <= 64 * 1024  # geopyspark's max_executor_or_driver_memory
    # task-cpus 2 (one 2-thread window per executor): half the windows' memory, the JVM's margin kept
    two = job_options(task_cpus=2)
    assert (two["executor-cores"], two["task-cpus"], two["executor-memoryOverhead"], two["executor-memory"]) == (2, 2, "4864m", "1280m")
    with pytest.raises(ValueError, match="task_cpus"):
        job_options(task_cpus=3)
    several = job_options(one_date_per_window=False)
    assert _mib(job_options(one_date_per_window=False, max_dates=40)["executor-memoryOverhead"]) > _mib(several["executor-memoryOverhead"])
    assert _mib(several["executor-memoryOverhead"]) > overhead  # whole series per window: more memory
    with pytest.raises(ValueError):
        job_options(one_date_per_window=False, max_dates=0)


def test_one_date_per_window_is_geopysparks_p1d():
    """geopyspark takes t size null (all dates) or "P1D" without t overlap (one date per call)."""
    udp = build_udp(one_date_per_window=True)
    neigh = next(n for n in udp["process_graph"].values() if n["process_id"] == "apply_neighborhood")
    assert {"dimension": "t", "value": "P1D"} in neigh["arguments"]["size"]
    assert {o["dimension"] for o in neigh["arguments"]["overlap"]} == {"x", "y"}
    assert "one date per window" in udp["description"]


def test_udp_module_imports_no_torch():
    code = ("import sys, s2sr.deploy.udp as u; u.build_udp(); import s2sr.deploy.cli; "
            "heavy = [m for m in ('torch', 'rasterio', 'dask', 'matplotlib', 'ncnn', 'onnxruntime') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_geometry_keeps_overlap_below_size():
    # overlap = margin + the SWIR cap's reach (1 px) + the no-data fill's (2 px)
    assert neighborhood_geometry({"a": {"margin": 21}}) == {"size": 464, "overlap": 24}
    assert neighborhood_geometry({"a": {"margin": 21}}, window=256) == {"size": 208, "overlap": 24}
    assert neighborhood_geometry({"a": {"margin": 21}, "b": {"margin": 49}}, window=256) == {"size": 152, "overlap": 52}
    big = neighborhood_geometry({"a": {"margin": 100}}, window=256)
    assert big["size"] > big["overlap"]


def test_superresolve_adds_one_node_to_a_cube():
    from openeo.rest.datacube import DataCube

    cube = DataCube.load_collection("SENTINEL2_L2A", connection=None, fetch_metadata=False)
    sr = superresolve(cube).flat_graph()
    assert [n["process_id"] for n in sr.values()] == ["load_collection", "apply_neighborhood"]
    with pytest.raises(ValueError, match="smaller than the 24 px the model needs"):
        superresolve(cube, overlap=3)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        superresolve(cube, model="nope")
    context = json.dumps(superresolve(cube, swir_cap=0).flat_graph())
    assert '"swir_cap": 0' in context and '"swir_cap": 2.5' in json.dumps(sr)
    with pytest.raises(ValueError, match="swir_cap must be a number >= 0"):
        superresolve(cube, swir_cap=-1)


def test_example_memory_options_match_the_builder():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "udp_by_url.py"
    spec = importlib.util.spec_from_file_location("udp_by_url", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    expected = {k: v for k, v in job_options().items() if k != "udf-dependency-archives"}
    assert example.MEMORY_OPTIONS == expected
    assert example.ARCHIVE_DIR == ARCHIVE_TARGET


def test_readme_states_the_job_options():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    opts = job_options()
    for key in ("executor-memoryOverhead", "executor-memory"):
        assert f"`{key}` {opts[key]}" in readme, key
    assert ONNX_DEPS_ARCHIVE in readme and "Each window holds one date" in readme
