"""s2sr openEO UDF: Sentinel-2 10 / 20 m bands super-resolved to 5 m.

The openEO adapter of the ``s2sr`` engine (``s2sr.engine``), run by a backend as text inside
``apply_neighborhood``.  ``apply_datacube`` takes a window ``[t, bands, y, x]`` (or ``[bands, y,
x]``) of the ten bands B02 B03 B04 B08 B05 B06 B07 B8A B11 B12 on the 10 m grid and returns it at
5 m, overlap included (the backend crops it); ``apply_metadata`` divides the cube's spatial step
by the factor.  For the ``Python-Jep`` runtime (the one that lets ``apply_neighborhood`` change
resolution) and plain ``Python`` / ``run_code``.

Geopyspark backends (CDSE, Terrascope) run this text in a fresh interpreter for every window:
everything that must outlive a window (the loaded model, the weights checksum, the ``auto``
decision) lives in the engine's modules, which stay in ``sys.modules``.  The engine comes from
the job's dependency archive (``udf-dependency-archives``: ``<url>#s2sr_deps``, whose folder this
file puts on ``sys.path``) or from an installed ``s2sr`` package.

Context keys (all optional; an empty context runs the default model):

================  ========================================================================
``model``         model name, e.g. ``"carn_3x3x64g4sw"``; ``<model>.pt`` in ``weights_dir``,
                  ``$S2SR_WEIGHTS_DIR``, ``./s2sr_weights`` and the s2sr package
``weights``       a weights file path (overrides ``model``); ``weights_dir``: a folder
``device``        ``"cpu"`` (default), ``"cuda"`` or ``"auto"``
``threads``       threads (default and cap: the CPUs this worker may use)
``batch``         dates per forward pass (default 1)
``precision``     ``"auto"`` (default: one choice per CPU model, never mixed within a job),
                  ``"fp32"`` (the reference), ``"bf16"``, ``"int8"``, ``"int8_dynamic"``
``runtime``       ``"auto"`` (default), ``"torch"``, ``"ncnn"`` or ``"onnxruntime"``
``scale``         input units per unit of reflectance (default 10000)
``offset``        reflectance = (value + offset) / scale (default 0; -1000 for baseline
                  >= 04.00 products that still carry the offset)
``nodata``        an input value meaning no-data, besides NaN
``output_dtype``  ``"float32"`` (default; NaN no-data) or ``"int16"`` (no-data -10000)
``overlap``       the ``apply_neighborhood`` overlap in input pixels
``factor``        the upscaling factor (default 2; an error if the weights differ)
``resolution``    the input pixel size in metres (default 10): the output grid is
                  derived from it and the window's centre, never from coordinate steps
``swir_cap``      the cap on B11 / B12's detail over bicubic, in units of each band's own
                  local input contrast (default 2.5; 0: the network's output as it is)
================  ========================================================================

No-data (NaN or ``nodata``) stays no-data in the output over the ``factor x factor`` pixels it
covers.  Details: docs/udf.md.
"""

import os
import sys

import numpy as np
import xarray
from openeo.metadata import CollectionMetadata
from openeo.udf import XarrayDataCube

#: folders of ``udf-dependency-archives`` entries (``<url>#<folder>``, unpacked in the job's
#: working directory) that may hold the engine: s2sr's own archive, and the hosted onnxruntime one
DEPENDENCY_DIRS = ("s2sr_deps", "onnx_deps")
ENGINE_MISSING = (
    "the s2sr engine is not importable on this worker: add the s2sr dependency archive to the job "
    "option 'udf-dependency-archives' as '<url>#s2sr_deps' (build it with `s2sr-deploy archive`), "
    "or install the s2sr package on the workers"
)


def _dependency_path() -> None:
    """Put the job's dependency archives' folders first on ``sys.path`` (once per process)."""
    for name in DEPENDENCY_DIRS:
        folder = os.path.join(os.getcwd(), name)
        if os.path.isdir(folder) and folder not in sys.path:
            sys.path.insert(0, folder)


def _engine():
    """The engine's light modules (no torch): context checks and weights metadata."""
    _dependency_path()
    try:
        from s2sr.engine import context, weights
    except ImportError as exc:
        raise RuntimeError(f"{ENGINE_MISSING} ({exc})") from None
    return context, weights


def _weights_meta(context: dict):
    """The weights' metadata where this node can find them (no torch), else None: the driver's
    executor may lack the weights that the workers get from the dependency archive."""
    _, weights = _engine()
    try:
        path = weights.resolve_weights(context)
    except ValueError:
        return None
    return weights.metadata_cached(str(path), *weights.stat_key(path))


def _check_bands(metadata: CollectionMetadata, bands) -> None:
    """The cube's band names, where it has them, must hold the model's bands."""
    _, weights = _engine()
    if not metadata.has_band_dimension():
        return
    names = metadata.band_dimension.band_names
    if not names or not all(isinstance(n, str) for n in names):
        return
    have = {weights.canonical_band(n) for n in names}
    missing = [b for b in bands if weights.canonical_band(b) not in have]
    if missing:
        raise ValueError(f"band dimension {metadata.band_dimension.name!r} lacks bands {missing} that the model needs")


def apply_metadata(metadata: CollectionMetadata, context: dict) -> CollectionMetadata:
    """The cube's spatial step divided by the factor (10 m -> 5 m): the context's ``factor``
    (default 2), cross-checked with the weights' metadata where they are found."""
    ctx, weights = _engine()
    context = ctx.check_context(context)
    factor, meta = ctx.factor_of(context), _weights_meta(context)
    if meta is not None and "factor" in context and int(meta["factor"]) != factor:
        raise ValueError(f"the weights upscale by {meta['factor']}, the context expects factor {factor}")
    factor = int(meta["factor"]) if meta is not None else factor
    _check_bands(metadata, meta["bands"] if meta is not None else weights.MODEL_BANDS)
    steps = [d.step for d in metadata.spatial_dimensions]
    if len(steps) != 2 or any(s is None for s in steps):
        raise ValueError(f"apply_metadata needs two spatial dimensions with a known step, got {steps}")
    return metadata.resample_spatial(resolution=tuple(float(s) / factor for s in steps))


def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:
    """Entry point for both runtimes: Python-Jep (positional, XarrayDataCube) and run_code.

    Accepts an ``XarrayDataCube`` or a bare ``xarray.DataArray``; returns the same kind.  The
    XarrayDataCube result is float32 (what the Jep runtime reads back).
    """
    ctx, _ = _engine()
    context = ctx.check_context(context)
    try:
        from s2sr.engine.cube import superresolve_cube
    except ImportError as exc:
        raise RuntimeError(f"{ENGINE_MISSING} ({exc})") from None
    if isinstance(cube, xarray.DataArray):
        return superresolve_cube(cube, context)
    result = superresolve_cube(cube.get_array(), context)
    return XarrayDataCube(result.astype(np.float32, copy=False))
