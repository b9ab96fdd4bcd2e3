"""Run the UDP's process graph on this machine: a small openEO engine over xarray and dask.

``LocalEngine().run_udp(arguments={...})`` executes ``deploy/sentinel2_superresolution.json``,
the very JSON a backend receives, with arguments for its parameters; ``run_udp(...)`` is the
one-call form.  Collections come from a local ``Catalogue``: ``SENTINEL2_L1C`` is the sample
scene shipped in ``s2sr/sample_data``; ``Catalogue.register_files`` adds a user's GeoTIFF or
NetCDF (the ten bands in one file, or separate 10 m / 20 m files) as a collection.

Why an own executor and not openeo-processes-dask (tried first, with
openeo-pg-parser-networkx 2026.3.3 and openeo-processes-dask 2026.9.1):

- the parser's callables share one ``results_cache`` per graph and write resolved arguments
  back into the graph's node data, so a callback (``apply_neighborhood``'s ``run_udf``) is
  neither re-entrant (the second window gets the first window's cached result) nor
  thread-safe (parallel windows would race on the shared node data);
- its ``@process`` decorator resolves only top-level ``from_parameter`` references: the
  ``run_udf`` context ``{"model": {"from_parameter": "model"}, ...}`` reaches the UDF as
  unresolved ``ParameterReference`` objects, and a callback's scope holds only the parameters
  its parent passes (``data``, ``context``), not the UDP's; the ``properties`` callbacks of
  ``load_collection`` stay raw dicts;
- its ``run_udf`` follows the plain ``Python`` runtime, not ``Python-Jep``; its
  ``load_collection`` reads STAC only; and importing its implementations pulls odc-stac,
  odc-loader, planetary-computer, pystac-client, dask-geopandas, xvec and stac-validator
  (``[implementations]`` also wants ``gdal``, which does not build here), for the two
  processes left after replacing those (``merge_cubes``, ``filter_bbox``).

This executor instead evaluates each graph (top level or callback) with a fresh memo, so every
window runs its own ``run_udf``; ``from_parameter`` resolves in the callback's parameters, then
in the enclosing process's (the UDP's), at any depth of an argument; ``from_node`` and
callbacks (``{"process_graph": ...}``) resolve recursively.  Processes: ``load_collection``,
``resample_cube_spatial``, ``merge_cubes``, ``apply_neighborhood``, ``run_udf``,
``filter_bbox``, ``lte`` and ``save_result``; any other id fails before anything runs, with a
message naming it, and an error inside a process names the process and node.

Backend behaviour reproduced:

- cubes are ``xarray.DataArray [t, bands, y, x]`` float32, NaN no-data, pixel-centre float64
  coordinates (y descending), CRS in ``attrs["crs"]``;
- ``load_collection`` reads only the requested bands, the items whose date falls in
  ``[start, end)`` and whose properties pass the ``properties`` callbacks (a property an item
  lacks does not filter it), the pixels touching the extent (default CRS EPSG:4326), plus a
  buffer of the ``apply_neighborhood`` overlap found downstream in a dry run (openEO's python
  driver's ``pixel_buffer``), so the windows at the extent's edges see real data and the
  final ``filter_bbox`` clips real data (geopyspark-driver #982);
- ``resample_cube_spatial`` warps with GDAL (rasterio) onto the target's grid;
- ``apply_neighborhood`` is ``s2sr.deploy.neighborhood`` (windows of ``size + 2 * overlap``,
  NaN past edges, the geopyspark resolution-change rule); windows run in parallel on dask's
  threaded scheduler (or a ``dask.distributed`` scheduler at an address), with a tqdm bar
  counting windows x dates as each finishes (``on_progress`` gets the same counts);
- ``run_udf`` with runtime ``Python-Jep`` runs as the geopyspark executor runs it
  (``s2sr.deploy.geopyspark``, after openeo-geotrellis-extensions ``Udf.scala``): the UDF's
  ``apply_metadata`` once per job in its own namespace, then every window's UDF text in a fresh
  namespace (shared modules) with the executor's float32 coordinates and its output checks;
  runtime ``Python`` goes through ``openeo.udf.run_code.run_udf_code``;
  the engine's ``udf_context`` keys (``s2sr run --weights``: ``weights``) go over the graph's context;
- ``filter_bbox`` keeps the pixels whose centres lie in the extent.
"""

import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
import xarray
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window

from s2sr.deploy import geopyspark, neighborhood
from s2sr.engine.coords import outer_edge, pixel_centres, regular_step
from s2sr.engine.nodata import INT16_NODATA, to_int16
from s2sr.engine.weights import BANDS_10M, BANDS_20M, MODEL_BANDS

BAND_DIM = "bands"
TIME_DIM = "t"
DEFAULT_BBOX_CRS = "EPSG:4326"
#: Items without a date of their own (an undated user file) carry this one.
PLACEHOLDER_DATE = "2000-01-01"
#: Band order of unnamed input files: 10 m bands, 20 m bands, or all ten (the models' order).
UNNAMED_ORDER = {4: BANDS_10M, 6: BANDS_20M, 10: MODEL_BANDS}
SAMPLE_COLLECTION = "SENTINEL2_L1C"
RESAMPLING = {
    "near": Resampling.nearest, "bilinear": Resampling.bilinear, "cubic": Resampling.cubic,
    "cubicspline": Resampling.cubic_spline, "lanczos": Resampling.lanczos, "average": Resampling.average,
    "mode": Resampling.mode, "max": Resampling.max, "min": Resampling.min, "med": Resampling.med,
    "q1": Resampling.q1, "q3": Resampling.q3,
}


# --------------------------------------------------------------------------- errors

class ProcessError(RuntimeError):
    """A process failed, or is missing: the message names the process and its node."""

    def __init__(self, process_id: str, node_id: Optional[str], message: str):
        self.process_id, self.node_id = process_id, node_id
        where = f"{process_id}" + (f" (node {node_id!r})" if node_id else "")
        super().__init__(f"{where}: {message}")


class ProcessMissing(ProcessError):
    """The graph uses a process this engine does not implement."""


class ParameterError(ValueError):
    """Arguments that do not fit the UDP's parameters."""


# --------------------------------------------------------------------------- grids

@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (north up) and size in pixels."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def res(self) -> Tuple[float, float]:
        return float(self.transform.a), float(-self.transform.e)

    @property
    def bounds(self) -> Tuple[float, float, float, float]:
        t = self.transform
        return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f

    def window(self, win: Window) -> "Grid":
        col, row = int(win.col_off), int(win.row_off)
        return Grid(self.crs, self.transform @ Affine.translation(col, row), int(win.width), int(win.height))

    def coords(self) -> Dict[str, np.ndarray]:
        """Pixel-centre coordinates, float64, y descending."""
        t = self.transform
        return {"y": pixel_centres(t.f, t.e, self.height), "x": pixel_centres(t.c, t.a, self.width)}


