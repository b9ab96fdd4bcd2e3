"""APEx conventions: the benchmark scenario runs on the local engine and matches its reference;
the comparison breaks on real regressions; the OGC API record follows APEx's record schema."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from s2sr import cli
from s2sr.deploy import scenario as sc
from s2sr.deploy.udp import ONNX_DEPS_ARCHIVE, UDP_ID, UDP_JSON, job_options, load_udp_json

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((REPO / "benchmark_scenarios").glob("*.json"))
SCENARIO = REPO / "benchmark_scenarios" / "sentinel2_superresolution.json"
RECORD = REPO / "records" / "sentinel2_superresolution.json"


# --------------------------------------------------------------------------- the scenario file

def test_scenarios_follow_the_apex_schema():
    assert SCENARIOS == [SCENARIO]
    (scenario,) = sc.load_scenarios(SCENARIO)  # a list, APEx's read_scenarios_file
    assert scenario["type"] == "openeo" and re.fullmatch(r"[a-zA-Z0-9_-]+", scenario["id"])
    # APEx's lint_backend patterns: a backend the catalogue runs benchmarks on
    assert re.fullmatch(r"(https://)?openeo\.dataspace\.copernicus\.eu(/.*)?", scenario["backend"])
    node_id, node = sc.udp_node(scenario)
    assert node["process_id"] == UDP_ID
    udp = sc.resolve_udp(node, SCENARIO.parent)  # APEx's lint: the namespace's document has the process id
    assert udp == load_udp_json() and (SCENARIO.parent / node["namespace"]).resolve() == UDP_JSON.resolve()
    params = {p["name"] for p in udp["parameters"]}
    assert set(node["arguments"]) <= params
    assert node["arguments"]["precision"] == "fp32"  # the contract every runtime meets: one reference for all CPUs
    saves = [n for n in scenario["process_graph"].values() if n["process_id"] == "save_result"]
    assert len(saves) == 1 and saves[0]["result"] and saves[0]["arguments"]["data"] == {"from_node": node_id}
    assert scenario["job_options"] == job_options() and ONNX_DEPS_ARCHIVE in scenario["job_options"]["udf-dependency-archives"]
    refs = sc.reference_paths(scenario, SCENARIO.parent)
    assert set(refs) == {sc.STATS_FILE, sc.CROP_FILE} and all(p.is_file() for p in refs.values())
    assert sum(p.stat().st_size for p in refs.values()) < 150_000  # small enough for the repository


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("backend"), "missing ['backend']"),
    (lambda s: s.update(extra=1), "not allowed ['extra']"),
    (lambda s: s.update(type="ogc"), "type must be 'openeo'"),
    (lambda s: s.update(id="has space"), "must match"),
    (lambda s: s["process_graph"]["s2sr1"].pop("arguments"), "needs a process_id and arguments"),
])
def test_scenario_checks_name_the_problem(edit, message):
    (scenario,) = json.loads(SCENARIO.read_text())
    edit(scenario)
    with pytest.raises(sc.ScenarioError, match=re.escape(message)):
        sc.check_scenario(scenario)


# --------------------------------------------------------------------------- running it

@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario") / "out"
    rc = cli.main(["run", "--scenario", str(SCENARIO), "--out", str(out), "--quiet"])
    return rc, out


def test_scenario_runs_locally_and_matches_its_reference(scenario_run):
    rc, out = scenario_run
    assert rc == 0
    record = json.loads((out / cli.RUN_FILE).read_text())
    assert record["scenario"]["id"] == "sentinel2_superresolution_sample"
    assert record["scenario"]["matches"] and record["scenario"]["problems"] == []
    assert record["arguments"]["precision"] == "fp32" and record["arguments"]["product"] == "SENTINEL2_L1C"
    with rasterio.open(out / "sr_5m.tif") as src:
        assert (src.width, src.height, src.crs.to_epsg()) == (512, 512, 32618)


def _references():
    (scenario,) = sc.load_scenarios(SCENARIO)
    return sc.reference_paths(scenario, SCENARIO.parent), scenario["reference_options"]


def _edited(src: Path, dst: Path, change) -> Path:
    with rasterio.open(src) as f:
        profile, values = f.profile, f.read()
        names = f.descriptions
    with rasterio.open(dst, "w", **profile) as f:
        f.write(change(values).astype(np.float32))
        f.descriptions = names
    return dst


@pytest.mark.parametrize("name, change", [
    ("bias", lambda v: v + 2.0),  # a radiometric bias of 2 DN
    ("shift", lambda v: np.roll(v, 1, axis=-1)),  # the grid one 5 m pixel off
    ("one_band", lambda v: np.concatenate([v[:9], v[9:] * 1.01])),  # one band 1 % off
    ("swapped", lambda v: v[[1, 0, *range(2, 10)]]),  # two bands swapped
])
def test_regressions_break_the_comparison(scenario_run, tmp_path, name, change):
    rc, out = scenario_run
    refs, options = _references()
    assert sc.compare(out / "sr_5m.tif", refs, options) == []
    assert sc.compare(_edited(out / "sr_5m.tif", tmp_path / f"{name}.tif", change), refs, options)


def test_bicubic_instead_of_the_network_breaks_it(scenario_run):
    _, out = scenario_run
    refs, options = _references()
    problems = sc.compare(out / "bicubic_5m.tif", refs, options)
    assert any("crop differs" in p for p in problems) and any(" std " in p for p in problems)


def test_a_mismatch_exits_nonzero(tmp_path, capsys):
    folder = tmp_path / "benchmark_scenarios"
    shutil.copytree(REPO / "benchmark_scenarios", folder)
    (scenario,) = json.loads(SCENARIO.read_text())
    scenario["process_graph"]["s2sr1"]["namespace"] = str(UDP_JSON)
    scenario["process_graph"]["s2sr1"]["arguments"]["radiometric_offset"] = -50  # a different product
    path = folder / "edited.json"
    path.write_text(json.dumps([scenario]))
    assert cli.main(["run", "--scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "differs from the reference" in err and "Traceback" not in err
    record = json.loads((tmp_path / "out" / cli.RUN_FILE).read_text())  # outputs kept for inspection
    assert record["scenario"]["matches"] is False


def test_scenario_refuses_other_input_options(tmp_path, capsys):
    argv = ["run", "--scenario", str(SCENARIO), "--model", "x", "--out", str(tmp_path / "o"), "--quiet"]
    assert cli.main(argv) == 1
    assert "drop --model" in capsys.readouterr().err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the OGC API record

def test_record_follows_the_apex_record_schema():
    """The fields ESA-APEx/apex_algorithms' schemas/record.json requires of a service record."""
    record = json.loads(RECORD.read_text())
    assert record["id"] == UDP_ID and record["type"] == "Feature" and record["geometry"] is None
    assert "https://www.opengis.net/spec/ogcapi-records-1/1.0/req/record-core" in record["conformsTo"]
    assert "https://apex.esa.int/core/openeo-udp" in record["conformsTo"]
    props = record["properties"]
    for key in ("created", "updated", "type", "title", "description", "contacts", "themes", "formats"):
        assert props.get(key), key
    assert props["type"] == "service" and props["keywords"] and set(props["keywords"]) <= {"Sentinel-2", "Data Analysis and Visualization"}
    assert all({"name", "roles"} <= set(c) for c in props["contacts"])
    assert all(t["concepts"] and t["scheme"] for t in props["themes"])
    assert all("name" in f or "mediaType" in f for f in props["formats"])
    rels = {link["rel"] for link in record["links"]}
    assert {"service", "application", "provider", "platform"} <= rels
    for link in record["links"]:
        assert {"rel", "type", "title", "href"} <= set(link), link
    app = next(link for link in record["links"] if link["rel"] == "application")
    assert app["type"] == "application/vnd.openeo+json;type=process"
    # no invented URL: the process definition is the committed JSON, by its path in this repository
    assert (RECORD.parent / app["href"]).resolve() == UDP_JSON.resolve()
    assert "example.org" not in json.dumps(record) and "<" not in json.dumps(record)
    description = props["description"]
    assert "5 m" in description and "float32" in description
