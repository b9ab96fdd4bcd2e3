"""s2sr.engine.coords: pixel-centre coordinates and the output window's grid.

s2sr's one implementation of this grid maths: ``regular_step`` (a regular axis's signed step),
``pixel_centres`` (the centres of pixels counted from an outer edge) and ``fine_axis`` (the
``factor`` times finer grid over a window); the local engine, ``apply_neighborhood`` and the
UDF call these (tests/test_one_source.py fails on a copy elsewhere).

What a backend hands a UDF need not be a regular grid: the geopyspark executor
(openeo-geotrellis-extensions ``Udf.scala``, ``setXarraydatacubeInPython``) builds x and y with
``np.linspace(..., dtype=np.float32)`` from the key's extent with the overlap counted twice, so
the step is not the pixel size and float32 at UTM magnitudes makes it uneven (and it ignores the
coordinates a UDF returns).  So the output grid is never derived from coordinate differences: it
is the input resolution (context ``resolution``, default 10 m) divided by the factor, centred on
the window's centre, which that formula keeps.  Where the input is an exact regular grid at that
resolution, the output is its exact refinement: outer edge + (i + 0.5) x resolution / factor.
"""

from typing import Optional

import numpy as np

#: how close an input step must be to the resolution to count as the exact grid (relative)
EXACT_GRID_TOLERANCE = 1e-9


def regular_step(values: np.ndarray, axis: str = "axis") -> float:
    """The signed step of a regular axis of pixel centres, from its ends (float64); ValueError
    for fewer than two pixels."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError(f"a {axis} axis one pixel wide has no step: give its resolution")
    return float(values[-1] - values[0]) / (values.size - 1)


def pixel_centres(edge: float, step: float, n: int, start: int = 0) -> np.ndarray:
    """Centres of pixels ``start .. start + n - 1`` of the grid whose pixel 0 begins at ``edge``
    (``step`` signed: negative for a y axis running down), float64."""
    return edge + (np.arange(start, start + n, dtype=np.float64) + 0.5) * step


def outer_edge(values: np.ndarray, step: float) -> float:
    """Where pixel 0 of a regular axis of pixel centres begins (``step`` signed)."""
    return float(np.asarray(values, dtype=np.float64)[0]) - step / 2.0


def fine_axis(values: np.ndarray, factor: int, axis: str, resolution: Optional[float]) -> np.ndarray:
    """Pixel centres of the ``factor`` times finer grid over the window of ``values`` (float64).

    ``values``: the window's ``n`` pixel centres along ``axis`` (``"x"`` ascending, ``"y"``
    descending as rasters are, the other way round where ``values`` run so); ``resolution``: the
    input pixel size in metres (None: the regular step of ``values``, which must then hold two
    or more pixels).  ValueError for NaN or infinite coordinates.
    """
    coarse = np.asarray(values, dtype=np.float64)
    n = coarse.size
    if n == 0:
        raise ValueError(f"the {axis} axis is empty")
    if not np.isfinite(coarse).all():
        raise ValueError(f"the {axis} coordinates hold NaN or infinite values: the window cannot be placed")
    sign = _direction(coarse, axis)
    if resolution is None:
        if n < 2:
            raise ValueError(f"a window one pixel wide along {axis} needs the context key 'resolution'")
        resolution = abs(regular_step(coarse, axis))
    step = sign * float(resolution)
    if n >= 2 and np.all(np.abs(np.diff(coarse) - step) <= EXACT_GRID_TOLERANCE * abs(step)):
        edge = outer_edge(coarse, step)  # an exact grid: refine it from its own outer edge
    else:
        edge = (coarse[0] + coarse[-1]) / 2.0 - n * step / 2.0  # the window's centre is what holds
    return pixel_centres(edge, step / factor, n * factor)


def _direction(coarse: np.ndarray, axis: str) -> float:
    """+1 where the axis runs up, -1 where it runs down (a one-pixel y axis: down, as rasters)."""
    if coarse.size >= 2 and coarse[-1] != coarse[0]:
        return 1.0 if coarse[-1] > coarse[0] else -1.0
    return -1.0 if axis == "y" else 1.0