def cube_grid(cube: xarray.DataArray) -> Grid:
    """The grid of a cube from its pixel-centre coordinates and ``attrs['crs']``."""
    x, y = np.asarray(cube.x.values, np.float64), np.asarray(cube.y.values, np.float64)
    rx, ry = cube.attrs.get("res", (None, None))
    rx = regular_step(x, "x") if x.size > 1 else rx
    ry = -regular_step(y, "y") if y.size > 1 else ry
    if rx is None or ry is None:
        raise ValueError("a cube one pixel wide needs attrs['res']")
    transform = Affine(rx, 0.0, outer_edge(x, rx), 0.0, -ry, outer_edge(y, -ry))
    return Grid(str(cube.attrs["crs"]), transform, x.size, y.size)


def _crs(value: Any) -> CRS:
    if value is None:
        return CRS.from_user_input(DEFAULT_BBOX_CRS)
    if isinstance(value, (int, np.integer)):
        return CRS.from_epsg(int(value))
    return CRS.from_user_input(value)


def bbox_bounds(extent: Mapping[str, Any], crs: str) -> Tuple[float, float, float, float]:
    """An openEO bounding box (``west south east north [crs]``, default EPSG:4326) in ``crs``."""
    if not isinstance(extent, Mapping) or not {"west", "south", "east", "north"} <= set(extent):
        raise ValueError(f"the spatial extent must be a bounding box with west, south, east, north; got {extent!r}")
    w, s, e, n = (float(extent[k]) for k in ("west", "south", "east", "north"))
    if not (w < e and s < n):
        raise ValueError(f"empty bounding box: west {w} >= east {e} or south {s} >= north {n}")
    src = _crs(extent.get("crs"))
    dst = CRS.from_user_input(crs)
    return (w, s, e, n) if src == dst else transform_bounds(src, dst, w, s, e, n, densify_pts=21)


def _outward_window(grid: Grid, bounds: Sequence[float]) -> Tuple[int, int, int, int]:
    """(col0, row0, col1, row1) of the pixels touching ``bounds``, not clipped to the grid."""
    w, s, e, n = bounds
    (rx, ry), (x0, y0) = grid.res, (grid.transform.c, grid.transform.f)
    eps = 1e-6  # a box on the pixel edges keeps exactly its pixels
    col0, col1 = math.floor((w - x0) / rx + eps), math.ceil((e - x0) / rx - eps)
    row0, row1 = math.floor((y0 - n) / ry + eps), math.ceil((y0 - s) / ry - eps)
    return col0, row0, max(col1, col0 + 1), max(row1, row0 + 1)


def extent_window(grid: Grid, bounds: Optional[Sequence[float]], buffer_m: float = 0.0) -> Optional[Window]:
    """Pixels of ``grid`` touching ``bounds`` (its CRS) grown by ``buffer_m`` metres, clipped to
    the grid; None when the bounds (before buffering) miss the grid."""
    if bounds is None:
        return Window(0, 0, grid.width, grid.height)
    col0, row0, col1, row1 = _outward_window(grid, bounds)
    if col1 <= 0 or row1 <= 0 or col0 >= grid.width or row0 >= grid.height:
        return None
    bx, by = (math.ceil(buffer_m / r - 1e-9) for r in grid.res)
    col0, row0 = max(col0 - bx, 0), max(row0 - by, 0)
    col1, row1 = min(col1 + bx, grid.width), min(row1 + by, grid.height)
    return Window(col0, row0, col1 - col0, row1 - row0)


# --------------------------------------------------------------------------- catalogue

@dataclass(frozen=True)
class BandSource:
    """Where one band of one item lives: a GeoTIFF band (1-based) or a NetCDF variable."""

    path: str
    band: Union[int, str]
    grid: Grid
    time_index: Optional[int] = None  # NetCDF variables with a time axis
    nodata: Optional[float] = None


@dataclass
class Item:
    """One date of a collection: its bands and properties (e.g. ``eo:cloud_cover``)."""

    date: np.datetime64
    bands: Dict[str, BandSource]
    properties: Dict[str, Any] = field(default_factory=dict)


class Catalogue:
    """Collections of the local engine: id -> items."""

    def __init__(self) -> None:
        self.collections: Dict[str, List[Item]] = {}

    def register(self, collection_id: str, items: Sequence[Item]) -> None:
        if not items:
            raise ValueError(f"collection {collection_id!r}: no items")
        self.collections[collection_id] = sorted(items, key=lambda i: i.date)

    def register_files(self, collection_id: str, paths: Sequence[Union[str, Path]], date: Optional[str] = None,
                       properties: Optional[Dict[str, Any]] = None) -> List[Item]:
        """Register GeoTIFF / NetCDF files holding bands of the same dates as a collection.

        Band names come from the GeoTIFF band descriptions or NetCDF variable names
        (``B2``/``B02`` both work); unnamed files of 4, 6 or 10 bands are taken in the order
        B02 B03 B04 B08 / B05 B06 B07 B8A B11 B12 / both.  Dates come from ``date``, else the
        file (GeoTIFF tag ``DATETIME``/``TIFFTAG_DATETIME``, NetCDF ``t``/``time``), else
        ``PLACEHOLDER_DATE``.  Properties from tags ``CLOUD_COVER``/``CLOUDY_PIXEL_PERCENTAGE``.
        """
        by_date: Dict[np.datetime64, Item] = {}
        for path in paths:
            for item in _file_items(Path(path), date, properties):
                merged = by_date.setdefault(item.date, Item(item.date, {}, {}))
                clash = set(merged.bands) & set(item.bands)
                if clash:
                    raise ValueError(f"bands {sorted(clash)} appear in more than one input file")
                merged.bands.update(item.bands)
                merged.properties.update(item.properties)
        items = list(by_date.values())
        self.register(collection_id, items)
        return items

    def items(self, collection_id: str) -> List[Item]:
        if collection_id not in self.collections:
            raise ValueError(f"unknown collection {collection_id!r}; this engine has {sorted(self.collections)}")
        return self.collections[collection_id]

    def bands(self, collection_id: str) -> List[str]:
        names: Dict[str, None] = {}
        for item in self.items(collection_id):
            names.update(dict.fromkeys(item.bands))
        return list(names)

    def finest_grid(self, collection_id: str, bands: Optional[Sequence[str]] = None) -> Grid:
        """The grid of the finest band (of ``bands``, default all) of a collection."""
        grids = [src.grid for item in self.items(collection_id) for name, src in item.bands.items()
                 if bands is None or name in bands]
        return min(grids, key=lambda g: g.res[0] * g.res[1])

    def dates(self, collection_id: str) -> List[np.datetime64]:
        return [item.date for item in self.items(collection_id)]


