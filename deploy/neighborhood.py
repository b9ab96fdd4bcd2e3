"""openEO ``apply_neighborhood`` over xarray, with the geopyspark rule for resolution changes.

Semantics (openeo-processes ``apply_neighborhood``, px units only): the cube's x/y plane is cut
into tiles of ``size`` pixels (the last ones partial); each tile is handed to ``process`` with
``overlap`` extra pixels on each side (``size + 2 * overlap`` in all), no-data (NaN) where the
window passes the cube's edges; the overlap of the result is discarded.  The geopyspark
backends (CDSE, Terrascope) allow the process to return the window at ``factor`` times the
resolution (runtime ``Python-Jep`` + ``apply_metadata``): they then crop ``factor * overlap``
pixels on each side and stitch the ``factor * size`` tiles.  This module does exactly that, so
that tests run the UDF as a backend runs it, and the local engine can run the UDP's graph.

Windows are independent: ``map_windows`` may run them in parallel (a dask scheduler or threads).

This is the backend's side, so its grid (``_regular_coords``, ``fine_coords``: the windows' and
the stitched result's pixel centres, as the backend lays them out) is its own, apart from s2sr's
one implementation in ``s2sr.engine.coords`` on purpose: the checks here hold the UDF's output
grid against an independent one (tests/test_one_source.py shows the two agree), and a worker
loads this module without s2sr on its path (tests/test_archive.py).
"""

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import xarray

Pair = Tuple[int, int]
#: a window's ``attrs`` entry: the ``apply_neighborhood`` geometry it was cut with (the key's
#: size and the overlap, (y, x) pixels), which the geopyspark executor knows for every key
WINDOW_ATTR = "s2sr_neighborhood"


def _pair(v: Union[int, Sequence[int]]) -> Pair:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    y, x = v
    return int(y), int(x)


@dataclass(frozen=True)
class Window:
    """One window in input pixel coordinates of the cube (may extend past its edges)."""

    y0: int  # first row of the tile (without overlap)
    x0: int
    ny: int  # tile size actually inside the cube
    nx: int


def windows(shape: Pair, size: Pair) -> Iterator[Window]:
    """Tiles of ``size`` covering an (ny, nx) plane, row-major."""
    (ny, nx), (sy, sx) = shape, size
    for y0 in range(0, ny, sy):
        for x0 in range(0, nx, sx):
            yield Window(y0, x0, min(sy, ny - y0), min(sx, nx - x0))


def _regular_coords(values: np.ndarray, start: int, count: int, resolution: Optional[float]) -> np.ndarray:
    """Pixel-centre coordinates of indices start .. start+count-1 on the cube's regular grid."""
    values = np.asarray(values, dtype=np.float64)
    if values.size >= 2:
        step = (values[-1] - values[0]) / (values.size - 1)
    elif resolution is not None:
        step = resolution
    else:
        raise ValueError("a cube one pixel wide needs its resolution")
    return values[0] + (start + np.arange(count)) * step


def extract_window(cube: xarray.DataArray, win: Window, size: Pair, overlap: Pair, coord_dtype=np.float64) -> xarray.DataArray:
    """The window the process sees: tile + overlap, NaN outside the cube, regular coordinates.

    Like geopyspark, the window always has the full ``size + 2 * overlap`` shape: an edge tile
    is padded with no-data past the cube's edge.
    """
    (sy, sx), (oy, ox) = size, overlap
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    ys, xs = win.y0 - oy, win.x0 - ox
    hy, hx = sy + 2 * oy, sx + 2 * ox
    lead = [d for d in cube.dims if d not in ("y", "x")]
    data = np.full([cube.sizes[d] for d in lead] + [hy, hx], np.nan, dtype=np.float32)
    cy0, cy1 = max(ys, 0), min(ys + hy, ny)
    cx0, cx1 = max(xs, 0), min(xs + hx, nx)
    src = cube.transpose(*lead, "y", "x").isel(y=slice(cy0, cy1), x=slice(cx0, cx1)).values
    data[..., cy0 - ys:cy1 - ys, cx0 - xs:cx1 - xs] = src
    coords = {d: cube.coords[d].values for d in lead if d in cube.coords}
    coords["y"] = _regular_coords(cube.y.values, ys, hy, None).astype(coord_dtype)
    coords["x"] = _regular_coords(cube.x.values, xs, hx, None).astype(coord_dtype)
    attrs = {WINDOW_ATTR: {"size": (sy, sx), "overlap": (oy, ox)}}
    if "crs" in cube.attrs:
        attrs["crs"] = cube.attrs["crs"]
    return xarray.DataArray(data, dims=lead + ["y", "x"], coords=coords, attrs=attrs)


