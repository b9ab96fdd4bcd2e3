"""Benchmark scenarios in ESA APEx's format, run on the local engine and checked against a reference.

A scenario file (``benchmark_scenarios/*.json``) is a list of scenarios as the APEx algorithm
catalogue writes them (ESA-APEx/apex_algorithms, ``schemas/benchmark_scenario.json``): ``id``,
``type`` ``"openeo"``, ``backend``, ``process_graph`` (a graph calling the UDP by its
``namespace``), optional ``description``, ``job_options``, ``reference_data`` (name -> where
the reference file lies) and ``reference_options`` (how to compare).

``s2sr run --scenario FILE`` runs the scenario's call of ``sentinel2_superresolution`` on the
local engine over the shipped sample scene and compares the SR product with the reference:

- ``sr_5m_stats.json``: per band statistics of the whole SR product (mean, standard deviation,
  1st / 50th / 99th percentiles, valid pixels), within ``stats_atol`` (input units, DN);
- ``sr_5m_crop.tif``: a small crop of the SR product, pixel by pixel within ``crop_atol`` DN, on
  exactly the same 5 m grid (its transform and CRS must match).

A namespace that is a relative path is read relative to the scenario file (the committed UDP
JSON); reference paths likewise.  The scenario pins ``precision: "fp32"``, the contract every
runtime meets within 1e-5 of the range (torch, ncnn, onnxruntime), so the reference holds on
every CPU; ``auto`` would pick int8_dynamic or bf16 by CPU model.
"""

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

UDP_ID = "sentinel2_superresolution"
STATS_FILE = "sr_5m_stats.json"
CROP_FILE = "sr_5m_crop.tif"
#: the crop: rows and columns of the 5 m product (a 240 m square in the sample's middle)
CROP = (slice(232, 280), slice(232, 280))
DEFAULT_OPTIONS = {"stats_atol": 0.25, "crop_atol": 1.0}
#: the fields of APEx's benchmark scenario schema (common + openeo), none other allowed
REQUIRED = ("id", "type", "backend", "process_graph")
ALLOWED = set(REQUIRED) | {"description", "job_options", "reference_data", "reference_options"}
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")


class ScenarioError(ValueError):
    """A scenario that cannot run here, or whose output differs from its reference."""