def sample_paths() -> List[Path]:
    """The shipped sample scene: ``s2_10m.tif`` (B02 B03 B04 B08) and ``s2_20m.tif``."""
    import s2sr

    folder = Path(s2sr.__file__).with_name("sample_data")
    return [folder / "s2_10m.tif", folder / "s2_20m.tif"]


def sample_catalogue() -> Catalogue:
    """A catalogue whose ``SENTINEL2_L1C`` is the shipped sample scene (2017 L1C, no offset)."""
    catalogue = Catalogue()
    catalogue.register_files(SAMPLE_COLLECTION, sample_paths())
    return catalogue


def _parse_date(text: Any) -> Optional[np.datetime64]:
    if text is None:
        return None
    value = str(text).strip()
    if len(value) >= 10 and value[4] == ":" and value[7] == ":":  # TIFF "YYYY:MM:DD HH:MM:SS"
        value = value[:10].replace(":", "-") + value[10:].replace(" ", "T", 1)
    try:
        return np.datetime64(value[:10], "D")
    except ValueError:
        raise ValueError(f"cannot read the date {text!r} (expected YYYY-MM-DD)") from None


def _band_names(names: Sequence[Optional[str]], path: Path) -> List[str]:
    from s2sr.engine.weights import canonical_band

    if all(names):
        return [canonical_band(n) for n in names]
    if len(names) in UNNAMED_ORDER:
        return list(UNNAMED_ORDER[len(names)])
    raise ValueError(
        f"{path}: {len(names)} unnamed bands; name them (band descriptions or NetCDF variables "
        f"B02 ... B12), or give 4, 6 or 10 bands in the order {list(UNNAMED_ORDER[10])}"
    )


def _tag_properties(tags: Mapping[str, str]) -> Dict[str, Any]:
    for key in ("CLOUD_COVER", "CLOUDY_PIXEL_PERCENTAGE", "eo:cloud_cover"):
        if key in tags:
            return {"eo:cloud_cover": float(tags[key])}
    return {}


def _file_items(path: Path, date: Optional[str], properties: Optional[Dict[str, Any]]) -> List[Item]:
    if not path.is_file():
        raise ValueError(f"input file {path} does not exist")
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf", ".cdf"):
        return _netcdf_items(path, date, properties)
    return [_geotiff_item(path, date, properties)]


def _geotiff_item(path: Path, date: Optional[str], properties: Optional[Dict[str, Any]]) -> Item:
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise ValueError(f"cannot read {path} as a raster: {exc}") from None
    with src:
        if src.crs is None:
            raise ValueError(f"{path} has no CRS")
        grid = Grid(src.crs.to_string(), src.transform, src.width, src.height)
        names = _band_names(list(src.descriptions), path)
        tags = src.tags()
        file_date = _parse_date(tags.get("DATETIME") or tags.get("TIFFTAG_DATETIME"))
        bands = {name: BandSource(str(path), i + 1, grid, nodata=src.nodatavals[i]) for i, name in enumerate(names)}
    day = _parse_date(date) or file_date or np.datetime64(PLACEHOLDER_DATE, "D")
    return Item(day, bands, {**_tag_properties(tags), **(properties or {})})


def _netcdf_items(path: Path, date: Optional[str], properties: Optional[Dict[str, Any]]) -> List[Item]:
    """Items of a NetCDF whose variables are bands ``[y, x]`` or ``[t|time, y, x]``."""
    import rioxarray  # noqa: F401  (the .rio accessor: CRS and transform from the grid mapping)

    ds = _open_netcdf(path)
    names = [v for v in ds.data_vars if {"x", "y"} <= set(ds[v].dims)]
    if not names:
        raise ValueError(f"{path}: no variable with dimensions y and x")
    crs = ds[names[0]].rio.crs
    if crs is None:
        raise ValueError(f"{path} has no CRS (grid_mapping / spatial_ref)")
    ref = ds[names[0]]
    with warnings.catch_warnings():  # rioxarray 0.19 still multiplies Affines with `*`
        warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
        transform = ref.rio.transform(recalc=True)
    grid = Grid(crs.to_string(), transform, ref.sizes["x"], ref.sizes["y"])
    if grid.transform.e >= 0:
        raise ValueError(f"{path}: y must be descending (north up)")
    band_names = _band_names(names, path)
    time_dim = next((d for d in ("t", "time") if d in ds.dims), None)
    times = ds[time_dim].values.astype("datetime64[D]") if time_dim else [None]
    items = []
    for k, t in enumerate(times):
        day = _parse_date(date) or t or np.datetime64(PLACEHOLDER_DATE, "D")
        bands = {b: BandSource(str(path), v, grid, k if time_dim else None) for b, v in zip(band_names, names)}
        items.append(Item(np.datetime64(day, "D"), bands, dict(properties or {})))
    ds.close()
    return items


def _open_netcdf(path: Path) -> xarray.Dataset:
    try:
        return xarray.open_dataset(path, decode_coords="all", mask_and_scale=True)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {path} as NetCDF ({exc}); NetCDF4 files need h5netcdf or netCDF4 installed") from None


def read_band(source: BandSource, win: Window) -> np.ndarray:
    """One band over a window of its grid: float32 ``[rows, cols]``, NaN for no-data."""
    rows = slice(int(win.row_off), int(win.row_off + win.height))
    cols = slice(int(win.col_off), int(win.col_off + win.width))
    if isinstance(source.band, str):
        with xarray.open_dataset(source.path, decode_coords="all", mask_and_scale=True) as ds:
            var = ds[source.band]
            if source.time_index is not None:
                var = var.isel({d: source.time_index for d in var.dims if d not in ("y", "x")})
            data = var.transpose("y", "x").isel(y=rows, x=cols).values.astype(np.float32)
    else:
        with rasterio.open(source.path) as src:
            data = src.read(source.band, window=win).astype(np.float32)
        if source.nodata is not None:
            data[data == np.float32(source.nodata)] = np.nan
    return data


# --------------------------------------------------------------------------- graph evaluation

@dataclass
class Callback:
    """A child process graph with the scope it was defined in; call it with its parameters.

    Each call evaluates the graph from scratch (its own memo): no result leaks from one call
    (one window) to the next.  Picklable, so dask.distributed can ship it to workers.
    """

    graph: Dict[str, Any]
    scope: Dict[str, Any]
    engine: "LocalEngine"
    node_id: str

    def __call__(self, **params: Any) -> Any:
        return self.engine.evaluate(self.graph, {**self.scope, **params}).result


@dataclass
class GraphRun:
    result: Any
    results: Dict[str, Any]


