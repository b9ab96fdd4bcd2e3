"""s2sr.engine.cube: the engine on an xarray cube ``[t,] bands, y, x`` at 10 m -> the same at 5 m."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import xarray

from s2sr.engine.context import check_context, resolution_of
from s2sr.engine.coords import fine_axis
from s2sr.engine.nodata import to_int16
from s2sr.engine.precision import load_model
from s2sr.engine.threads import set_threads
from s2sr.engine.tiling import superresolve
from s2sr.engine.weights import canonical_band

TIME_DIMS = ("t", "time")
SPATIAL_DIMS = ("y", "x")


def cube_dims(array: xarray.DataArray) -> Tuple[Optional[str], str]:
    """(time dim or None, band dim); ValueError unless the cube is [t,] bands, y, x."""
    for dim in SPATIAL_DIMS:
        if dim not in array.dims:
            raise ValueError(f"the cube needs dimensions 'y' and 'x', got {array.dims}")
    time_dims = [d for d in array.dims if d in TIME_DIMS]
    others = [d for d in array.dims if d not in TIME_DIMS and d not in SPATIAL_DIMS]
    if len(time_dims) > 1 or len(others) != 1:
        raise ValueError(f"the cube must have dimensions ([t,] bands, y, x), got {array.dims}")
    return (time_dims[0] if time_dims else None), others[0]


def band_indices(array: xarray.DataArray, band_dim: str, bands: Sequence[str]) -> List[int]:
    """Index along the cube's band axis of each model band, in model order."""
    size = array.sizes[band_dim]
    labels = array.coords[band_dim].values.tolist() if band_dim in array.coords else None
    if labels is not None:  # netCDF char labels arrive as bytes
        labels = [v.decode("utf-8", "replace").strip("\x00 ") if isinstance(v, bytes) else v for v in labels]
    named = labels is not None and all(isinstance(v, str) for v in labels)
    if not named:
        if size != len(bands):
            raise ValueError(
                f"the cube has {size} bands without names along {band_dim!r}; label them or pass "
                f"exactly the {len(bands)} bands {list(bands)} in that order"
            )
        return list(range(size))
    names = [canonical_band(v) for v in labels]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate band names along {band_dim!r}: {labels}")
    wanted = [canonical_band(b) for b in bands]
    missing = [b for b in wanted if b not in names]
    if missing:
        raise ValueError(f"the cube lacks bands {missing} that the model needs (it has {labels}; needs {list(bands)})")
    extra = [labels[i] for i, n in enumerate(names) if n not in wanted]
    if extra:
        raise ValueError(
            f"unexpected bands {extra}: the model super-resolves exactly {list(bands)} (filter_bands first)"
        )
    return [names.index(b) for b in wanted]



def superresolve_cube(array: xarray.DataArray, context: Dict[str, Any]) -> xarray.DataArray:
    """The UDF on a DataArray: ``[t,] bands, y, x`` at 10 m -> the same at 5 m."""
    context = check_context(context)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"the cube must hold real numbers, got dtype {array.dtype}")
    time_dim, band_dim = cube_dims(array)
    set_threads(context)
    module, meta, device = load_model(context)
    f = meta["factor"]
    order = band_indices(array, band_dim, meta["bands"])
    lead = [time_dim] if time_dim else []
    data = array.transpose(*lead, band_dim, "y", "x").values
    if time_dim is None:
        data = data[None]
    if data.shape[-1] < 1 or data.shape[-2] < 1:
        raise ValueError(f"the cube has an empty spatial extent {data.shape[-2:]}")
    coords = output_coords(array, lead + [band_dim], f, resolution_of(context, meta))  # bad coordinates: before the work
    dates = array.coords[time_dim].values if time_dim and time_dim in array.coords else None
    out = superresolve(data[:, order], module, meta, context, device, dates)
    if order != sorted(order):  # back to the cube's own band order (a copy only where it differs)
        out[:, order] = out.copy()
    if time_dim is None:
        out = out[0]
    if context.get("output_dtype", "float32") == "int16":
        out = to_int16(out)
    result = xarray.DataArray(out, dims=lead + [band_dim, "y", "x"], coords=coords, name=array.name, attrs=dict(array.attrs))
    return result.transpose(*array.dims)


def output_coords(array: xarray.DataArray, kept: Sequence[str], factor: int, resolution: float) -> Dict[str, Any]:
    """The output's coordinates: the finer y / x grid, the ``kept`` dimensions' labels as they
    are, and the scalar coordinates (rioxarray's ``spatial_ref``, which carries the CRS)."""
    coords: Dict[str, Any] = {}
    for dim in ("y", "x"):
        if dim in array.coords:
            coords[dim] = fine_axis(array.coords[dim].values, factor, dim, resolution)
    for dim in kept:
        if dim in array.coords:
            coords[dim] = array.coords[dim].values
    for name, coord in array.coords.items():
        if coord.ndim == 0:
            coords[name] = coord
    return coords
