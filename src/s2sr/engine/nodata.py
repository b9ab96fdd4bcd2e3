"""s2sr.engine.nodata: which input pixels are valid, radiometric sanity, no-data in the output."""

import logging
from typing import Any, Dict, Optional, Sequence

import numpy as np

from s2sr.engine.swir_cap import CAP_REACH

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


#: how far (pixels, 8-neighbour steps) no-data is filled by extrapolating its valid neighbours
#: before the band mean takes over: a scene's edge (backends hand no-data past it) and holes.
#: Measured on the Wald x2 test area cropped to a scene (docs/udf.md): the band-mean frame put
#: the outer 8 output px at 1.82x the interior error with negatives; 2 px of extrapolation
#: 1.14x (cubic: 1.13x), none negative; more reach changed nothing.  Each output then depends
#: on input up to margin + FILL_REACH away: the overlap that keeps seams exact (required_overlap).
FILL_REACH = 2


def output_reach(meta: Dict[str, Any]) -> int:
    """Input px around an output pixel that it reads: the receptive field's margin, then the
    SWIR cap's reach beyond it (``s2sr.engine.swir_cap``)."""
    return int(meta["margin"]) + CAP_REACH


def required_overlap(meta: Dict[str, Any]) -> int:
    """The ``apply_neighborhood`` overlap (input px) with which windows equal the whole-scene run:
    what an output pixel reads (``output_reach``) plus the no-data fill's reach."""
    return output_reach(meta) + FILL_REACH


def fill_nodata(x: np.ndarray, valid: np.ndarray, fallback: np.ndarray, reach: int = FILL_REACH) -> np.ndarray:
    """``x`` ``[T, C, H, W]`` (model units) with its no-data pixels filled, in place: up to
    ``reach`` steps out from the valid pixels, each pixel the mean of its valid 8-neighbours of
    the step before (an extrapolation that uses only data within ``reach``, so windows with
    ``required_overlap`` fill exactly as the whole scene does); beyond, the band's ``fallback``."""
    done = valid.copy()
    x[~done] = 0.0
    for _ in range(reach):
        if done.all():
            break
        total, count = _sum3x3(x), _sum3x3(done.astype(np.float32))
        grow = ~done & (count > 0)
        x[grow] = total[grow] / count[grow]
        done |= grow
    np.copyto(x, np.broadcast_to(fallback.reshape(1, -1, 1, 1), x.shape), where=~done)
    return x


def _sum3x3(a: np.ndarray) -> np.ndarray:
    """The sum over each pixel's 3 x 3 neighbourhood (zero outside), ``[..., H, W]``."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    h, w = a.shape[-2:]
    return sum(p[..., i:i + h, j:j + w] for i in range(3) for j in range(3))


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
    buffer (the UDF's output, 42 MB per date at 512 px: 69 -> ~25 ms without the temporaries).

    s2sr's one int16 conversion (the UDF's ``output_dtype`` and ``s2sr run``'s GeoTIFFs): valid
    values clip to ``[INT16_NODATA + 1, 32767]``, so none becomes the no-data value, nor falls
    below it where readers take ``<= INT16_NODATA`` as no-data."""
    nodata = ~np.isfinite(out)
    np.rint(out, out=out)
    np.clip(out, INT16_NODATA + 1, np.iinfo(np.int16).max, out=out)  # NaN stays NaN, inf is clipped
    np.copyto(out, np.float32(INT16_NODATA), where=nodata)
    return out.astype(np.int16)