@dataclass
class Call:
    """What a process implementation knows of its call site."""

    engine: "LocalEngine"
    node_id: str
    process_id: str
    pixel_buffer: int = 0  # apply_neighborhood overlap downstream of a load_collection


def _result_node(graph: Mapping[str, Any]) -> str:
    results = [k for k, node in graph.items() if node.get("result")]
    if len(results) != 1:
        raise ValueError(f"a process graph needs exactly one result node, got {results}")
    return results[0]


def _refs(value: Any, key: str) -> Iterable[Any]:
    """``from_node`` / ``from_parameter`` references in an argument, not inside callbacks."""
    if isinstance(value, dict):
        if key in value and len(value) == 1:
            yield value[key]
        elif "process_graph" not in value:
            for v in value.values():
                yield from _refs(v, key)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v, key)


def _callbacks(value: Any) -> Iterable[Dict[str, Any]]:
    if isinstance(value, dict):
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            yield value["process_graph"]
        else:
            for v in value.values():
                yield from _callbacks(v)
    elif isinstance(value, list):
        for v in value:
            yield from _callbacks(v)


def used_processes(graph: Mapping[str, Any]) -> Dict[str, str]:
    """process id -> first node using it, callbacks included."""
    found: Dict[str, str] = {}
    for node_id, node in graph.items():
        found.setdefault(node["process_id"], node_id)
        for child in _callbacks(node.get("arguments", {})):
            for pid, nid in used_processes(child).items():
                found.setdefault(pid, nid)
    return found


def _px_value(spec: Any, name: str) -> Tuple[int, int]:
    """openEO ``[{dimension, value, unit}]`` -> (y, x) pixels; time may be null (whole) or, in
    ``size``, ``"P1D"`` (one date per window: ``_per_date``)."""
    values: Dict[str, int] = {}
    for entry in spec or []:
        dim, value, unit = entry.get("dimension"), entry.get("value"), entry.get("unit", "px")
        if dim in ("t", "time", "bands") and (value is None or (name == "size" and dim != "bands" and value == ONE_DATE)):
            continue
        if dim not in ("x", "y"):
            raise ValueError(f"{name}: only x / y (and a null or 'P1D' t) are supported, got dimension {dim!r} = {value!r}")
        if unit != "px" or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{name}: only whole pixels ('px') are supported, got {value!r} {unit!r}")
        values[dim] = int(value)
    if set(values) != {"x", "y"}:
        raise ValueError(f"{name} must give both x and y, got {spec!r}")
    return values["y"], values["x"]


#: ``apply_neighborhood``'s t size for one date per window: what the geopyspark driver accepts
#: besides null (all dates); it then runs the UDF on each date's ``(bands, y, x)`` tile
#: (Udf.scala ``runUserCodeWithBands``, via the driver's ``apply_tiles``)
ONE_DATE = "P1D"


def _per_date(spec: Any) -> bool:
    return any(e.get("dimension") in ("t", "time") and e.get("value") == ONE_DATE for e in spec or [])


# --------------------------------------------------------------------------- processes

def load_collection(args: Dict[str, Any], call: Call) -> xarray.DataArray:
    engine, cid = call.engine, args["id"]
    items = engine.catalogue.items(cid)
    items = _filter_dates(items, args.get("temporal_extent"), cid)
    items = _filter_properties(items, args.get("properties") or {}, cid)
    bands = args.get("bands") or engine.catalogue.bands(cid)
    available = engine.catalogue.bands(cid)
    missing = [b for b in bands if b not in available]
    if missing:
        raise ValueError(f"collection {cid!r} has no bands {missing}; it has {available}")
    finest = engine.catalogue.finest_grid(cid, bands)  # the cube's grid: its bands' finest
    extent = args.get("spatial_extent")
    bounds = None if extent is None else bbox_bounds(extent, finest.crs)
    # the buffer is counted in pixels of the collection's finest grid (the apply_neighborhood grid)
    buffer_m = call.pixel_buffer * max(engine.catalogue.finest_grid(cid).res)
    grid = _target_grid(finest, bounds, buffer_m, cid, extent)
    planes = [[_read_on(item, b, finest, grid, bounds, buffer_m) for b in bands] for item in items]
    data = np.stack([np.stack(p) for p in planes]).astype(np.float32)
    coords = {TIME_DIM: np.array([i.date for i in items], dtype="datetime64[ns]"), BAND_DIM: list(bands), **grid.coords()}
    return xarray.DataArray(data, dims=(TIME_DIM, BAND_DIM, "y", "x"), coords=coords,
                            attrs={"crs": grid.crs, "res": grid.res})


def _extent_error(cid: str, extent: Any, grid: Grid) -> ValueError:
    w, s, e, n = transform_bounds(CRS.from_user_input(grid.crs), CRS.from_epsg(4326), *grid.bounds)
    return ValueError(
        f"the spatial extent {extent!r} does not intersect collection {cid!r} "
        f"(its data covers west {w:.5f} south {s:.5f} east {e:.5f} north {n:.5f} in EPSG:4326, "
        f"{grid.bounds} in {grid.crs})"
    )


def _target_grid(finest: Grid, bounds, buffer_m: float, cid: str, extent: Any) -> Grid:
    win = extent_window(finest, bounds, buffer_m)
    if win is None:
        raise _extent_error(cid, extent, finest)
    return finest.window(win)


def _read_on(item: Item, band: str, finest: Grid, target: Grid, bounds, buffer_m: float) -> np.ndarray:
    """One band of one item on ``target`` (a window of the finest grid); coarser bands are
    nearest-resampled onto it, as backends do for a mixed-resolution load."""
    source = item.bands.get(band)
    if source is None:
        return np.full((target.height, target.width), np.nan, np.float32)
    if source.grid == finest:
        win = extent_window(finest, bounds, buffer_m)
        return read_band(source, win)
    win = extent_window(source.grid, target.bounds)  # the band's own pixels over the target
    if win is None:
        return np.full((target.height, target.width), np.nan, np.float32)
    data = read_band(source, win)
    return warp_array(data, source.grid.window(win), target, Resampling.nearest)


def _filter_dates(items: List[Item], temporal: Any, cid: str) -> List[Item]:
    if temporal is None:
        return items
    if not isinstance(temporal, (list, tuple)) or len(temporal) != 2:
        raise ValueError(f"temporal_extent must be [start, end], got {temporal!r}")
    start = None if temporal[0] is None else np.datetime64(str(temporal[0]).rstrip("Z"), "ns")
    end = None if temporal[1] is None else np.datetime64(str(temporal[1]).rstrip("Z"), "ns")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"temporal_extent {temporal!r} is empty (end <= start)")
    kept = [i for i in items if (start is None or np.datetime64(i.date, "ns") >= start)
            and (end is None or np.datetime64(i.date, "ns") < end)]
    if not kept:
        dates = [str(i.date) for i in items]
        raise ValueError(f"the temporal extent {list(temporal)} holds no date of collection {cid!r} (its dates: {dates})")
    return kept


