"""How the geopyspark backends (CDSE, Terrascope) run a ``Python-Jep`` UDF, reproduced.

Pinned to openeo-geotrellis-extensions,
``openeo-geotrellis/src/main/scala/org/openeo/geotrellis/udf/Udf.scala`` at commit
c25f481608c1ec77afd152028c9037bc2e1d7c15 (the version with ``overlapX`` / ``overlapY`` and the
resolution change).  What it does, and what this module does the same way:

- ``runUserCodeSpatioTemporal``: for every spatial key a NEW ``jep.SharedInterpreter`` (fresh
  globals, shared ``sys.modules``), in which it execs ``DEFAULT_IMPORTS``, builds the cube
  (``setXarraydatacubeInPython``), sets ``context`` (``setContextInPython``), builds ``data``,
  execs the UDF text and calls ``apply_datacube``; then it checks the result: 4 dimensions,
  float32, same rows and columns unless ``apply_metadata`` changed the layout, and reads the
  ``t`` coordinate.  The coordinates the UDF returns are ignored.
- ``setXarraydatacubeInPython``: x and y are float32 ``np.linspace`` over the key's extent
  widened by ``xdelta`` (half the buffer) and again by ``overlap_x * gridx``: the overlap is
  counted twice, so the step is not the pixel size, and float32 at UTM magnitudes makes it
  uneven.  The code strings below are quoted from the file.
- ``callApplyMetadata``: ``apply_metadata`` once, before any window, alone in its own fresh
  interpreter, with a metadata dict holding only x / y (step, EPSG) and t.

Two interpreters run that sequence: ``PythonInterpreter`` (a fresh globals dict per window in
this process: the harness the tests and the local engine use) and, where the ``jep`` package
is installed, real ``jep.SharedInterpreter``s driven from Java (``run_in_jep``).
"""

import builtins
import datetime
import hashlib
import json
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

UDF_SCALA = ("openeo-geotrellis-extensions@c25f481608c1ec77afd152028c9037bc2e1d7c15: "
             "openeo-geotrellis/src/main/scala/org/openeo/geotrellis/udf/Udf.scala")

# --------------------------------------------------------------------------- quoted from Udf.scala

DEFAULT_IMPORTS = """
import collections
import datetime
import numpy as np
import xarray as xr
import openeo.metadata
from openeo.udf import UdfData
from openeo.udf.xarraydatacube import XarrayDataCube
from openeo_driver.errors import OpenEOApiException
"""

#: ``setXarraydatacubeInPython``, its first exec (with ``tile_shape``, ``extent``, ``overlap_x``,
#: ``overlap_y``, ``band_names`` and ``start_times`` set before)
CUBE_COORDS = """
coords = {}
dims = ('bands','y', 'x')

# time coordinates if exists
if len(tile_shape) == 4:
    # There is a temporal dimension.
    time_coordinates = [datetime.datetime.utcfromtimestamp(start_time / 1000) for start_time in start_times]
    coords = {'t':time_coordinates}
    dims = ('t' ,'bands','y', 'x')

# band names if exists
if band_names:
    coords['bands'] = band_names
    band_count = tile_shape[dims.index('bands')]
    if band_count != len(band_names):
        raise OpenEOApiException(status_code=400,message='')

if extent is not None:
    gridx=(extent.xmax() - extent.xmin())/extent.tileRows()
    gridy=(extent.ymax() - extent.ymin())/extent.tileCols()
    xdelta=gridx*0.5*(tile_shape[-1]-extent.tileRows())
    ydelta=gridy*0.5*(tile_shape[-2]-extent.tileCols())
    xmin=extent.xmin()-xdelta-(overlap_x*gridx)
    xmax=extent.xmax()+xdelta+(overlap_x*gridx)
    ymin=extent.ymin()-ydelta-(overlap_y*gridx)
    ymax=extent.ymax()+ydelta+(overlap_y*gridy)
    coords['x']=np.linspace(xmin+0.5*gridx,xmax-0.5*gridx,tile_shape[-1],dtype=np.float32)
    coords['y']=np.linspace(ymax-0.5*gridy,ymin+0.5*gridy,tile_shape[-2],dtype=np.float32)
"""

#: its second exec (``npCube`` set before: the tile's float32 buffer)
CUBE_ARRAY = """
the_array = xr.DataArray(npCube, coords=coords, dims=dims, name="openEODataChunk")
datacube = XarrayDataCube(the_array)
"""

