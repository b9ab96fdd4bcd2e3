"""The UDP builder: committed JSON == builder output, graph shape, parameters, overlap from the
receptive field."""

import json

import pytest

from s2sr.deploy.udp import UDP_JSON, build_udp, load_udp_json, neighborhood_geometry, shipped_models, superresolve
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
    assert run_udf["arguments"]["udf"] == udf_source()
    margin = engine.read_metadata(engine.resolve_weights({}))["margin"]
    assert {o["value"] for o in neigh["arguments"]["overlap"]} == {margin}
    assert run_udf["arguments"]["context"]["overlap"] == margin
    size = {o["value"] for o in neigh["arguments"]["size"]}.pop()
    assert size + 2 * margin == 512 and size > margin
    last = next(n for n in graph.values() if n.get("result"))
    assert last["process_id"] == "filter_bbox" and last["arguments"]["extent"] == {"from_parameter": "spatial_extent"}


def test_parameters_and_job_options():
    udp = build_udp()
    params = {p["name"]: p for p in udp["parameters"]}
    assert set(params) == {"spatial_extent", "temporal_extent", "product", "model", "output_dtype", "max_cloud_cover", "radiometric_offset",
                           "precision", "runtime"}
    assert params["precision"]["default"] == "auto" and "fp32" in params["precision"]["schema"]["enum"]
    assert params["runtime"]["default"] == "auto" and params["runtime"]["schema"]["enum"] == ["auto", "torch", "ncnn"]
    assert params["product"]["schema"]["enum"] == ["SENTINEL2_L2A", "SENTINEL2_L1C"]
    assert params["model"]["default"] == "carn_3x3x64g4sw" and params["model"]["schema"]["enum"] == sorted(shipped_models())
    assert "optional" not in params["spatial_extent"] or not params["spatial_extent"]["optional"]
    opts = udp["default_job_options"]
    assert opts["udf-dependency-archives"][0].endswith("#s2sr_weights") and opts["python-memory"]
    used = json.dumps(udp["process_graph"])
    for name in params:
        assert f'"from_parameter": "{name}"' in used, name


def test_geometry_keeps_overlap_below_size():
    assert neighborhood_geometry({"a": {"margin": 21}}) == {"size": 470, "overlap": 21}
    assert neighborhood_geometry({"a": {"margin": 21}}, window=256) == {"size": 214, "overlap": 21}
    assert neighborhood_geometry({"a": {"margin": 21}, "b": {"margin": 49}}, window=256) == {"size": 158, "overlap": 49}
    big = neighborhood_geometry({"a": {"margin": 100}}, window=256)
    assert big["size"] > big["overlap"]


def test_superresolve_adds_one_node_to_a_cube():
    from openeo.rest.datacube import DataCube

    cube = DataCube.load_collection("SENTINEL2_L2A", connection=None, fetch_metadata=False)
    sr = superresolve(cube).flat_graph()
    assert [n["process_id"] for n in sr.values()] == ["load_collection", "apply_neighborhood"]
    with pytest.raises(ValueError, match="smaller than the model's margin"):
        superresolve(cube, overlap=3)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        superresolve(cube, model="nope")