def fine_coords(values: np.ndarray, factor: int) -> np.ndarray:
    """Pixel centres of the ``factor`` times finer grid aligned on the same outer edges."""
    values = np.asarray(values, dtype=np.float64)
    step = (values[-1] - values[0]) / (values.size - 1)
    edge = values[0] - step / 2
    return edge + (np.arange(values.size * factor) + 0.5) * step / factor


def apply_neighborhood(
    cube: xarray.DataArray,
    process: Callable[[xarray.DataArray], xarray.DataArray],
    size: Union[int, Sequence[int]],
    overlap: Union[int, Sequence[int]] = 0,
    coord_dtype=np.float64,
    check_coords: bool = True,
    map_windows: Optional[Callable] = None,
) -> xarray.DataArray:
    """Run ``process`` over overlapping windows of ``cube`` (dims ``[..., y, x]``) and stitch.

    ``process`` returns either the window's shape (no resolution change) or ``factor`` times
    its y/x size (the geopyspark rule); the same factor for every window.  With
    ``check_coords`` the returned y/x coordinates must equal the expected fine grid (1e-6 m).
    ``map_windows(fn, items)`` replaces the builtin ``map`` (e.g. a thread pool's map).
    ``coord_dtype`` float32 reproduces the backends' float32 pixel-centre coordinates.
    """
    size, overlap = _pair(size), _pair(overlap)
    if min(size) < 1 or min(overlap) < 0:
        raise ValueError(f"apply_neighborhood needs size >= 1 and overlap >= 0, got {size}, {overlap}")
    if cube.sizes["y"] < 2 or cube.sizes["x"] < 2:
        raise ValueError("apply_neighborhood needs a cube at least 2 x 2 pixels")
    wins: List[Window] = list(windows((cube.sizes["y"], cube.sizes["x"]), size))

    def run(win: Window) -> Tuple[Window, xarray.DataArray]:
        window = extract_window(cube, win, size, overlap, coord_dtype)
        return win, process(window)

    results = list((map_windows or map)(run, wins))
    lead = [d for d in cube.dims if d not in ("y", "x")]
    first = results[0][1]
    hy = size[0] + 2 * overlap[0]
    factor = first.sizes["y"] // hy
    if factor < 1 or first.sizes["y"] != factor * hy or first.sizes["x"] != factor * (size[1] + 2 * overlap[1]):
        raise ValueError(f"the process returned y/x {first.sizes['y']}x{first.sizes['x']} for a {hy}-px window: not an integer factor")
    out = np.full([cube.sizes[d] for d in lead] + [factor * cube.sizes["y"], factor * cube.sizes["x"]], np.nan, dtype=first.dtype)
    oy, ox = factor * overlap[0], factor * overlap[1]
    for win, res in results:
        if res.shape != first.shape:
            raise ValueError(f"the process returned shape {res.shape} for one window and {first.shape} for another")
        res = res.transpose(*lead, "y", "x")
        if check_coords and "x" in res.coords:
            _check_window_coords(cube, win, size, overlap, factor, res)
        tile = res.values[..., oy:oy + factor * win.ny, ox:ox + factor * win.nx]
        out[..., factor * win.y0:factor * (win.y0 + win.ny), factor * win.x0:factor * (win.x0 + win.nx)] = tile
    coords = {d: cube.coords[d].values for d in lead if d in cube.coords}
    coords["y"] = fine_coords(cube.y.values, factor) if factor > 1 else cube.y.values
    coords["x"] = fine_coords(cube.x.values, factor) if factor > 1 else cube.x.values
    return xarray.DataArray(out, dims=lead + ["y", "x"], coords=coords, attrs=dict(cube.attrs)).transpose(*cube.dims)


def _check_window_coords(cube, win: Window, size: Pair, overlap: Pair, factor: int, res: xarray.DataArray) -> None:
    for axis, start, n_in in (("y", win.y0 - overlap[0], size[0] + 2 * overlap[0]), ("x", win.x0 - overlap[1], size[1] + 2 * overlap[1])):
        coarse = _regular_coords(cube[axis].values, start, n_in, None)
        expected = fine_coords(coarse, factor) if factor > 1 else coarse
        got = np.asarray(res[axis].values, dtype=np.float64)
        if got.shape != expected.shape or np.max(np.abs(got - expected)) > 1e-6 * max(1.0, abs(expected[1] - expected[0])) + 1e-6:
            raise ValueError(f"the process returned {axis} coordinates off the expected fine grid (window at {win})")