#: ``setContextInPython`` (``pyjmap_context`` set between the two)
CONTEXT_FUNCTION = """def pyjmap_to_dict(pyjmap):
  new_dict = {}
  pyjmap_str = "jep.PyJMap"
  for key in pyjmap:
    value = pyjmap[key]
    if pyjmap_str in str(type(value)):
      value = pyjmap_to_dict(value)
    new_dict[key] = value
  return new_dict"""
CONTEXT_SET = "context = pyjmap_to_dict(pyjmap_context)"

DATA = 'data = UdfData(proj={"EPSG": 900913}, datacube_list=[datacube], user_context=context)'
APPLY = "result_cube = apply_datacube(data.get_datacube_list()[0], data.user_context)"
RESULT_SHAPE = "result_cube.get_array().values.shape"
RESULT_DTYPE = "str(result_cube.get_array().values.dtype)"
RESULT_DATES = "result_cube.get_array().coords['t'].values.tolist()"

#: ``callApplyMetadata`` (``%(step_x)s`` etc. are Scala's ``${stepSize.width}``, ...)
METADATA = """
import openeo.metadata
metadata = {
   "cube:dimensions": {
      "x": {"type": "spatial", "axis": "x", "step": %(step_x)s, "reference_system": %(epsg)s},
      "y": {"type": "spatial", "axis": "y", "step": %(step_y)s, "reference_system": %(epsg)s},
      "t": {"type": "temporal"}
   }
}

"""
APPLY_METADATA = "result_metadata = apply_metadata(openeo.metadata.CollectionMetadata(metadata), context)"
STEP = '[d for d in result_metadata.spatial_dimensions if d.name == "%s"][0].step'

# --------------------------------------------------------------------------- the backend's pieces


class OpenEOApiException(Exception):
    """Stand-in for ``openeo_driver.errors.OpenEOApiException`` where openeo-driver is not
    installed (``DEFAULT_IMPORTS`` imports it; it is raised on a band-count mismatch)."""

    def __init__(self, message: str = "", status_code: int = 500, **kwargs: Any) -> None:
        super().__init__(message)
        self.status_code = status_code


def provide_openeo_driver_errors() -> None:
    """Make ``from openeo_driver.errors import OpenEOApiException`` work as on the backend:
    the real module where openeo-driver is installed, else a module holding the stand-in."""
    try:
        import openeo_driver.errors  # noqa: F401
        return
    except ImportError:
        pass
    package = sys.modules.setdefault("openeo_driver", types.ModuleType("openeo_driver"))
    errors = types.ModuleType("openeo_driver.errors")
    errors.OpenEOApiException = OpenEOApiException
    package.errors = errors
    sys.modules["openeo_driver.errors"] = errors


