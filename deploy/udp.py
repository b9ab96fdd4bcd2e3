"""The openEO user-defined process ``sentinel2_superresolution``: a pure builder.

``build_udp()`` returns the UDP as a dict (no connection needed); the committed
``deploy/sentinel2_superresolution.json`` is its output (a test keeps them equal; regenerate
with ``s2sr-deploy build``).  The graph:

1. ``load_collection`` twice from the product's collection (``SENTINEL2_L2A`` or
   ``SENTINEL2_L1C``): the 10 m bands B02 B03 B04 B08 and the 20 m bands B05 B06 B07 B8A B11
   B12, over ``spatial_extent`` / ``temporal_extent``, scenes with cloud cover <=
   ``max_cloud_cover``;
2. ``resample_cube_spatial`` of the 20 m bands onto the 10 m cube with ``method="cubic"``
   (GDAL's cubic, the upsampling training simulates), never the backend's implicit nearest;
3. ``merge_cubes``: the ten bands in the models' order;
4. ``apply_neighborhood`` with ``run_udf`` (the UDF source as text, runtime ``Python-Jep``,
   which lets the geopyspark backends change resolution with ``apply_metadata``): windows of
   ``size`` pixels plus ``overlap`` = the largest margin of the offered models (from their
   receptive fields, read from the weights' metadata; never a hand-typed constant);
5. ``filter_bbox`` back to ``spatial_extent``.  The over-fetch: openEO's python driver (CDSE,
   Terrascope) buffers ``load_collection``'s extent by the ``apply_neighborhood`` overlap in its
   dry run (``pixel_buffer``), so the windows at the extent's edges see real data instead of
   no-data (geopyspark-driver #982), and this final ``filter_bbox`` clips the buffer away.

``default_job_options`` carry the weights archive (``udf-dependency-archives``, unpacked to
``s2sr_weights/`` where the UDF looks first) and the worker memory.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from openeo.api.process import Parameter
from openeo.processes import lte
from openeo.rest.datacube import DataCube
from openeo.rest.udp import build_process_dict

import s2sr
from s2sr import engine
from s2sr.udf import udf_source

UDP_ID = "sentinel2_superresolution"
UDP_JSON = Path(__file__).with_name(f"{UDP_ID}.json")
BANDS_10M = ["B02", "B03", "B04", "B08"]
BANDS_20M = ["B05", "B06", "B07", "B8A", "B11", "B12"]
PRODUCTS = {"SENTINEL2_L2A": "L2A surface reflectance", "SENTINEL2_L1C": "L1C top-of-atmosphere reflectance"}
#: Where an admin hosts the weights archive (``s2sr-deploy weights``); replaced at registration.
DEFAULT_WEIGHTS_URL = f"https://s2sr.example.org/weights/s2sr_weights-{s2sr.__version__}.zip"
# input window incl. overlap (output windows are 2x): 512 px keeps the overlap at (512/470)^2 = 1.19x
# of the computed pixels (256 px: 1.43x) and ran 1.29x faster per output pixel than 256 px windows,
# at 1.2 GiB peak (bf16; 1.8 GiB fp32) - docs/benchmarks.md
WINDOW_PX = 512
PYTHON_MEMORY = "4g"


def shipped_models() -> Dict[str, Dict[str, Any]]:
    """Name -> metadata of every weights file shipped in the package (the UDP's model enum)."""
    from s2sr.udf import default_weights_dir

    models = {}
    for path in sorted(default_weights_dir().glob("*.pt")):
        models[path.stem] = engine.read_metadata(path)
    if not models:
        raise RuntimeError(f"no weights in {default_weights_dir()}")
    return models


def neighborhood_geometry(models: Dict[str, Dict[str, Any]], window: int = WINDOW_PX) -> Dict[str, int]:
    """``size`` and ``overlap`` (input pixels) for ``apply_neighborhood``: overlap = largest margin."""
    overlap = max(int(m["margin"]) for m in models.values())
    size = window - 2 * overlap
    if size <= overlap:  # geopyspark misbehaves with overlap >= size (#1191)
        size = 2 * overlap + 8
    return {"size": size, "overlap": overlap}


def _px(n: int) -> List[Dict[str, Any]]:
    """``apply_neighborhood`` size / overlap of ``n`` pixels along x and y."""
    return [{"dimension": d, "value": n, "unit": "px"} for d in ("x", "y")]


def parameters(models: Sequence[str], default_model: str) -> List[Parameter]:
    return [
        Parameter.spatial_extent(name="spatial_extent", description="Area to super-resolve (the output's extent)."),
        Parameter.temporal_interval(name="temporal_extent", description="Dates to super-resolve (each date is processed on its own)."),
        Parameter.string(
            name="product", default="SENTINEL2_L2A", values=list(PRODUCTS),
            description="Product level: the collection to load. L2A (surface reflectance) or L1C (top of atmosphere); "
                        "both as reflectance x 10000 with the processing-baseline offsets already harmonised by the backend.",
        ),
        Parameter.string(name="model", default=default_model, values=list(models),
                         description="Super-resolution model (weights shipped with s2sr)."),
        Parameter.string(name="output_dtype", default="float32", values=["float32", "int16"],
                         description="float32 in the input's units with NaN no-data, or int16 values with no-data -10000."),
        Parameter.string(name="precision", default="auto", values=list(engine.PRECISIONS),
                         description="Network arithmetic: auto (fp32 or bf16, whichever the worker runs faster; "
                                     "PSNR within 0.01 dB), fp32 (the reference), bf16, int8 (opt-in, needs "
                                     "<model>_int8.pt weights; clips bright point targets), or int8_dynamic (opt-in, "
                                     "quantized at load, cannot clip; PSNR drop 0.004 dB on VNNI CPUs, 0.025 dB elsewhere; "
                                     "results depend slightly on the chunking)."),
        Parameter.string(name="runtime", default="auto", values=list(engine.RUNTIMES),
                         description="Inference runtime: auto (torch or ncnn, whichever the worker runs faster; "
                                     "ncnn only where the worker has the ncnn package), torch, or ncnn (fp32 or bf16; the "
                                     "backbone converted at load; Winograd convolutions, fp32 within 1e-5 of torch)."),
        Parameter.number(name="max_cloud_cover", default=50, description="Skip scenes with more cloud cover than this (percent)."),
        Parameter.number(name="radiometric_offset", default=0,
                         description="Added to the DN before scaling (reflectance = (DN + offset) / 10000): -1000 for "
                                     "processing baseline >= 04.00 products that still carry the offset; 0 for harmonised collections."),
    ]


def _load(bands: List[str]) -> DataCube:
    ref = lambda name: Parameter(name, description=name)  # noqa: E731  (a reference; declared in parameters())
    return DataCube.load_collection(
        ref("product"), connection=None, spatial_extent=ref("spatial_extent"),
        temporal_extent=ref("temporal_extent"), bands=bands, fetch_metadata=False,
        properties={"eo:cloud_cover": lambda v: lte(v, ref("max_cloud_cover"))},
    )


def build_graph(models: Optional[Dict[str, Dict[str, Any]]] = None, window: int = WINDOW_PX) -> DataCube:
    """The UDP's body as a client DataCube (parameters referenced with ``from_parameter``)."""
    import openeo

    models = models or shipped_models()
    geometry = neighborhood_geometry(models, window)
    cube10 = _load(BANDS_10M)
    cube20 = _load(BANDS_20M).resample_cube_spatial(target=cube10, method="cubic")
    cube = cube10.merge_cubes(cube20)
    context = {
        "model": {"from_parameter": "model"},
        "output_dtype": {"from_parameter": "output_dtype"},
        "offset": {"from_parameter": "radiometric_offset"},
        "precision": {"from_parameter": "precision"},
        "runtime": {"from_parameter": "runtime"},
        "overlap": geometry["overlap"],
    }
    udf = openeo.UDF(udf_source(), runtime="Python-Jep", context=context)
    cube = cube.apply_neighborhood(udf, size=_px(geometry["size"]), overlap=_px(geometry["overlap"]))
    return cube.filter_bbox(Parameter("spatial_extent", description="spatial_extent"))


def build_udp(models: Optional[Dict[str, Dict[str, Any]]] = None, weights_url: str = DEFAULT_WEIGHTS_URL,
              window: int = WINDOW_PX) -> Dict[str, Any]:
    """The complete UDP document (id, parameters, process graph, job options)."""
    models = models or shipped_models()
    default = engine.DEFAULT_MODEL if engine.DEFAULT_MODEL in models else sorted(models)[0]
    geometry = neighborhood_geometry(models, window)
    udp = build_process_dict(
        process_graph=build_graph(models, window),
        process_id=UDP_ID,
        summary="Sentinel-2 super-resolution: ten 10 m / 20 m bands to 5 m (s2sr, EVOLAND shallow SISR)",
        description=(
            "Super-resolves B02 B03 B04 B08 (10 m) and B05 B06 B07 B8A B11 B12 (20 m) to 5 m with a shallow CARN "
            "network (CESBIO/EVOLAND design) run as a UDF. The 20 m bands are brought to 10 m with cubic resampling, "
            f"then the network runs on {geometry['size']} px windows with {geometry['overlap']} px overlap (its "
            "receptive field), seam-free. Output: the ten bands at 5 m, same units as the input. "
            f"s2sr {s2sr.__version__}."
        ),
        parameters=parameters(list(models), default),
        returns={"description": "The ten bands at 5 m resolution.", "schema": {"type": "object", "subtype": "datacube"}},
        categories=["cubes", "machine learning"],
        default_job_options={"udf-dependency-archives": [f"{weights_url}#{engine.ARCHIVE_DIR}"],
                             "python-memory": PYTHON_MEMORY},
    )
    return json.loads(json.dumps(udp))  # plain JSON types only


def write_udp_json(path: Path = UDP_JSON, **kwargs: Any) -> Path:
    path.write_text(json.dumps(build_udp(**kwargs), indent=2) + "\n")
    return path


def load_udp_json(path: Path = UDP_JSON) -> Dict[str, Any]:
    return json.loads(Path(path).read_text())


def superresolve(cube: DataCube, model: str = engine.DEFAULT_MODEL, output_dtype: str = "float32",
                 offset: float = 0.0, size: Optional[int] = None, overlap: Optional[int] = None,
                 precision: str = "auto", runtime: str = "auto") -> DataCube:
    """Add s2sr to an existing openEO cube holding the ten bands on the 10 m grid.

    One line for a Jupyter user: ``sr = superresolve(cube)``.  Bring the 20 m bands to the
    10 m grid with ``resample_cube_spatial(..., method="cubic")`` first (see ``load_s2``),
    not with the implicit nearest of a single ``load_collection``.
    """
    import openeo

    geometry = neighborhood_geometry({model: _model_metadata(model)})
    size = size or geometry["size"]
    overlap = overlap if overlap is not None else geometry["overlap"]
    if overlap < geometry["overlap"]:
        raise ValueError(f"overlap {overlap} is smaller than the model's margin {geometry['overlap']}: tiles would show seams")
    if precision not in engine.PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; available: {list(engine.PRECISIONS)}")
    if runtime not in engine.RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; available: {list(engine.RUNTIMES)}")
    udf = openeo.UDF(udf_source(), runtime="Python-Jep", context={"model": model, "output_dtype": output_dtype,
                                                                 "offset": offset, "overlap": overlap, "precision": precision,
                                                                 "runtime": runtime})
    return cube.apply_neighborhood(udf, size=_px(size), overlap=_px(overlap))


def load_s2(connection: Any, spatial_extent: Any, temporal_extent: Any, product: str = "SENTINEL2_L2A",
            max_cloud_cover: float = 50) -> DataCube:
    """The ten bands on the 10 m grid, 20 m bands cubic-resampled (as the UDP and training do)."""
    kw = dict(spatial_extent=spatial_extent, temporal_extent=temporal_extent, max_cloud_cover=max_cloud_cover)
    cube10 = connection.load_collection(product, bands=BANDS_10M, **kw)
    cube20 = connection.load_collection(product, bands=BANDS_20M, **kw)
    return cube10.merge_cubes(cube20.resample_cube_spatial(target=cube10, method="cubic"))


def _model_metadata(model: str) -> Dict[str, Any]:
    models = shipped_models()
    if model not in models:
        raise ValueError(f"unknown model {model!r}; shipped models: {sorted(models)}")
    return models[model]


__all__ = ["UDP_ID", "UDP_JSON", "build_udp", "build_graph", "load_s2", "load_udp_json", "superresolve", "write_udp_json"]