def _passes(condition: Any, value: Any) -> bool:
    """A ``properties`` callback (parameter ``value``) or a plain value to equal."""
    return bool(condition(value=value)) if callable(condition) else condition == value


def _filter_properties(items: List[Item], properties: Mapping[str, Any], cid: str) -> List[Item]:
    """Items whose properties pass every condition; a property an item lacks does not filter it."""
    kept = [item for item in items
            if all(_passes(cond, item.properties[name]) for name, cond in properties.items() if name in item.properties)]
    if not kept:
        found = {name: [i.properties.get(name) for i in items] for name in properties}
        raise ValueError(f"no item of collection {cid!r} passes the property filters {list(properties)} (values: {found})")
    return kept


def warp_array(data: np.ndarray, src: Grid, dst: Grid, method: Resampling) -> np.ndarray:
    """GDAL warp of ``[..., y, x]`` float32 (NaN no-data) from one grid to another."""
    lead = data.shape[:-2]
    flat = np.ascontiguousarray(data.reshape(-1, *data.shape[-2:]), dtype=np.float32)
    out = np.full((flat.shape[0], dst.height, dst.width), np.nan, np.float32)
    reproject(flat, out, src_transform=src.transform, src_crs=CRS.from_user_input(src.crs), dst_transform=dst.transform,
              dst_crs=CRS.from_user_input(dst.crs), resampling=method, src_nodata=np.nan, dst_nodata=np.nan)
    return out.reshape(*lead, dst.height, dst.width)


def resample_cube_spatial(args: Dict[str, Any], call: Call) -> xarray.DataArray:
    data, target, method = args["data"], args["target"], args.get("method", "near")
    if method not in RESAMPLING:
        raise ValueError(f"unknown resampling method {method!r}; supported: {sorted(RESAMPLING)}")
    src, dst = cube_grid(data), cube_grid(target)
    values = data.transpose(..., "y", "x").values
    out = values.astype(np.float32) if src == dst else warp_array(values, src, dst, RESAMPLING[method])
    lead = [d for d in data.dims if d not in ("y", "x")]
    coords = {d: data.coords[d].values for d in lead if d in data.coords}
    coords.update(y=target.y.values, x=target.x.values)
    return xarray.DataArray(out, dims=lead + ["y", "x"], coords=coords, attrs=dict(target.attrs)).transpose(*data.dims)


def merge_cubes(args: Dict[str, Any], call: Call) -> xarray.DataArray:
    a, b = args["cube1"], args["cube2"]
    if args.get("overlap_resolver") is not None:
        raise ValueError("overlap_resolver is not supported: merge cubes with distinct bands")
    if set(a.dims) != set(b.dims):
        raise ValueError(f"the cubes have different dimensions {a.dims} and {b.dims}")
    b = b.transpose(*a.dims)
    for dim in ("y", "x", TIME_DIM):
        if dim in a.coords and not _same_labels(a[dim].values, b[dim].values):
            raise ValueError(f"the cubes differ along {dim!r}: resample one onto the other first")
    common = sorted(set(a[BAND_DIM].values.tolist()) & set(b[BAND_DIM].values.tolist()))
    if common:
        raise ValueError(f"both cubes hold bands {common} and no overlap_resolver is given")
    b = b.assign_coords({d: a[d].values for d in ("y", "x", TIME_DIM) if d in a.coords})
    return xarray.concat([a, b], dim=BAND_DIM, combine_attrs="override")


def _same_labels(u: np.ndarray, v: np.ndarray) -> bool:
    """Equal labels; coordinates (metres or degrees) within 1e-4 of a unit."""
    if u.shape != v.shape:
        return False
    if np.issubdtype(u.dtype, np.floating):
        return bool(np.allclose(u, v, rtol=0, atol=1e-4))
    return bool(np.array_equal(u, v))


def filter_bbox(args: Dict[str, Any], call: Call) -> xarray.DataArray:
    data, extent = args["data"], args.get("extent")
    if extent is None:
        return data
    w, s, e, n = bbox_bounds(extent, str(data.attrs["crs"]))
    x, y = data.x.values, data.y.values
    keep_x, keep_y = (x >= w) & (x <= e), (y >= s) & (y <= n)
    if not keep_x.any() or not keep_y.any():
        raise ValueError(f"the extent {extent!r} holds no pixel centre of the cube")
    return data.isel(x=np.flatnonzero(keep_x), y=np.flatnonzero(keep_y))


def lte(args: Dict[str, Any], call: Call) -> Optional[bool]:
    x, y = args.get("x"), args.get("y")
    if x is None or y is None:
        return None
    return bool(x <= y)


def save_result(args: Dict[str, Any], call: Call) -> bool:
    call.engine.saved.append({"data": args["data"], "format": args.get("format"), "options": args.get("options") or {}})
    return True


def run_udf(args: Dict[str, Any], call: Call) -> xarray.DataArray:
    from openeo.udf import UdfData, XarrayDataCube
    from openeo.udf.run_code import run_udf_code

    data, code, runtime = args["data"], args["udf"], args.get("runtime", "Python")
    context = {**(args.get("context") or {}), **call.engine.udf_context}
    if runtime == "Python-Jep":
        return _restore_dims(run_jep_window(code, _jep_cube(data), context), data)
    if runtime == "Python":
        out = run_udf_code(code=code, data=UdfData(datacube_list=[XarrayDataCube(data)], user_context=context))
        cubes = out.get_datacube_list()
        if len(cubes) != 1:
            raise ValueError(f"the UDF returned {len(cubes)} cubes, expected one")
        return cubes[0].get_array()
    raise ValueError(f"unsupported UDF runtime {runtime!r}: use 'Python-Jep' or 'Python'")


