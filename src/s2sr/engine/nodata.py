"""s2sr.engine.nodata: which input pixels are valid, radiometric sanity, no-data in the output."""

import logging
from typing import Any, Dict, Sequence

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


def check_radiometry(refl: np.ndarray, valid: np.ndarray, bands: Sequence[str], context: Dict[str, Any]) -> np.ndarray:
    """Mask unphysical reflectances; ValueError when they dominate a band or the scale is off."""
    if not valid.any():
        return valid
    lo, hi = REFLECTANCE_RANGE
    absurd = valid & ((refl < lo) | (refl > hi))
    band_axis = refl.ndim - 3
    per_band_valid = valid.sum(axis=tuple(i for i in range(refl.ndim) if i != band_axis))
    per_band_absurd = absurd.sum(axis=tuple(i for i in range(refl.ndim) if i != band_axis))
    for band, n_valid, n_absurd in zip(bands, per_band_valid, per_band_absurd):
        if n_valid and n_absurd > 0.5 * n_valid:
            raise ValueError(
                f"band {band}: {n_absurd} of {n_valid} values are outside reflectance "
                f"[{lo}, {hi}] with scale {context.get('scale', 10000.0)} and offset "
                f"{context.get('offset', 0.0)}; check the input scaling"
            )
    scale = float(context.get("scale", 10000.0))
    vmax = float(np.abs(refl[valid]).max())
    if scale >= 100 and 0 < vmax * scale <= 2.0:
        raise ValueError(
            f"all input values lie within [-2, 2] while the scale is {scale}: the cube looks like "
            "reflectance in [0, 1]; pass context {'scale': 1}"
        )
    if absurd.any():
        log.warning("s2sr: %d values outside reflectance [%s, %s] treated as no-data", int(absurd.sum()), lo, hi)
    return valid & ~absurd



def to_int16(out: np.ndarray) -> np.ndarray:
    """float32 -> int16, rounded, clipped, INT16_NODATA where not finite; rounds in ``out``'s own
    buffer (the UDF's output, 42 MB per date at 512 px: 69 -> ~25 ms without the temporaries)."""
    nodata = ~np.isfinite(out)
    np.rint(out, out=out)
    np.clip(out, INT16_NODATA + 1, np.iinfo(np.int16).max, out=out)  # NaN stays NaN, inf is clipped
    np.copyto(out, np.float32(INT16_NODATA), where=nodata)
    return out.astype(np.int16)
