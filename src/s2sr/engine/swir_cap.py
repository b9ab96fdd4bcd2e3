"""s2sr.engine.swir_cap: the SWIR bands' detail capped by their own local input contrast (numpy only).

B11 and B12 have no 10 m reference; the network draws their 5 m detail from the other bands.
Where the SWIR differs in structure from the visible and NIR (snow: bright and textured in the
visible, flat and dark in the SWIR) that detail is texture the band does not have: on the one
real snowy scene evaluated, B11 fell 3 dB below cubic on sharp inputs (docs/model_card.md, *The
cap on the SWIR detail*).  So after the network, per output pixel, the detail over bicubic in
B11 / B12 is scaled down where its local standard deviation (5 x 5 output px) exceeds ``k``
times the band's own input standard deviation (3 x 3 input px).  Other bands are untouched.

Every output pixel reads the network's output within 2 output px and the input within 3 input
px (bicubic's 2, then the detail's 5 x 5), so the cap adds ``CAP_REACH`` input px to the
network's margin in the overlap that keeps seams exact.
"""

import logging
from typing import Any, Dict, Sequence

import numpy as np

from s2sr.engine.weights import BANDS_20M

log = logging.getLogger(__name__)

#: the default factor: the largest of 2, 2.5, 3 with which the snowy scene met issue 21's goals
SWIR_CAP_K = 2.5
SWIR_BANDS = BANDS_20M[4:]  # B11, B12: no 10 m band shares their spectrum
#: input px the cap reads beyond the network's receptive field (the detail's 5 x 5 output px)
CAP_REACH = 1
#: PyTorch's bicubic coefficient (``F.interpolate(mode="bicubic")``): what the cap was measured with
CUBIC_A = -0.75


def _cubic_taps(t: float, a: float = CUBIC_A) -> np.ndarray:
    """The 4 cubic-convolution weights at fractional offset ``t`` for taps -1, 0, 1, 2."""
    def near(d: float) -> float:
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


#: x2, half-pixel centres: output 2i samples the input at i - 0.25 (taps i-2 .. i+1), 2i+1 at i + 0.25 (i-1 .. i+2)
_EVEN, _ODD = _cubic_taps(0.75), _cubic_taps(0.25)


def _along(a: np.ndarray, axis: int, start: int, n: int, step: int = 1) -> np.ndarray:
    """``n`` entries of ``a`` on ``axis`` from ``start``, every ``step``-th: a view, no copy."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, start + step * n, step)
    return a[tuple(index)]


def _pad_axis(a: np.ndarray, axis: int, width: int, mode: str = "constant") -> np.ndarray:
    """``a`` padded by ``width`` on both sides of ``axis`` (``np.pad``'s ``mode``)."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (width, width)
    return np.pad(a, pad, mode=mode)


def _upsample_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """Bicubic x2 along ``axis``, borders replicated (as PyTorch's ``align_corners=False``)."""
    n = a.shape[axis]
    p = _pad_axis(a, axis, 2, mode="edge")  # p[j + i] is input i + j - 2
    shape = list(a.shape)
    shape[axis] = 2 * n
    out = np.zeros(shape, dtype=a.dtype)
    even, odd = _along(out, axis, 0, n, 2), _along(out, axis, 1, n, 2)
    for w, j in zip(_EVEN, range(0, 4)):
        even += w * _along(p, axis, j, n)
    for w, j in zip(_ODD, range(1, 5)):
        odd += w * _along(p, axis, j, n)
    return out


def bicubic_x2(x: np.ndarray) -> np.ndarray:
    """``[..., H, W]`` -> ``[..., 2H, 2W]``: ``F.interpolate(x, scale_factor=2, mode="bicubic")`` in numpy."""
    return _upsample_axis(_upsample_axis(x, x.ndim - 2), x.ndim - 1)


def _box_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over ``size x size`` neighbourhoods of ``[..., H, W]`` (at borders: of the pixels inside).
    Sums of shifted slices, not running sums: each result reads only its own neighbourhood, so a
    window's value equals the whole scene's to the last bit of rounding."""
    r = size // 2
    out = a
    for axis in (a.ndim - 2, a.ndim - 1):
        n = out.shape[axis]
        p = _pad_axis(out, axis, r)
        out = _along(p, axis, 0, n).copy()
        for j in range(1, size):
            out += _along(p, axis, j, n)
    count = np.outer(*(np.minimum(np.arange(m) + r, m - 1) - np.maximum(np.arange(m) - r, 0) + 1 for m in a.shape[-2:]))
    out /= count
    return out


def local_std(a: np.ndarray, size: int) -> np.ndarray:
    """Standard deviation over ``size x size`` neighbourhoods of ``[..., H, W]``, same shape."""
    mean = _box_mean(a, size)
    return np.sqrt(np.maximum(_box_mean(a * a, size) - mean * mean, 0.0))


def cap_factor(context: Dict[str, Any]) -> float:
    """The context's ``swir_cap`` (absent or None: ``SWIR_CAP_K``; 0: no cap)."""
    k = context.get("swir_cap")
    return SWIR_CAP_K if k is None else float(k)


def cap_detail(y: np.ndarray, x: np.ndarray, bands: Sequence[str], k: float = SWIR_CAP_K,
               capped: Sequence[str] = SWIR_BANDS) -> np.ndarray:
    """Cap the SWIR detail of ``y`` ``[B, C, 2H, 2W]`` (the network's output) in place, ``x``
    ``[B, C, H, W]`` its input in the same units, ``bands`` their ``C`` band names: in each band
    of ``capped``, the detail over bicubic scaled by ``min(1, k * input std (3 x 3) / detail std
    (5 x 5))``.  ``k`` 0: ``y`` as it is.  Defined for x2 (every shipped model's factor): weights
    of another factor pass unchanged, with a log line.  Returns ``y``."""
    idx = [i for i, b in enumerate(bands) if b in capped]
    if not k or not idx:
        return y
    if y.shape[-2:] != (2 * x.shape[-2], 2 * x.shape[-1]):
        log.info("s2sr: no SWIR cap for a %s output of a %s input (the cap is defined for x2)", y.shape[-2:], x.shape[-2:])
        return y
    for b in range(y.shape[0]):
        for c in idx:  # one plane at a time, in float64: ~8 temporaries of 10 MB at 512 px
            y[b, c] = _capped_plane(y[b, c], x[b, c].astype(np.float64), k)
    return y


def _capped_plane(y: np.ndarray, x: np.ndarray, k: float) -> np.ndarray:
    """One band of one date: ``y`` ``[2H, 2W]``, ``x`` ``[H, W]`` float64 -> the capped ``y``."""
    base = bicubic_x2(x)
    detail = y - base
    room = k * np.repeat(np.repeat(local_std(x, 3), 2, axis=0), 2, axis=1)
    spread = local_std(detail, 5)
    gain = np.divide(room, spread, out=np.ones_like(spread), where=spread > room)
    detail *= gain
    detail += base
    return detail