def run_jep_window(code: str, cube: xarray.DataArray, context: Dict[str, Any]) -> xarray.DataArray:
    """One window as the geopyspark executor runs a Python-Jep UDF (``s2sr.deploy.geopyspark``):
    ``apply_metadata`` once per job first, then the UDF text in a fresh namespace with the
    executor's float32 coordinates; the returned coordinates are ignored, as there: the result
    gets the window's grid, ``factor`` times finer."""
    geometry = cube.attrs.get(neighborhood.WINDOW_ATTR) or {"size": (cube.sizes["y"], cube.sizes["x"]), "overlap": (0, 0)}
    x, y = cube.x.values.astype(np.float64), cube.y.values.astype(np.float64)
    res = abs(float(x[1] - x[0])) if x.size > 1 else float(cube_grid_res(cube))
    step = geopyspark.apply_metadata_once(code, context, (res, res), _epsg(cube.attrs.get("crs")))
    dated = TIME_DIM in cube.dims
    window = geopyspark.key_window(cube.values, x, y, geometry["size"], geometry["overlap"],
                                   cube[BAND_DIM].values.tolist(), cube[TIME_DIM].values if dated else None)
    values, dates = geopyspark.run_window(code, window, context, step is not None)
    factor = round(res / step[0]) if step else 1
    if values.shape[-2:] != (factor * cube.sizes["y"], factor * cube.sizes["x"]):
        raise ValueError(f"the UDF returned {values.shape[-2:]} rows and columns for a {cube.sizes['y']} x "
                         f"{cube.sizes['x']} window with a {factor}x finer layout")
    n_bands = values.shape[-3]
    bands = cube[BAND_DIM].values if n_bands == cube.sizes[BAND_DIM] else np.arange(n_bands)
    coords = {BAND_DIM: bands, "y": neighborhood.fine_coords(y, factor) if factor > 1 else y,
              "x": neighborhood.fine_coords(x, factor) if factor > 1 else x}
    if not dated:
        return xarray.DataArray(values, dims=(BAND_DIM, "y", "x"), coords=coords)
    return xarray.DataArray(values, dims=(TIME_DIM, BAND_DIM, "y", "x"), coords={TIME_DIM: geopyspark.utc_dates(dates), **coords})


def cube_grid_res(cube: xarray.DataArray) -> float:
    """The pixel size of a cube one pixel wide: its ``res`` attribute."""
    if "res" not in cube.attrs:
        raise ValueError("a window one pixel wide needs the cube's resolution")
    return float(cube.attrs["res"][0])


def _epsg(crs: Any) -> int:
    """The EPSG code Udf.scala passes to apply_metadata (``layer.metadata.crs.epsgCode``)."""
    if crs is None:
        return 4326
    epsg = CRS.from_user_input(crs).to_epsg()
    if epsg is None:
        raise ValueError(f"the cube's CRS {crs} has no EPSG code, which the backend's apply_metadata call needs")
    return int(epsg)


def _jep_cube(data: xarray.DataArray) -> xarray.DataArray:
    """What Jep hands the UDF: float32, (t, bands, y, x) with a t coordinate, or one date's
    (bands, y, x) where the windows are per date."""
    lead = [TIME_DIM] if TIME_DIM in data.dims else []
    return data.transpose(*lead, BAND_DIM, "y", "x").astype(np.float32, keep_attrs=True)


def _restore_dims(result: xarray.DataArray, data: xarray.DataArray) -> xarray.DataArray:
    if TIME_DIM not in data.dims and TIME_DIM in result.dims and result.sizes[TIME_DIM] == 1:
        result = result.isel({TIME_DIM: 0}, drop=True)
    return result.transpose(*[d for d in data.dims if d in result.dims])


def apply_neighborhood(args: Dict[str, Any], call: Call) -> xarray.DataArray:
    data, process, context = args["data"], args["process"], args.get("context")
    size = _px_value(args["size"], "size")
    overlap = _px_value(args.get("overlap") or [{"dimension": d, "value": 0} for d in "xy"], "overlap")
    if not callable(process):
        raise ValueError("process must be a child process graph")
    wins = list(neighborhood.windows((data.sizes["y"], data.sizes["x"]), size))
    per_date = _per_date(args["size"]) and TIME_DIM in data.dims  # each date's (bands, y, x) on its own
    with call.engine.progress_bar(len(wins), data.sizes[TIME_DIM] if per_date else 1) as progress:
        if per_date:
            results, threads = [], set()
            for i in range(data.sizes[TIME_DIM]):
                date = data.isel({TIME_DIM: i}, drop=True)
                mapper = call.engine.window_mapper(date, process, context, size, overlap, progress)
                results.append(neighborhood.apply_neighborhood(date, _WindowProcess(process, context), size=size,
                                                               overlap=overlap, map_windows=mapper))
                threads |= mapper.threads
            result = xarray.concat(results, dim=TIME_DIM).assign_coords({TIME_DIM: data[TIME_DIM].values})
            result, mapper.threads = result.transpose(*data.dims), threads
        else:
            mapper = call.engine.window_mapper(data, process, context, size, overlap, progress)
            result = neighborhood.apply_neighborhood(data, _WindowProcess(process, context), size=size, overlap=overlap,
                                                     map_windows=mapper)
    factor = result.sizes["x"] / data.sizes["x"]
    result.attrs["res"] = tuple(r / factor for r in cube_grid(data).res)
    call.engine.stats.setdefault("apply_neighborhood", []).append(
        {"node": call.node_id, "windows": len(wins), "size": size, "overlap": overlap, "threads": sorted(mapper.threads)})
    return result


@dataclass
class _WindowProcess:
    """``window -> process(data=window, context=context)``; picklable."""

    process: Callable
    context: Any

    def __call__(self, window: xarray.DataArray) -> xarray.DataArray:
        return self.process(data=window, context=self.context)


PROCESSES: Dict[str, Callable[[Dict[str, Any], Call], Any]] = {
    "load_collection": load_collection,
    "resample_cube_spatial": resample_cube_spatial,
    "merge_cubes": merge_cubes,
    "apply_neighborhood": apply_neighborhood,
    "run_udf": run_udf,
    "filter_bbox": filter_bbox,
    "lte": lte,
    "save_result": save_result,
}


# --------------------------------------------------------------------------- windows in parallel

