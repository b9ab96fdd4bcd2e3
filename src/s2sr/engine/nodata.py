"""s2sr.engine.nodata: which input pixels are valid, radiometric sanity, no-data in the output."""

import logging
from typing import Any, Dict, Optional, Sequence

import numpy as np

#: reflectances outside this range are not physical: masked, and an error when they dominate
REFLECTANCE_RANGE = (-1.0, 3.0)
INT16_NODATA = -10000

log = logging.getLogger(__name__)


def valid_mask(values: np.ndarray, context: Dict[str, Any]) -> np.ndarray:
    valid = np.isfinite(values)
    nodata = context.get("nodata")
    if nodata is not None:
        valid &= values != float(nodata)
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        log.warning("s2sr: %d infinite input values treated as no-data", n_inf)
    return valid


def check_radiometry(refl: np.ndarray, valid: np.ndarray, bands: Sequence[str], context: Dict[str, Any],
                     dates: Optional[Sequence[Any]] = None) -> np.ndarray:
    """Mask unphysical reflectances of ``refl`` ``[T, C, H, W]``; ValueError where they dominate a
    band or a date, where the scale is off, or where one band or date is in other units than
    the rest (reflectance in [0, 1] among digital numbers)."""
    if not valid.any():
        return valid
    lo, hi = REFLECTANCE_RANGE
    absurd = valid & ((refl < lo) | (refl > hi))
    n_valid, n_absurd = valid.sum(axis=(2, 3)), absurd.sum(axis=(2, 3))  # per date and band
    where = _plane_names(bands, dates, refl.shape[0])
    for (t, c) in zip(*np.nonzero(n_absurd > 0.5 * n_valid)):
        raise ValueError(
            f"{where(t, c)}: {n_absurd[t, c]} of {n_valid[t, c]} values are outside reflectance "
            f"[{lo}, {hi}] with scale {context.get('scale', 10000.0)} and offset "
            f"{context.get('offset', 0.0)}; check the input scaling"
        )
    scale = float(context.get("scale", 10000.0))
    if scale >= 100:
        _check_units(refl, valid, scale, where)
    if absurd.any():
        log.warning("s2sr: %d values outside reflectance [%s, %s] treated as no-data", int(absurd.sum()), lo, hi)
    return valid & ~absurd


def _plane_names(bands: Sequence[str], dates: Optional[Sequence[Any]], n_dates: int):
    """``where(t, c)``: 'band B05' or 'band B05 on date 2020-06-10' for messages."""
    def where(t: int, c: int) -> str:
        if dates is None or n_dates == 1:
            return f"band {bands[c]}"
        text = str(dates[t])
        return f"band {bands[c]} on date {text[:10] if not text[10:].strip('T0:.') else text[:19]}"
    return where


def _check_units(refl: np.ndarray, valid: np.ndarray, scale: float, where) -> None:
    """Planes whose values all lie within [-2, 2] input units while the scale is that of digital
    numbers are reflectance in [0, 1]: all of them (a scale to change), or some (mixed units)."""
    peak = np.where(valid, np.abs(refl), 0.0).max(axis=(2, 3)) * scale  # per plane, input units
    has = valid.any(axis=(2, 3))
    small = has & (peak <= 2.0) & (peak > 0)
    if not small.any():
        return
    if small.sum() == has.sum():
        raise ValueError(
            f"all input values lie within [-2, 2] while the scale is {scale}: the cube looks like "
            "reflectance in [0, 1]; pass context {'scale': 1}"
        )
    names = [where(t, c) for t, c in zip(*np.nonzero(small))]
    raise ValueError(f"{', '.join(names[:5])}{' and others' if len(names) > 5 else ''} look like reflectance in [0, 1] "
                     f"while the rest of the cube is in units of 1/{scale:g} reflectance: bring every band and date to one unit")


def to_int16(out: np.ndarray) -> np.ndarray:
    """float32 -> int16, rounded, clipped, INT16_NODATA where not finite; rounds in ``out``'s own
    buffer (the UDF's output, 42 MB per date at 512 px: 69 -> ~25 ms without the temporaries)."""
    nodata = ~np.isfinite(out)
    np.rint(out, out=out)
    np.clip(out, INT16_NODATA + 1, np.iinfo(np.int16).max, out=out)  # NaN stays NaN, inf is clipped
    np.copyto(out, np.float32(INT16_NODATA), where=nodata)
    return out.astype(np.int16)