@dataclass(frozen=True)
class SpatialExtent:
    """Udf.scala's ``SpatialExtent`` case class, read through its accessors (``extent.xmin()``).

    ``tile_cols`` / ``tile_rows``: the layout's tile size (``apply_neighborhood``'s ``size``),
    not the buffered tile's."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    tile_cols: int
    tile_rows: int

    def xmin(self) -> float:
        return self.x_min

    def ymin(self) -> float:
        return self.y_min

    def xmax(self) -> float:
        return self.x_max

    def ymax(self) -> float:
        return self.y_max

    def tileCols(self) -> int:  # noqa: N802  (Scala's name)
        return self.tile_cols

    def tileRows(self) -> int:  # noqa: N802
        return self.tile_rows


@dataclass
class Window:
    """What ``runUserCodeSpatioTemporal`` has for one spatial key: the buffered tile
    ``[t, bands, size + 2 overlap, ...]`` float32, the key's (unbuffered) extent, the overlap,
    the band names and the dates (ms since the epoch)."""

    tile: np.ndarray
    extent: SpatialExtent
    overlap_x: int
    overlap_y: int
    band_names: List[str]
    start_times: List[int]


class BackendError(ValueError):
    """What the executor itself would refuse (Udf.scala's IllegalArgumentException)."""


def window_variables(window: Window) -> Dict[str, Any]:
    """The names Udf.scala ``interp.set``s before the cube code (npCube after it)."""
    return {"tile_shape": list(window.tile.shape), "extent": window.extent, "overlap_x": window.overlap_x,
            "overlap_y": window.overlap_y, "band_names": list(window.band_names),
            "start_times": list(window.start_times)}


def check_result(shape: Sequence[int], dtype: str, window: Window, layout_changed: bool) -> None:
    """Udf.scala's checks on a new result array (``checkOutputDtype`` and friends): 4-D for a
    key with dates (``runUserCodeSpatioTemporal``), at least 2-D for one date's
    ``(bands, y, x)`` tile (``runUserCode``, what ``apply_tiles`` / ``runUserCodeWithBands``
    run where ``apply_neighborhood``'s t size is ``P1D``)."""
    shape = list(shape)
    if window.tile.ndim == 3 and len(shape) < 2:
        raise BackendError("UDF returned a datacube that has less than 2 dimensions. "
                           f"Actual dimensions: ({', '.join(map(str, shape))}).")
    if window.tile.ndim == 4 and len(shape) != 4:
        raise BackendError("UDF returned a datacube that does not have dimensions (#dates, #bands, #rows, #cols). "
                           f"Actual dimensions: ({', '.join(map(str, shape))}).")
    if dtype != "float32":
        raise BackendError("UDF returned a datacube that does not have dtype == np.float32.")
    rows, cols = window.tile.shape[-2:]
    if not layout_changed and (shape[-2], shape[-1]) != (rows, cols):
        raise BackendError("UDF returned a datacube that does not have the same rows and columns as the input cube. "
                           f"Actual spatial dimensions: ({shape[2]}, {shape[3]}). Expected spatial dimensions: ({rows}, {cols}).")


# --------------------------------------------------------------------------- interpreters


class PythonInterpreter:
    """A fresh ``__main__`` globals dict per instance, in this process: what a new
    ``SharedInterpreter`` is to a UDF (``sys.modules`` is shared, globals are not)."""

    def __init__(self) -> None:
        self.globals: Dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}

    def set(self, name: str, value: Any) -> None:
        self.globals[name] = value

    def exec(self, code: str) -> None:
        exec(compile(code, "<string>", "exec"), self.globals)

    def getValue(self, expression: str) -> Any:  # noqa: N802  (Jep's name)
        return eval(expression, self.globals)

    def close(self) -> None:
        self.globals.clear()


def set_context(interp: PythonInterpreter, context: Dict[str, Any]) -> None:
    """``setContextInPython``: Jep hands a Java map; a copy of the JSON context here."""
    interp.exec(CONTEXT_FUNCTION)
    interp.set("pyjmap_context", json.loads(json.dumps(context)))
    interp.exec(CONTEXT_SET)


def call_apply_metadata(code: str, context: Dict[str, Any], step: Tuple[float, float], epsg: int) -> Optional[Tuple[float, float]]:
    """``callApplyMetadata``: the new (x, y) step, or None where the code has no
    ``apply_metadata`` (the backend's test is a substring test)."""
    if "apply_metadata" not in code:
        return None
    provide_openeo_driver_errors()
    interp = PythonInterpreter()
    try:
        interp.exec(DEFAULT_IMPORTS)
        set_context(interp, context)
        interp.exec(code)
        interp.exec(METADATA % {"step_x": float(step[0]), "step_y": float(step[1]), "epsg": int(epsg)})
        interp.exec(APPLY_METADATA)
        return float(interp.getValue(STEP % "x")), float(interp.getValue(STEP % "y"))
    finally:
        interp.close()