class Progress:
    """Windows x dates done of one ``apply_neighborhood``, counted as each finishes (any thread):
    a tqdm bar (``bar``) and ``on_progress(done, total)``, called with 0 first, then after
    every window of every date."""

    def __init__(self, windows: int, dates: int, bar: bool = False,
                 on_progress: Optional[Callable[[int, int], None]] = None):
        from tqdm.auto import tqdm

        self.done, self.total = 0, windows * dates
        self._on_progress, self._lock = on_progress, threading.Lock()
        self._bar = tqdm(total=self.total, desc=f"s2sr {_count(windows, 'window')} x {_count(dates, 'date')}",
                         unit="win", disable=not bar, leave=False)
        self._report()

    def step(self) -> None:
        """One window of one date done."""
        with self._lock:
            self.done += 1
            self._bar.update()
            self._report()

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.done, self.total)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.close()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class WindowMapper:
    """``map_windows`` for ``neighborhood.apply_neighborhood``: dask threads or a distributed
    scheduler, results in window order, each finished window counted in ``progress``, the
    threads used recorded."""

    def __init__(self, cube, process, context, size, overlap, workers: Optional[int], scheduler: Optional[str],
                 progress: Progress):
        self.cube, self.size, self.overlap = cube, size, overlap
        self.process = _WindowProcess(process, context)
        self.workers, self.scheduler, self.progress = workers, scheduler, progress
        self.threads: set = set()
        self._lock = threading.Lock()

    def __call__(self, run: Callable, wins: Sequence[neighborhood.Window]) -> List[Any]:
        if self.scheduler:
            return self._distributed(wins, self.progress)
        return self._threads(run, wins, self.progress)

    def _threads(self, run: Callable, wins, bar) -> List[Any]:
        def task(win):
            out = run(win)
            with self._lock:
                self.threads.add(threading.current_thread().name)
            bar.step()
            return out

        try:
            import dask
        except ImportError:  # dask is a dependency; a bare thread pool keeps a minimal install working
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(task, wins))
        tasks = [dask.delayed(task, pure=False)(w) for w in wins]
        return list(dask.compute(*tasks, scheduler="threads", num_workers=self.workers))

    def _distributed(self, wins, bar) -> List[Any]:
        try:
            from distributed import Client, as_completed
        except ImportError:
            raise RuntimeError("a scheduler address needs dask.distributed: pip install distributed") from None
        with Client(self.scheduler) as client:
            windows = [neighborhood.extract_window(self.cube, w, self.size, self.overlap) for w in wins]
            futures = client.map(self.process, windows, pure=False)
            for _ in as_completed(futures):
                bar.step()
            results = client.gather(futures)
        self.threads.add(f"distributed:{self.scheduler}")
        return list(zip(wins, results))


# --------------------------------------------------------------------------- engine

@dataclass
class Execution:
    """A finished run: the result node's value, every top-level node's value, timings."""

    result: Any
    results: Dict[str, Any]
    seconds: float
    stats: Dict[str, Any]
    saved: List[Dict[str, Any]]


class LocalEngine:
    """Executes openEO process graphs / UDPs on local data (see the module docstring).

    ``workers``: dask threads for windows (default: the CPUs this process may use);
    ``scheduler``: a ``dask.distributed`` scheduler address instead of local threads;
    ``progress``: a tqdm bar over windows x dates; ``on_progress(done, total)``: called with the
    windows x dates done of each ``apply_neighborhood`` (0 first, then as each finishes);
    ``udf_context``: context keys every ``run_udf`` gets over the graph's own (e.g. ``weights``:
    one's own weights file in place of the UDP's ``model``).
    """

    def __init__(self, catalogue: Optional[Catalogue] = None, workers: Optional[int] = None,
                 scheduler: Optional[str] = None, progress: bool = False,
                 processes: Optional[Mapping[str, Callable]] = None,
                 on_progress: Optional[Callable[[int, int], None]] = None,
                 udf_context: Optional[Mapping[str, Any]] = None):
        self.catalogue = catalogue if catalogue is not None else sample_catalogue()
        self.workers, self.scheduler, self.progress = workers, scheduler, progress
        self.on_progress, self.udf_context = on_progress, dict(udf_context or {})
        self.processes = dict(PROCESSES if processes is None else processes)
        self.stats: Dict[str, Any] = {}
        self.saved: List[Dict[str, Any]] = []
        self._buffers: Dict[int, Dict[str, int]] = {}

    def __getstate__(self) -> Dict[str, Any]:  # what a distributed worker needs: no run state
        return {"catalogue": self.catalogue, "workers": None, "scheduler": None, "progress": False,
                "on_progress": None, "udf_context": self.udf_context, "processes": self.processes, "stats": {},
                "saved": [], "_buffers": {}}

    # -- entry points
    def run_udp(self, udp: Union[None, str, Path, Mapping[str, Any]] = None,
                arguments: Optional[Mapping[str, Any]] = None) -> Execution:
        """Run a UDP document (default: the committed ``sentinel2_superresolution.json``)."""
        from s2sr.deploy.udp import load_udp_json

        doc = load_udp_json() if udp is None else (load_udp_json(Path(udp)) if isinstance(udp, (str, Path)) else udp)
        scope = bind_parameters(doc.get("parameters", []), dict(arguments or {}), doc.get("id", "the UDP"))
        return self.run_graph(doc["process_graph"], scope)

    def run_graph(self, graph: Mapping[str, Any], parameters: Optional[Mapping[str, Any]] = None) -> Execution:
        self.check_processes(graph)
        self.stats, self.saved = {}, []
        scope = dict(parameters or {})
        self._buffers[id(graph)] = pixel_buffers(graph, scope)
        start = time.perf_counter()
        try:
            run = self.evaluate(graph, scope)
        finally:
            self._buffers.pop(id(graph), None)
        return Execution(run.result, run.results, time.perf_counter() - start, self.stats, self.saved)

    def check_processes(self, graph: Mapping[str, Any]) -> None:
        for pid, node_id in used_processes(graph).items():
            if pid not in self.processes:
                raise ProcessMissing(pid, node_id, f"process {pid!r} is not supported by the local engine "
                                                   f"(supported: {sorted(self.processes)})")

    # -- evaluation
    def evaluate(self, graph: Mapping[str, Any], scope: Mapping[str, Any]) -> GraphRun:
        """Evaluate every node of ``graph`` once (fresh memo), in dependency order."""
        memo: Dict[str, Any] = {}
        for node_id in graph:
            self._node(graph, node_id, scope, memo, ())
        return GraphRun(memo[_result_node(graph)], memo)

    def _node(self, graph, node_id: str, scope, memo: Dict[str, Any], stack: Tuple[str, ...]) -> Any:
        if node_id in memo:
            return memo[node_id]
        if node_id in stack:
            raise ValueError(f"cycle in the process graph through {node_id!r}")
        node = graph[node_id]
        pid = node["process_id"]
        args = self._resolve(node.get("arguments", {}), graph, scope, memo, stack + (node_id,), node_id, pid)
        call = Call(self, node_id, pid, self._buffers.get(id(graph), {}).get(node_id, 0))
        impl = self.processes.get(pid)
        if impl is None:
            raise ProcessMissing(pid, node_id, f"process {pid!r} is not supported by the local engine")
        try:
            memo[node_id] = impl(args, call)
        except ProcessError as exc:
            if exc.node_id == node_id:
                raise
            raise ProcessError(pid, node_id, str(exc)) from exc
        except Exception as exc:
            raise ProcessError(pid, node_id, f"{type(exc).__name__}: {exc}") from exc
        return memo[node_id]

    def _resolve(self, value, graph, scope, memo, stack, node_id: str, pid: str) -> Any:
        if isinstance(value, dict):
            if "from_node" in value and len(value) == 1:
                if value["from_node"] not in graph:
                    raise ProcessError(pid, node_id, f"refers to an unknown node {value['from_node']!r}")
                return self._node(graph, value["from_node"], scope, memo, stack)
            if "from_parameter" in value and len(value) == 1:
                name = value["from_parameter"]
                if name not in scope:
                    raise ProcessError(pid, node_id, f"parameter {name!r} has no value (known: {sorted(scope)})")
                return scope[name]
            if "process_graph" in value:
                return Callback(value["process_graph"], dict(scope), self, node_id)
            return {k: self._resolve(v, graph, scope, memo, stack, node_id, pid) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, graph, scope, memo, stack, node_id, pid) for v in value]
        return value

    def progress_bar(self, windows: int, dates: int) -> Progress:
        """The progress of one ``apply_neighborhood`` (``windows`` per date x ``dates``)."""
        return Progress(windows, dates, self.progress, self.on_progress)

    def window_mapper(self, cube, process, context, size, overlap, progress: Optional[Progress] = None) -> WindowMapper:
        progress = progress if progress is not None else Progress(0, 0)
        return WindowMapper(cube, process, context, size, overlap, self.workers, self.scheduler, progress)


