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
   receptive fields, read from the weights' metadata; never a hand-typed constant) plus the
   reach of the engine's no-data fill;
5. ``filter_bbox`` back to ``spatial_extent``.  The over-fetch: openEO's python driver (CDSE,
   Terrascope) buffers ``load_collection``'s extent by the ``apply_neighborhood`` overlap in its
   dry run (``pixel_buffer``), so the windows at the extent's edges see real data instead of
   no-data (geopyspark-driver #982), and this final ``filter_bbox`` clips the buffer away.

``default_job_options``: the dependency archives (``udf-dependency-archives``: the hosted
onnxruntime archive ``#onnx_deps`` and, once an admin hosts it, s2sr's own archive
``<url>#s2sr_deps`` from ``s2sr-deploy archive``, which the UDF puts on ``sys.path``) and the
executor's memory, sized from the measured peak of one window (``job_options``).  The committed
JSON carries no URL of ours: ``s2sr-deploy build --archive-url URL`` writes the deployable one.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import math

from openeo.api.process import Parameter
from openeo.processes import lte
from openeo.rest.datacube import DataCube
from openeo.rest.udp import build_process_dict

import s2sr
from s2sr import engine
from s2sr.udf import udf_source

UDP_ID = "sentinel2_superresolution"
UDP_JSON = Path(__file__).with_name(f"{UDP_ID}.json")
BANDS_10M = list(engine.BANDS_10M)  # load_collection's band lists (JSON arrays)
BANDS_20M = list(engine.BANDS_20M)
PRODUCTS = {"SENTINEL2_L2A": "L2A surface reflectance", "SENTINEL2_L1C": "L1C top-of-atmosphere reflectance"}
#: the folder s2sr's dependency archive unpacks to on a worker (``<url>#s2sr_deps``): the first
#: of the UDF's ``DEPENDENCY_DIRS`` and ``s2sr.deploy.archive.TARGET_DIR`` (tests keep them equal)
ARCHIVE_TARGET = "s2sr_deps"
#: the onnxruntime archive CDSE hosts for UDFs (Python 3.11), as ESA APEx's ML services use it
ONNX_DEPS_ARCHIVE = "https://s3.waw3-1.cloudferro.com/swift/v1/project_dependencies/onnx_deps_python311.zip#onnx_deps"
#: the Python the hosted archives are built for: run_udf's ``version``
UDF_PYTHON_VERSION = "3.11"
# input window incl. overlap (output windows are 2x): 512 px keeps the overlap at (512/470)^2 = 1.19x
# of the computed pixels (256 px: 1.43x) and ran 1.29x faster per output pixel than 256 px windows
# - docs/benchmarks_zen3.md
WINDOW_PX = 512

# ---- job options, from the largest measured peak of one 512 px window (2 threads, peak RSS of the
# whole process) on each runtime a worker may run: ncnn (int8_dynamic / fp32) 1.48 GiB (Zen 3,
# docs/speed_notes.md; 1.45 in docs/benchmarks_zen3.md), onnxruntime 4.06 GiB (the largest measured, the
# earlier export with reflection padding, docs/speed_notes.md; the fair export 3.01 in docs/benchmarks_zen4.md,
# 3.00 on Zen 3).  A worker with only the hosted onnx_deps archive runs onnxruntime: size for it.
# 1 thread instead of 2 changes these by little (ncnn 1.51 against 1.57 GiB on Zen 4).
WINDOW_PEAK_GIB = {"ncnn": 1.48, "onnxruntime": 4.06}
MARGIN_GIB = 0.5  # the JVM's own native overhead (Jep, netty, 128m in job_options.py) and allocator slack
# Per date in a window, besides the network's peak: the input tile (10 bands x 512^2 float32 =
# 10.5 MB, a direct buffer: native memory), the UDF's float32 result (10 x 1024^2 x 4 = 42 MB) and
# its reflectance copy of the input (10.5 MB) in Python, i.e. native memory; the JVM copies the
# result into its heap (42 MB) and holds the input tile there (10.5 MB).  Computed, not measured.
DATE_NATIVE_MIB = 64
DATE_HEAP_MIB = 53
HEAP_BASE_GIB = 1.0  # geotrellis' own working set per task (retile, remove_overlap): the backends' default is 2g
# Dates per window.  geopyspark's apply_neighborhood (openeo-geopyspark-driver,
# openeogeotrellis/geopysparkdatacube.py, apply_neighborhood) takes either the whole time
# dimension per window (t size null: Udf.runUserCodeSpatioTemporalWithBands, a (t, bands, y, x)
# cube) or exactly one date (t size "P1D" and no t overlap: Udf.runUserCodeWithBands, one
# (bands, y, x) cube per date and spatial key, apply_metadata's resolution change honoured,
# openeo-geotrellis-extensions Udf.scala); any other t size is refused.  "P1D" bounds a window's
# memory whatever the temporal extent (one date), and the UDF works date by date anyway; the
# local engine and the harness (s2sr.deploy.local, s2sr.deploy.geopyspark) run it the same way.
# With ONE_DATE_PER_WINDOW False the job options would cover MAX_DATES_PER_WINDOW dates.
ONE_DATE_PER_WINDOW = True
MAX_DATES_PER_WINDOW = 16
# Two windows at once per executor of 2 CPUs, on 1 thread each: Spark runs executor-cores /
# task-cpus tasks at once in one executor JVM, each in its own Jep interpreter, so the memory
# above is per task, times the tasks per executor.  Spark sets OMP_NUM_THREADS to task-cpus, the
# engine's cap.  Why 1 thread: a second thread speeds a window up 1.4-1.6x, not 2x, and timed side
# by side two 1-thread windows at once each ran 1.02-1.18x the time of one alone: fewer core-minutes
# per tile on every run (benchmarks/inference.py's tasks_side_by_side; docs/speed_notes.md), at
# twice the memory.
EXECUTOR_CORES = 2
TASK_CPUS = 1


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
    """``size`` and ``overlap`` (input pixels) for ``apply_neighborhood``: the overlap with which
    windows equal the whole-scene run (the largest margin plus the no-data fill's reach)."""
    from s2sr.engine.nodata import required_overlap

    overlap = max(required_overlap(m) for m in models.values())
    size = window - 2 * overlap
    if size <= overlap:  # geopyspark misbehaves with overlap >= size (#1191)
        size = 2 * overlap + 8
    return {"size": size, "overlap": overlap}


def _px(n: int) -> List[Dict[str, Any]]:
    """``apply_neighborhood`` size / overlap of ``n`` pixels along x and y."""
    return [{"dimension": d, "value": n, "unit": "px"} for d in ("x", "y")]


#: what each shipped model is, for the UDP's ``model`` parameter (the model card says more)
MODEL_NOTES = {
    "carn_3x3x64g4sw": "the default, the most accurate",
    "carn_2x3x64g4sw": "the fast one: two cascades instead of three, distilled from the default; a tile in "
                       "1.3-1.4x fewer core-minutes, mean 10 m gains 0.01-0.09 dB lower",
    "carn_3x3x64g4sw_l1c": "the pre-trained weights, sharper on L1C radiometry like the training scene's",
    "carn_3x3x64g4sw_gan": "GAN fine-tuned from the pre-trained weights: more texture, less faithful radiometry",
}


def _model_description(models: Sequence[str]) -> str:
    notes = "; ".join(f"{m}: {MODEL_NOTES[m]}" for m in models if m in MODEL_NOTES)
    return "Super-resolution model (weights shipped with s2sr)" + (f". {notes}." if notes else ".")


def parameters(models: Sequence[str], default_model: str) -> List[Parameter]:
    return [
        Parameter.bounding_box(
            name="spatial_extent",
            description="Area to super-resolve (the output's extent): a bounding box west, south, east, north "
                        "with its crs (default EPSG:4326).",
        ),
        Parameter.temporal_interval(name="temporal_extent", description="Dates to super-resolve (each date is processed on its own)."),
        Parameter.string(
            name="product", default="SENTINEL2_L2A", values=list(PRODUCTS),
            description="Product level: the collection to load. L2A (surface reflectance) or L1C (top of atmosphere); "
                        "both as reflectance x 10000 with the processing-baseline offsets already harmonised by the backend.",
        ),
        Parameter.string(name="model", default=default_model, values=list(models),
                         description=_model_description(models)),
        Parameter.string(name="precision", default="auto", values=list(engine.PRECISIONS),
                         description="Network arithmetic: auto (one choice per CPU model, never mixed within a job), "
                                     "fp32 (the reference), bf16, int8 (opt-in, needs <model>_int8.pt weights; clips "
                                     "bright point targets), or int8_dynamic (quantized at load, cannot clip)."),
        Parameter.string(name="runtime", default="auto", values=list(engine.RUNTIMES),
                         description="Inference runtime: auto (whichever runtime the worker has: onnxruntime from the "
                                     "hosted onnx_deps archive on CDSE), or one of them by name."),
        Parameter.number(name="swir_cap", default=engine.SWIR_CAP_K,
                         description="Cap on B11 / B12's detail over bicubic, in units of each band's own local input contrast "
                                     "(where the SWIR is flat under textured visible bands, e.g. snow, the network would "
                                     "otherwise draw the visible texture into it); 0: the network's output as it is."),
        Parameter.number(name="max_cloud_cover", default=50, description="Skip scenes with more cloud cover than this (percent)."),
        Parameter.number(name="radiometric_offset", default=0,
                         description="Added to the DN before scaling (reflectance = (DN + offset) / 10000): -1000 for "
                                     "processing baseline >= 04.00 products that still carry the offset; 0 for harmonised collections."),
    ]


def _gib(value: float) -> str:
    """A memory job option: ``value`` GiB rounded up to a whole 256 MiB, in MiB (``"5376m"``)."""
    return f"{math.ceil(value * 4) * 256}m"


def job_options(archive_url: Optional[str] = None, one_date_per_window: bool = ONE_DATE_PER_WINDOW,
                max_dates: int = MAX_DATES_PER_WINDOW, task_cpus: int = TASK_CPUS) -> Dict[str, Any]:
    """The batch job options the UDP needs on a geopyspark backend (CDSE, Terrascope).

    - ``udf-dependency-archives``: s2sr's archive (``<archive_url>#s2sr_deps``; none without a
      URL) and the hosted onnxruntime one;
    - ``executor-memoryOverhead``: the memory outside the JVM heap.  Jep runs the UDF's Python
      inside the executor's JVM process, so the network's peak and the window's arrays are
      native memory of that process and count here, not in ``python-memory``;
    - ``python-memory``: ``"disable"``.  It caps pyspark's separate Python worker processes
      (``spark.executor.pyspark.memory``), which a Python-Jep UDF does not use; and set without
      an explicit overhead it cuts ``executor-memoryOverhead`` to 128m
      (openeo-geopyspark-driver ``openeogeotrellis/job_options.py``, ``JobOptions.from_dict``);
    - ``executor-memory``: the JVM heap (tiles and the results' copies);
    - ``executor-cores`` 2, ``task-cpus`` 1 (the default): two windows at once per executor, on
      1 thread each; the native memory and the heap above are per window, so twice over.
      ``task_cpus=2``: one window at a time on 2 threads, half the memory, more core-minutes.
    """
    dates = 1 if one_date_per_window else int(max_dates)
    if dates < 1:
        raise ValueError(f"max_dates must be >= 1, got {max_dates}")
    if task_cpus not in (1, EXECUTOR_CORES):
        raise ValueError(f"task_cpus must be 1 or {EXECUTOR_CORES} (windows per executor: a whole number), got {task_cpus}")
    tasks = EXECUTOR_CORES // task_cpus
    native = tasks * (max(WINDOW_PEAK_GIB.values()) + dates * DATE_NATIVE_MIB / 1024) + MARGIN_GIB
    heap = tasks * (HEAP_BASE_GIB + dates * DATE_HEAP_MIB / 1024)
    archives = ([f"{archive_url}#{ARCHIVE_TARGET}"] if archive_url else []) + [ONNX_DEPS_ARCHIVE]
    return {
        "udf-dependency-archives": archives,
        "executor-memory": _gib(heap),
        "executor-memoryOverhead": _gib(native),
        "python-memory": "disable",
        "executor-cores": EXECUTOR_CORES,
        "task-cpus": task_cpus,
    }


def _load(bands: List[str]) -> DataCube:
    ref = lambda name: Parameter(name, description=name)  # noqa: E731  (a reference; declared in parameters())
    return DataCube.load_collection(
        ref("product"), connection=None, spatial_extent=ref("spatial_extent"),
        temporal_extent=ref("temporal_extent"), bands=bands, fetch_metadata=False,
        properties={"eo:cloud_cover": lambda v: lte(v, ref("max_cloud_cover"))},
    )


def _sizes(geometry: Dict[str, int], one_date_per_window: bool) -> Dict[str, List[Dict[str, Any]]]:
    """``apply_neighborhood``'s ``size`` and ``overlap``: x / y pixels, plus ``t: "P1D"`` (one
    date per window, no t overlap) where asked (see ONE_DATE_PER_WINDOW)."""
    size = _px(geometry["size"])
    if one_date_per_window:
        size.append({"dimension": "t", "value": "P1D"})
    return {"size": size, "overlap": _px(geometry["overlap"])}


def build_graph(models: Optional[Dict[str, Dict[str, Any]]] = None, window: int = WINDOW_PX,
                one_date_per_window: bool = ONE_DATE_PER_WINDOW) -> DataCube:
    """The UDP's body as a client DataCube (parameters referenced with ``from_parameter``)."""
    import openeo

    models = models or shipped_models()
    geometry = neighborhood_geometry(models, window)
    cube10 = _load(BANDS_10M)
    cube20 = _load(BANDS_20M).resample_cube_spatial(target=cube10, method="cubic")
    cube = cube10.merge_cubes(cube20)
    context = {
        "model": {"from_parameter": "model"},
        "offset": {"from_parameter": "radiometric_offset"},
        "precision": {"from_parameter": "precision"},
        "runtime": {"from_parameter": "runtime"},
        "swir_cap": {"from_parameter": "swir_cap"},
        "overlap": geometry["overlap"],
    }
    udf = openeo.UDF(udf_source(), runtime="Python-Jep", version=UDF_PYTHON_VERSION, context=context)
    cube = cube.apply_neighborhood(udf, **_sizes(geometry, one_date_per_window))
    return cube.filter_bbox(Parameter("spatial_extent", description="spatial_extent"))


def build_udp(models: Optional[Dict[str, Dict[str, Any]]] = None, archive_url: Optional[str] = None,
              window: int = WINDOW_PX, one_date_per_window: bool = ONE_DATE_PER_WINDOW) -> Dict[str, Any]:
    """The complete UDP document (id, parameters, process graph, job options).

    ``archive_url``: where s2sr's dependency archive (``s2sr-deploy archive``) is hosted; without
    it the job options name only the hosted onnxruntime archive, and the workers need s2sr some
    other way (the committed JSON: a template for ``s2sr-deploy build --archive-url``).
    """
    models = models or shipped_models()
    default = engine.DEFAULT_MODEL if engine.DEFAULT_MODEL in models else sorted(models)[0]
    geometry = neighborhood_geometry(models, window)
    dates = ("one date per window" if one_date_per_window else
             f"each window holds every date (job options sized for {MAX_DATES_PER_WINDOW} dates)")
    udp = build_process_dict(
        process_graph=build_graph(models, window, one_date_per_window),
        process_id=UDP_ID,
        summary="Sentinel-2 super-resolution: ten 10 m / 20 m bands to 5 m (s2sr, EVOLAND shallow SISR)",
        description=(
            "Super-resolves B02 B03 B04 B08 (10 m) and B05 B06 B07 B8A B11 B12 (20 m) to 5 m with a shallow CARN "
            "network (CESBIO/EVOLAND design) run as a UDF. The 20 m bands are brought to 10 m with cubic resampling, "
            f"then the network runs on {geometry['size']} px windows with {geometry['overlap']} px overlap (its "
            f"receptive field, then the reach of the cap on the SWIR bands' detail and of the no-data fill), seam-free; {dates}. Output: the ten bands at 5 m, float32 in the input's units, "
            f"no-data NaN. s2sr {s2sr.__version__}."
        ),
        parameters=parameters(list(models), default),
        returns={"description": "The ten bands at 5 m resolution (float32, no-data NaN).",
                 "schema": {"type": "object", "subtype": "datacube"}},
        categories=["cubes", "machine learning"],
        default_job_options=job_options(archive_url, one_date_per_window),
    )
    return json.loads(json.dumps(udp))  # plain JSON types only


def archive_urls(udp: Dict[str, Any]) -> List[str]:
    """The URLs of s2sr's own dependency archive (``<url>#s2sr_deps``) in a UDP's job options."""
    archives = (udp.get("default_job_options") or {}).get("udf-dependency-archives") or []
    return [a.rsplit("#", 1)[0] for a in archives if a.endswith(f"#{ARCHIVE_TARGET}")]


def write_udp_json(path: Path = UDP_JSON, **kwargs: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(build_udp(**kwargs), indent=2) + "\n")
    return path


def load_udp_json(path: Path = UDP_JSON) -> Dict[str, Any]:
    return json.loads(Path(path).read_text())


def superresolve(cube: DataCube, model: str = engine.DEFAULT_MODEL, offset: float = 0.0, size: Optional[int] = None,
                 overlap: Optional[int] = None, precision: str = "auto", runtime: str = "auto",
                 swir_cap: float = engine.SWIR_CAP_K) -> DataCube:
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
        raise ValueError(f"overlap {overlap} is smaller than the {geometry['overlap']} px the model needs (its margin plus the "
                         "SWIR cap's and the no-data fill's reach): tiles would show seams")
    if precision not in engine.PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; available: {list(engine.PRECISIONS)}")
    if runtime not in engine.RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; available: {list(engine.RUNTIMES)}")
    check, takes, _ = engine.context.KEYS["swir_cap"]  # the UDF's own rule for the key
    if swir_cap is not None and not check(swir_cap):
        raise ValueError(f"swir_cap must be {takes}, got {swir_cap!r}")
    udf = openeo.UDF(udf_source(), runtime="Python-Jep", version=UDF_PYTHON_VERSION,
                     context={"model": model, "offset": offset, "overlap": overlap, "precision": precision, "runtime": runtime,
                              "swir_cap": swir_cap})
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


__all__ = ["ARCHIVE_TARGET", "ONNX_DEPS_ARCHIVE", "UDP_ID", "UDP_JSON", "archive_urls", "build_udp", "build_graph", "job_options",
           "load_s2", "load_udp_json", "superresolve", "write_udp_json"]