def run_window(code: str, window: Window, context: Dict[str, Any], layout_changed: bool) -> Tuple[np.ndarray, List[int]]:
    """``runUserCodeSpatioTemporal`` for one key (a ``[t, bands, y, x]`` tile): the result
    ``[t, bands, rows, cols]`` float32 and its dates (ms), after the backend's checks; for one
    date's ``[bands, y, x]`` tile (``P1D``), ``runUserCode``: the result and no dates (the key
    keeps its own)."""
    provide_openeo_driver_errors()
    interp = PythonInterpreter()
    try:
        interp.exec(DEFAULT_IMPORTS)
        for name, value in window_variables(window).items():
            interp.set(name, value)
        interp.exec(CUBE_COORDS)
        interp.set("npCube", window.tile)
        interp.exec(CUBE_ARRAY)
        set_context(interp, context)
        interp.exec(DATA)
        interp.exec(code)
        interp.exec(APPLY)
        shape = interp.getValue(RESULT_SHAPE)
        values = interp.getValue("result_cube.get_array().values")
        if values is not window.tile:  # a new array (not the tile modified in place): checked
            check_result(shape, interp.getValue(RESULT_DTYPE), window, layout_changed)
        if window.tile.ndim == 3:
            return np.asarray(values), []
        dates = interp.getValue(RESULT_DATES)
        dates = dates if isinstance(dates, list) else [dates]
        return np.asarray(values), [int(d) // 10**6 for d in dates]
    finally:
        interp.close()


# --------------------------------------------------------------------------- one job's apply_metadata

_METADATA_LOCK = threading.Lock()
_METADATA: Dict[str, Optional[Tuple[float, float]]] = {}


def apply_metadata_once(code: str, context: Dict[str, Any], step: Tuple[float, float], epsg: int) -> Optional[Tuple[float, float]]:
    """``call_apply_metadata`` once per (code, context, step, EPSG) in this process, before any
    window (windows wait for it): the driver's one call per job."""
    key = hashlib.sha256(json.dumps([code, context, list(step), epsg], sort_keys=True, default=str).encode()).hexdigest()
    with _METADATA_LOCK:
        if key not in _METADATA:
            _METADATA[key] = call_apply_metadata(code, context, step, epsg)
        return _METADATA[key]


def key_window(tile: np.ndarray, x: np.ndarray, y: np.ndarray, size: Tuple[int, int], overlap: Tuple[int, int],
               band_names: Sequence[str], dates: Optional[Sequence[Any]]) -> Window:
    """The ``Window`` a key of ``size`` (y, x) buffered by ``overlap`` has, from its buffered
    tile (``[t, bands, y, x]``, or one date's ``[bands, y, x]`` with ``dates`` None) and the
    tile's exact pixel-centre coordinates (a regular grid, y descending)."""
    res_x, res_y = float(x[1] - x[0]), float(y[0] - y[1])
    (oy, ox), (sy, sx) = overlap, size
    extent = SpatialExtent(x_min=float(x[0]) - res_x / 2 + ox * res_x, x_max=float(x[-1]) + res_x / 2 - ox * res_x,
                           y_min=float(y[-1]) - res_y / 2 + oy * res_y, y_max=float(y[0]) + res_y / 2 - oy * res_y,
                           tile_cols=int(sx), tile_rows=int(sy))
    times = [int(np.datetime64(d, "ms").astype("int64")) for d in dates] if dates is not None else []
    return Window(np.ascontiguousarray(tile, dtype=np.float32), extent, int(ox), int(oy), [str(b) for b in band_names], times)


def utc_dates(ms: Sequence[int]) -> np.ndarray:
    """The backend's dates (ms since the epoch) as datetime64[ns]."""
    return np.array([datetime.datetime.fromtimestamp(m / 1000, datetime.timezone.utc).replace(tzinfo=None) for m in ms],
                    dtype="datetime64[ns]")


# --------------------------------------------------------------------------- whole jobs


def stitch(results: Sequence[np.ndarray], windows: Sequence[Any], shape: Tuple[int, ...], overlap: Tuple[int, int],
           factor: int) -> np.ndarray:
    """The job's output ``[t, bands, f ny, f nx]``: each result cropped by ``factor x overlap``
    (what the driver crops after the layout change) and placed at its key."""
    (oy, ox), f = overlap, factor
    out = np.full((*shape[:-2], f * shape[-2], f * shape[-1]), np.nan, dtype=np.float32)
    for res, win in zip(results, windows):
        out[..., f * win.y0:f * (win.y0 + win.ny), f * win.x0:f * (win.x0 + win.nx)] = \
            res[..., f * oy:f * (oy + win.ny), f * ox:f * (ox + win.nx)]
    return out


def job_windows(cube: Any, size: Tuple[int, int], overlap: Tuple[int, int]) -> Tuple[List[Any], List[Window]]:
    """The keys of ``apply_neighborhood(size, overlap)`` over ``cube`` (``[t, bands, y, x]``, an
    exact grid), each as the executor hands it over: buffered, no-data (NaN) past the cube."""
    from s2sr.deploy import neighborhood

    keys = list(neighborhood.windows((cube.sizes["y"], cube.sizes["x"]), size))
    windows = []
    for key in keys:
        tile = neighborhood.extract_window(cube, key, size, overlap)
        windows.append(key_window(tile.values, tile.x.values, tile.y.values, size, overlap,
                                  cube.bands.values.tolist(), cube.t.values))
    return keys, windows


def run_job(code: str, cube: Any, size: Tuple[int, int], overlap: Tuple[int, int], context: Dict[str, Any],
            epsg: int = 32631, interpreter: str = "python") -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
    """A whole ``apply_neighborhood`` + ``run_udf`` (Python-Jep) over ``cube``, as the backend
    runs it: ``apply_metadata`` first, then every key in its own interpreter, then the crop and
    the mosaic.  ``interpreter``: ``"python"`` (this process) or ``"jep"`` (real Jep in a JVM).
    Returns the mosaic and the step ``apply_metadata`` returned (None without one)."""
    res = float(cube.x.values[1] - cube.x.values[0])
    keys, windows = job_windows(cube, size, overlap)
    if interpreter == "jep":
        step, results = run_in_jep(code, windows, context, (res, res), epsg)
    else:
        step = call_apply_metadata(code, context, (res, res), epsg)
        results = [run_window(code, w, context, step is not None)[0] for w in windows]
    factor = round(res / step[0]) if step else 1
    for result, window in zip(results, windows):
        expected = (factor * window.tile.shape[-2], factor * window.tile.shape[-1])
        if tuple(result.shape[-2:]) != expected:
            raise BackendError(f"UDF returned {tuple(result.shape[-2:])} rows and columns for a window of "
                               f"{window.tile.shape[-2:]} with a layout {factor}x finer: the mosaic would be misplaced")
    return stitch(results, keys, (cube.sizes["t"], cube.sizes["bands"], cube.sizes["y"], cube.sizes["x"]), overlap, factor), step


# --------------------------------------------------------------------------- real Jep

JEP_RUNNER = "JepRunner"


def jep_available() -> Optional[str]:
    """Why real Jep cannot run here, or None where it can (the jep package, java and javac)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("jep") is None:
        return "the jep package is not installed (pip install jep, with JAVA_HOME set to a JDK)"
    if not (shutil.which("java") and shutil.which("javac")):
        return "no java / javac on PATH"
    return None


def _jep_dir() -> Any:
    import importlib.util
    from pathlib import Path

    return Path(importlib.util.find_spec("jep").origin).parent


def _libpython() -> str:
    import sysconfig
    from pathlib import Path

    return str(Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("LDLIBRARY"))


def run_in_jep(code: str, windows: Sequence[Window], context: Dict[str, Any], step: Tuple[float, float],
               epsg: int, timeout: float = 1800) -> Tuple[Optional[Tuple[float, float]], List[np.ndarray]]:
    """The job in real ``jep.SharedInterpreter``s: one JVM (one executor), ``apply_metadata``
    in its own interpreter first, then one interpreter per window.  Returns the new step and
    the results."""
    import os
    import site
    import subprocess
    import tempfile
    from pathlib import Path

    reason = jep_available()
    if reason:
        raise RuntimeError(f"real Jep cannot run here: {reason}")
    jep_dir = _jep_dir()
    jar = next(jep_dir.glob("jep-*.jar"))
    with tempfile.TemporaryDirectory(prefix="s2sr-jep-") as tmp:
        spec = Path(tmp)
        (spec / "code.py").write_text(code)
        meta = {"context": context, "step": list(step), "epsg": epsg, "windows": len(windows),
                "with_metadata": "apply_metadata" in code}
        (spec / "job.json").write_text(json.dumps(meta))
        for k, w in enumerate(windows):
            np.save(spec / f"tile_{k}.npy", w.tile)
            (spec / f"window_{k}.json").write_text(json.dumps({**window_variables(w), "extent": w.extent.__dict__}))
        classes = spec / "classes"
        classes.mkdir()
        subprocess.run(["javac", "-cp", str(jar), "-d", str(classes), str(Path(__file__).with_name(f"{JEP_RUNNER}.java"))],
                       check=True, capture_output=True, timeout=120)
        site_dir = next(p for p in site.getsitepackages() + [site.getusersitepackages()] if (Path(p) / "jep").is_dir())
        env = {**os.environ, "LD_PRELOAD": _libpython(), "PYTHONPATH": site_dir}
        out = subprocess.run(["java", "-cp", f"{jar}{os.pathsep}{classes}", f"-Djava.library.path={jep_dir}", JEP_RUNNER,
                              str(spec), site_dir], capture_output=True, text=True, env=env, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"the Jep run failed:\n{(out.stdout + out.stderr)[-4000:]}")
        new_step = json.loads((spec / "metadata.json").read_text())["step"] if meta["with_metadata"] else None
        return (tuple(new_step) if new_step else None), [np.load(spec / f"result_{k}.npy") for k in range(len(windows))]


def _helper(call: str) -> str:
    return f"__import__('s2sr.deploy.geopyspark', fromlist=['geopyspark']).{call}"


def jep_plan(spec_dir: str) -> List[List[str]]:
    """The code strings of every interpreter of the job, in order (run by ``JepRunner``).  The
    values Scala ``interp.set``s come from helpers here, bound to the same names."""
    from pathlib import Path

    spec = Path(spec_dir)
    job = json.loads((spec / "job.json").read_text())
    code = (spec / "code.py").read_text()
    context_steps = [CONTEXT_FUNCTION, "pyjmap_context = " + _helper(f"jep_context({spec_dir!r})"), CONTEXT_SET]
    plan = []
    if job["with_metadata"]:
        metadata = METADATA % {"step_x": float(job["step"][0]), "step_y": float(job["step"][1]), "epsg": int(job["epsg"])}
        plan.append([DEFAULT_IMPORTS_JEP, *context_steps, code, metadata, APPLY_METADATA,
                     _helper(f"jep_collect_metadata({spec_dir!r}, result_metadata)")])
    for k in range(job["windows"]):
        names = "tile_shape, extent, overlap_x, overlap_y, band_names, start_times"
        plan.append([DEFAULT_IMPORTS_JEP, f"{names} = " + _helper(f"jep_variables({spec_dir!r}, {k})"), CUBE_COORDS,
                     "npCube = " + _helper(f"jep_tile({spec_dir!r}, {k})"), CUBE_ARRAY, *context_steps, DATA, code, APPLY,
                     _helper(f"jep_collect({spec_dir!r}, {k}, result_cube)")])
    return plan


#: DEFAULT_IMPORTS after making sure openeo_driver.errors imports (the stand-in where it is missing)
DEFAULT_IMPORTS_JEP = _helper("provide_openeo_driver_errors()") + "\n" + DEFAULT_IMPORTS


def jep_context(spec_dir: str) -> Any:
    """The context as Scala hands it: a ``java.util.HashMap`` (Jep wraps it as a PyJMap)."""
    from pathlib import Path

    context = json.loads((Path(spec_dir) / "job.json").read_text())["context"]
    return _java_map(context)


def _java_map(values: Dict[str, Any]) -> Any:
    from java.util import HashMap  # Jep's import hook: only inside Jep

    result = HashMap()
    for key, value in values.items():
        result.put(key, _java_map(value) if isinstance(value, dict) else value)
    return result


def _window_from_spec(spec_dir: str, k: int) -> Window:
    from pathlib import Path

    variables = json.loads((Path(spec_dir) / f"window_{k}.json").read_text())
    extent = SpatialExtent(**variables["extent"])
    return Window(np.load(Path(spec_dir) / f"tile_{k}.npy"), extent, variables["overlap_x"], variables["overlap_y"],
                  variables["band_names"], variables["start_times"])


def jep_variables(spec_dir: str, k: int) -> Tuple[Any, ...]:
    w = _window_from_spec(spec_dir, k)
    v = window_variables(w)
    return v["tile_shape"], v["extent"], v["overlap_x"], v["overlap_y"], v["band_names"], v["start_times"]


def jep_tile(spec_dir: str, k: int) -> np.ndarray:
    return _window_from_spec(spec_dir, k).tile


def jep_collect(spec_dir: str, k: int, result_cube: Any) -> None:
    """Udf.scala's reading of the result (shape, dtype, dates), its checks, then the values saved."""
    from pathlib import Path

    values = result_cube.get_array().values
    job = json.loads((Path(spec_dir) / "job.json").read_text())
    check_result(values.shape, str(values.dtype), _window_from_spec(spec_dir, k), job["with_metadata"])
    result_cube.get_array().coords["t"].values.tolist()  # Udf.scala reads the dates: a t coordinate is required
    np.save(Path(spec_dir) / f"result_{k}.npy", values)


def jep_collect_metadata(spec_dir: str, result_metadata: Any) -> None:
    from pathlib import Path

    step = [float(d.step) for axis in ("x", "y") for d in result_metadata.spatial_dimensions if d.name == axis]
    (Path(spec_dir) / "metadata.json").write_text(json.dumps({"step": step}))