def load_scenarios(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The scenarios of a file (a JSON list, as APEx's ``read_scenarios_file`` wants), checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read the scenario file {path}: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ScenarioError(f"{path} must hold a JSON list of scenarios")
    for scenario in data:
        check_scenario(scenario)
    return data


def check_scenario(scenario: Any) -> None:
    """APEx's schema and lint rules for an openEO scenario (ScenarioError naming what is wrong)."""
    if not isinstance(scenario, dict):
        raise ScenarioError(f"a scenario must be an object, got {type(scenario).__name__}")
    missing = [k for k in REQUIRED if k not in scenario]
    extra = sorted(set(scenario) - ALLOWED)
    if missing or extra:
        raise ScenarioError(f"scenario {scenario.get('id')!r}: missing {missing}, not allowed {extra}")
    if scenario["type"] != "openeo":
        raise ScenarioError(f"scenario {scenario['id']!r}: type must be 'openeo', got {scenario['type']!r}")
    if not isinstance(scenario["id"], str) or not ID_PATTERN.match(scenario["id"]):
        raise ScenarioError(f"scenario id {scenario['id']!r} must match {ID_PATTERN.pattern}")
    graph = scenario["process_graph"]
    if not isinstance(graph, dict) or not graph:
        raise ScenarioError(f"scenario {scenario['id']!r}: process_graph must be a non-empty object")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not ID_PATTERN.match(str(node.get("process_id", ""))) \
                or not isinstance(node.get("arguments"), dict):
            raise ScenarioError(f"scenario {scenario['id']!r}: node {node_id!r} needs a process_id and arguments")
    for key in ("job_options", "reference_data", "reference_options"):
        if key in scenario and not isinstance(scenario[key], dict):
            raise ScenarioError(f"scenario {scenario['id']!r}: {key} must be an object")


def select(scenarios: Sequence[Dict[str, Any]], scenario_id: Optional[str] = None) -> Dict[str, Any]:
    if scenario_id is None:
        return scenarios[0]
    for scenario in scenarios:
        if scenario["id"] == scenario_id:
            return scenario
    raise ScenarioError(f"no scenario {scenario_id!r} (the file has {[s['id'] for s in scenarios]})")


def udp_node(scenario: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """The node calling ``sentinel2_superresolution`` (exactly one)."""
    nodes = [(k, n) for k, n in scenario["process_graph"].items() if n["process_id"] == UDP_ID]
    if len(nodes) != 1:
        raise ScenarioError(f"scenario {scenario['id']!r} must call {UDP_ID} exactly once, it calls it {len(nodes)} times")
    return nodes[0]


def resolve_udp(node: Dict[str, Any], base: Path) -> Dict[str, Any]:
    """The UDP document the node's ``namespace`` names: a path relative to the scenario file.
    A URL is refused (the local engine does not fetch graphs): the committed JSON is local."""
    namespace = node.get("namespace")
    if not namespace:
        raise ScenarioError(f"the {UDP_ID} node has no namespace: it must name the UDP JSON")
    if re.match(r"^[a-z]+://", str(namespace)):
        raise ScenarioError(f"namespace {namespace} is a URL: the local engine runs a UDP JSON by its path "
                            "(relative to the scenario file)")
    path = (base / str(namespace)).resolve()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read the UDP JSON {path}: {exc}") from None
    if doc.get("id") != node["process_id"]:  # APEx's lint: the document's id is the process id
        raise ScenarioError(f"{path} holds process {doc.get('id')!r}, the scenario calls {node['process_id']!r}")
    return doc


def reference_paths(scenario: Dict[str, Any], base: Path) -> Dict[str, Path]:
    refs = scenario.get("reference_data") or {}
    out = {}
    for name, where in refs.items():
        if re.match(r"^[a-z]+://", str(where)):
            raise ScenarioError(f"reference {name} is a URL ({where}): only local reference files are compared here")
        out[name] = (base / str(where)).resolve()
    return out


# --------------------------------------------------------------------------- reference and comparison

def band_stats(values: np.ndarray, bands: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per band statistics of ``[bands, y, x]`` (NaN no-data left out)."""
    out = {}
    for name, band in zip(bands, values):
        valid = band[np.isfinite(band)].astype(np.float64)
        if valid.size == 0:
            out[str(name)] = {"valid": 0}
            continue
        p01, p50, p99 = np.percentile(valid, [1, 50, 99])
        out[str(name)] = {"mean": float(valid.mean()), "std": float(valid.std()), "p01": float(p01),
                          "p50": float(p50), "p99": float(p99), "valid": int(valid.size)}
    return out


def read_tif(path: Path) -> Tuple[np.ndarray, List[str], Any, Any]:
    """(values ``[bands, y, x]`` float, band names, transform, CRS) of a GeoTIFF."""
    import rasterio

    with rasterio.open(path) as src:
        values = src.read().astype(np.float64)
        if src.nodata is not None and not np.isnan(src.nodata):
            values[values == src.nodata] = np.nan
        return values, list(src.descriptions), src.transform, src.crs


def write_reference(sr_tif: Path, folder: Path) -> Dict[str, Path]:
    """The reference files of an SR product: its statistics and its crop."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    values, bands, _, _ = read_tif(sr_tif)
    stats = {"product": "sr_5m.tif", "shape": list(values.shape), "bands": band_stats(values, bands)}
    (folder / STATS_FILE).write_text(json.dumps(stats, indent=1) + "\n")
    rows, cols = CROP
    window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
    with rasterio.open(sr_tif) as src:
        crop = src.read(window=window)
        profile = {**src.profile, "width": window.width, "height": window.height,
                   "transform": src.window_transform(window), "compress": "deflate", "predictor": 3,
                   "tiled": False}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(folder / CROP_FILE, "w", **profile) as dst:
            dst.write(np.round(crop, 2).astype(np.float32))
            dst.descriptions = src.descriptions
    return {STATS_FILE: folder / STATS_FILE, CROP_FILE: folder / CROP_FILE}


def compare(sr_tif: Path, references: Dict[str, Path], options: Optional[Dict[str, Any]] = None) -> List[str]:
    """What differs between an SR product and the references (empty: it matches)."""
    options = {**DEFAULT_OPTIONS, **(options or {})}
    values, bands, transform, crs = read_tif(sr_tif)
    problems: List[str] = []
    if STATS_FILE in references:
        ref = json.loads(Path(references[STATS_FILE]).read_text())
        if list(values.shape) != ref["shape"]:
            problems.append(f"shape {list(values.shape)} != reference {ref['shape']}")
        actual = band_stats(values, bands)
        for band, expected in ref["bands"].items():
            if band not in actual:
                problems.append(f"band {band} missing")
                continue
            for key, value in expected.items():
                got = actual[band].get(key)
                tol = 0 if key == "valid" else options["stats_atol"]
                if got is None or abs(got - value) > tol:
                    problems.append(f"{band} {key} {got} != reference {value:.4f} (tolerance {tol})")
    if CROP_FILE in references:
        ref_values, ref_bands, ref_transform, ref_crs = read_tif(Path(references[CROP_FILE]))
        rows, cols = CROP
        crop = values[:, rows, cols]
        expected_transform = transform @ transform.translation(cols.start, rows.start)
        if crs != ref_crs or not expected_transform.almost_equals(ref_transform, precision=1e-6):
            problems.append(f"the crop's grid {expected_transform} ({crs}) != reference {ref_transform} ({ref_crs})")
        if crop.shape != ref_values.shape or ref_bands != bands:
            problems.append(f"crop shape {crop.shape} / bands {bands} != reference {ref_values.shape} / {ref_bands}")
        else:
            diff = np.abs(crop - ref_values)
            if (np.isnan(crop) != np.isnan(ref_values)).any():
                problems.append("the crop's no-data differs from the reference")
            worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
            if worst > options["crop_atol"]:
                problems.append(f"crop differs by up to {worst:.3f} DN (tolerance {options['crop_atol']})")
    return problems


__all__ = ["CROP", "ScenarioError", "band_stats", "check_scenario", "compare", "load_scenarios", "reference_paths",
           "resolve_udp", "select", "udp_node", "write_reference"]