def pixel_buffers(graph: Mapping[str, Any], scope: Mapping[str, Any]) -> Dict[str, int]:
    """The dry run: load_collection node -> largest apply_neighborhood overlap downstream (px)."""
    buffers: Dict[str, int] = {}

    def mark(node_id: str, px: int, seen: set) -> None:
        if node_id in seen or node_id not in graph:
            return
        seen.add(node_id)
        node = graph[node_id]
        if node["process_id"] == "load_collection":
            buffers[node_id] = max(buffers.get(node_id, 0), px)
        for ref in _refs(node.get("arguments", {}), "from_node"):
            mark(ref, px, seen)

    for node_id, node in graph.items():
        if node["process_id"] != "apply_neighborhood":
            continue
        overlap = node["arguments"].get("overlap") or []
        values = [scope.get(o["value"]["from_parameter"], 0) if isinstance(o.get("value"), dict) else o.get("value") or 0
                  for o in overlap if o.get("dimension") in ("x", "y")]
        mark(node_id, int(max(values, default=0)), set())
    return buffers


def bind_parameters(params: Sequence[Mapping[str, Any]], arguments: Dict[str, Any], udp_id: str) -> Dict[str, Any]:
    """Arguments checked against the UDP's parameters (names, enums), defaults filled in."""
    names = [p["name"] for p in params]
    unknown = sorted(set(arguments) - set(names))
    if unknown:
        raise ParameterError(f"{udp_id} has no parameters {unknown}; its parameters: {names}")
    scope = {}
    for p in params:
        name = p["name"]
        if name in arguments:
            scope[name] = _check_enum(p, arguments[name], udp_id)
        elif "default" in p:
            scope[name] = p["default"]
        elif p.get("optional"):
            scope[name] = None
        else:
            raise ParameterError(f"{udp_id}: missing required parameter {name!r} ({p.get('description', '')})")
    return scope


def _check_enum(param: Mapping[str, Any], value: Any, udp_id: str) -> Any:
    schemas = param.get("schema", {})
    for schema in schemas if isinstance(schemas, list) else [schemas]:
        enum = schema.get("enum") if isinstance(schema, dict) else None
        if enum is not None and value not in enum:
            raise ParameterError(f"{udp_id}: {param['name']} {value!r} is not one of {enum}")
    return value


# --------------------------------------------------------------------------- conveniences

def collection_extent(catalogue: Catalogue, collection_id: str) -> Dict[str, Any]:
    """The whole extent of a collection as an openEO bounding box in its own CRS."""
    grid = catalogue.finest_grid(collection_id)
    w, s, e, n = grid.bounds
    return {"west": w, "south": s, "east": e, "north": n, "crs": grid.crs}


def collection_dates(catalogue: Catalogue, collection_id: str) -> List[str]:
    """A temporal extent ``[first date, last date + 1 day)`` covering every item."""
    dates = catalogue.dates(collection_id)
    return [str(min(dates)), str(max(dates) + np.timedelta64(1, "D"))]


def run_udp(arguments: Optional[Mapping[str, Any]] = None, catalogue: Optional[Catalogue] = None,
            **engine_kwargs: Any) -> xarray.DataArray:
    """The committed UDP on the local engine; missing extents default to the whole collection.

    Returns the result cube ``[t, bands, y, x]`` at 5 m (float32; NaN or -10000 no-data).
    """
    catalogue = catalogue if catalogue is not None else sample_catalogue()
    arguments = dict(arguments or {})
    product = arguments.setdefault("product", SAMPLE_COLLECTION)
    arguments.setdefault("spatial_extent", collection_extent(catalogue, product))
    arguments.setdefault("temporal_extent", collection_dates(catalogue, product))
    return LocalEngine(catalogue, **engine_kwargs).run_udp(arguments=arguments).result


def to_geotiff(cube: xarray.DataArray, path: Union[str, Path], dtype: str = "float32") -> Path:
    """Write a ``[bands, y, x]`` cube (one date) as a GeoTIFF with CRS, transform and band names.

    ``dtype`` ``"int16"`` writes rounded values with no-data -10000 (the engine's ``to_int16``: a
    valid value never becomes no-data), ``"float32"`` NaN no-data.
    """
    import rioxarray  # noqa: F401

    if TIME_DIM in cube.dims:
        if cube.sizes[TIME_DIM] != 1:
            raise ValueError("to_geotiff writes one date: select it with .isel(t=i)")
        cube = cube.isel({TIME_DIM: 0})
    out = cube.transpose(BAND_DIM, "y", "x").drop_vars([c for c in cube.coords if c not in (BAND_DIM, "y", "x")])
    if dtype == "int16":
        values = np.array(out.values, dtype=np.result_type(out.dtype, np.float32))  # to_int16 rounds in place
        out, nodata = out.copy(data=to_int16(values)), INT16_NODATA
    else:
        out, nodata = out.astype(np.float32), np.nan
    out.attrs = {"long_name": tuple(str(b) for b in out[BAND_DIM].values)}
    out = out.rio.write_crs(cube.attrs["crs"]).rio.write_nodata(nodata, encoded=False)
    with warnings.catch_warnings():  # rioxarray 0.19 still multiplies Affines with `*`
        warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
        out.rio.to_raster(path, compress="deflate", tiled=True)
    return Path(path)


__all__ = [
    "Callback", "Catalogue", "Execution", "Grid", "Item", "BandSource", "LocalEngine", "ParameterError", "ProcessError",
    "ProcessMissing", "PROCESSES", "Progress", "bbox_bounds", "bind_parameters", "collection_dates", "collection_extent", "cube_grid",
    "pixel_buffers", "run_udp", "sample_catalogue", "sample_paths", "to_geotiff", "used_processes", "warp_array",
]
