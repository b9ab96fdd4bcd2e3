"""Sentinel-2 image degradation: MTF blur + decimation, cubic upsampling, noise.

Pure torch: every function takes images ``[B, C, H, W]`` and returns tensors on the input's
device and in its dtype (float32 or float64); per-band parameters are cast to match.

Grid convention (the same everywhere in s2sr): grids are *aligned by their edges*.  Coarse
pixel ``j`` of a grid ``f`` times coarser covers fine pixels ``f*j .. f*j+f-1`` and its centre
is the centre of that block, fine coordinate ``f*j + (f-1)/2`` (pixel ``i`` centred on ``i``).
No half-pixel shift, in either direction:

- ``mtf_downsample`` samples the blur kernel at the offsets between the fine pixel centres and
  the coarse centre (half-integers for even ``f``, hence an even-length kernel) and applies it
  as a strided convolution; the sampled Gaussian's width is calibrated so that the *discrete*
  kernel's response at the coarse Nyquist is exactly the requested MTF;
- ``cubic_upsample`` puts output pixel ``i`` at input coordinate ``(i + 0.5)/f - 0.5``, as
  GDAL's warper and ``F.interpolate(align_corners=False)`` do.
"""

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

#: Keys' cubic convolution parameter used by GDAL's "cubic" resampling (and openEO backends).
KEYS_A: float = -0.5
#: Half-width of the sampled Gaussian, in standard deviations (tail mass 6e-5; the width
#: calibration absorbs the truncation's effect on the Nyquist response).
_TRUNCATE_SIGMAS: float = 4.0

PerBand = Union[Sequence[float], torch.Tensor]


def gaussian_sigma(mtf: float, factor: int) -> float:
    """Gaussian standard deviation, in fine-grid pixels, whose MTF is ``mtf`` at the coarse Nyquist.

    A Gaussian of std ``s`` (fine pixels) has the response ``exp(-2 pi^2 s^2 nu^2)`` at ``nu``
    cycles per fine pixel; at the Nyquist of the ``factor`` times coarser grid,
    ``nu = 1 / (2 factor)``, solving for ``s`` gives ``factor * sqrt(-2 ln mtf) / pi``.
    """
    if not 0.0 < mtf < 1.0:
        raise ValueError(f"mtf must be in (0, 1), got {mtf}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    return factor * math.sqrt(-2.0 * math.log(mtf)) / math.pi


def matched_mtf(total: torch.Tensor, native: torch.Tensor, factor: int) -> torch.Tensor:
    """The blur's MTF at the coarse Nyquist that gives an image of MTF ``native`` (at its own
    Nyquist) the ``total`` MTF at the ``factor`` times coarser grid's Nyquist.

    The native image is blurred already: a Gaussian of response ``native`` at its Nyquist has
    ``native ** (1 / factor**2)`` at the coarse one, and Gaussian responses multiply, so the
    blur to add is ``total / native ** (1 / factor**2)``.  Without it a "total MTF" blur applied
    to a real image gives a blurrier one (0.22 instead of 0.30 at x2 for an S2 10 m band).

    Args:
        total, native: broadcastable tensors of MTFs in (0, 1).
        factor: decimation factor.

    Raises:
        ValueError: ``total`` not below what the native image has there (no blur can sharpen).
    """
    at_coarse = native ** (1.0 / factor**2)
    if bool((total >= at_coarse).any()):
        raise ValueError(f"total MTF {total.max().item():.3f} not below the native image's "
                         f"{at_coarse.min().item():.3f} at the coarse Nyquist (factor {factor})")
    return total / at_coarse


def _per_band(values: PerBand, batch: int, bands: int, like: torch.Tensor) -> torch.Tensor:
    """Per-band parameters ``[C]`` or ``[B, C]`` as a ``[B, C]`` tensor on ``like``'s device/dtype."""
    # Python floats go straight to like's dtype (no float32 round trip for float64 images).
    v = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if v.ndim == 1:
        v = v.expand(batch, -1)
    if v.shape != (batch, bands):
        raise ValueError(f"per-band values must be [{bands}] or [{batch}, {bands}], got {tuple(v.shape)}")
    return v


def _sampled_gaussian(sigma: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` Gaussians of std ``sigma [N]`` sampled at ``offsets [K]``, rows summing to 1."""
    k = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _calibrated_sigma(mtf: torch.Tensor, offsets: torch.Tensor, factor: int, iterations: int = 48) -> torch.Tensor:
    """Std (fine pixels) whose *sampled, normalised* kernel has response ``mtf`` at ``1/(2 factor)``.

    Sampling a Gaussian aliases its spectrum, so the discrete kernel built with
    ``gaussian_sigma`` misses the target when the blur is narrow (by 1 % for MTF 0.6 at
    factor 2; < 1e-4 for the S2 MTFs).  The response decreases with sigma: bisection, bracketed
    by a near-zero sigma (response at its ceiling) and 1.5 x the continuous one plus 1/2.
    """
    nu = 1.0 / (2 * factor)
    phase = torch.cos(2 * math.pi * nu * offsets)  # symmetric kernel: real response
    lo = torch.full_like(mtf, 1e-3)
    hi = 1.5 * torch.sqrt(-torch.log(mtf) / (2 * math.pi**2 * nu**2)) + 0.5
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_sharp = (_sampled_gaussian(mid, offsets) * phase).sum(1) > mtf
        lo, hi = torch.where(too_sharp, mid, lo), torch.where(too_sharp, hi, mid)
    return 0.5 * (lo + hi)


def gaussian_kernel1d(mtf: torch.Tensor, factor: int) -> torch.Tensor:
    """Normalised 1-D blur kernels for decimation by ``factor``, one per MTF value.

    Args:
        mtf: ``[N]`` MTF values at the coarse Nyquist, in (0, 1), floating dtype.
        factor: decimation factor.

    Returns:
        ``[N, K]`` kernels (each sums to 1, mtf's dtype) with ``K - factor`` even, sampled at
        the offsets ``k - (K-1)/2`` (fine pixels) from the coarse pixel's centre.  Each is a
        Gaussian whose std starts at ``gaussian_sigma`` and is calibrated so that the discrete
        kernel's DFT at ``1/(2 factor)`` equals ``mtf`` (to ~1e-7).  ``K`` is shared by all
        rows (set by the widest Gaussian, +-4 sigma) so one grouped convolution applies them.
    """
    if mtf.numel() == 0 or not bool(((mtf > 0) & (mtf < 1)).all()):
        raise ValueError("mtf values must be in (0, 1)")
    m = mtf.detach().to(torch.float64)  # calibration needs the precision
    sigma = factor * torch.sqrt(-2.0 * torch.log(m)) / math.pi
    # float(): the kernel length must be a Python int (one host sync per call).
    half = math.ceil(_TRUNCATE_SIGMAS * float(sigma.max()))
    length = factor + 2 * half  # same parity as factor: taps straddle the block centre
    offsets = torch.arange(length, device=m.device, dtype=torch.float64) - (length - 1) / 2.0
    # As sigma -> 0 the kernel tends to the tap(s) nearest the centre: 0 for odd factors
    # (response 1), +-1/2 for even ones (response cos(pi / (2 factor)), 0.707 at factor 2).
    ceiling = 1.0 if factor % 2 else math.cos(math.pi / (2 * factor))
    if bool((m >= ceiling - 1e-3).any()):
        raise ValueError(f"MTF values must be < {ceiling:.3f} for a sampled blur at factor {factor}")
    kernel = _sampled_gaussian(_calibrated_sigma(m, offsets, factor), offsets)
    return kernel.to(mtf.dtype)


def mtf_downsample(x: torch.Tensor, factor: int, mtf: PerBand) -> torch.Tensor:
    """Blur each band with its MTF-matched Gaussian, then decimate by ``factor``.

    Args:
        x: ``[B, C, H, W]`` image, any units (the kernel sums to 1: means are kept).
        factor: integer decimation factor (1 returns ``x`` unchanged).
        mtf: MTF at the *output* grid's Nyquist, per band ``[C]`` or per image and band
            ``[B, C]`` (e.g. from ``random_mtf``); below ``cos(pi / (2 factor))`` for even
            factors (0.707 at x2: half-integer taps cannot blur less).

    Returns:
        ``[B, C, H // factor, W // factor]``; output pixel ``j`` is centred on the centre of
        input block ``[factor*j, factor*j + factor - 1]`` (no half-pixel shift).  Borders use
        reflect padding, so ``H`` and ``W`` must exceed the kernel's half-width.
    """
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got {tuple(x.shape)}")
    if factor == 1:
        return x
    b, c, h, w = x.shape
    m = _per_band(mtf, b, c, x).reshape(-1)
    kernel = gaussian_kernel1d(m, factor)  # [B*C, K]
    pad = (kernel.shape[1] - factor) // 2  # centres the kernel on each block centre
    # Fold the batch into channels so per-image kernels are one grouped conv; separable.
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (pad, pad, 0, 0), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], stride=(1, factor), groups=b * c)
    y = F.pad(y, (0, 0, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], stride=(factor, 1), groups=b * c)
    return y.reshape(b, c, h // factor, w // factor)


def random_mtf(
    batch: int,
    bands: int,
    low: float = 0.3,
    high: float = 0.7,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """MTF values drawn uniformly in ``[low, high]`` independently per image and band: ``[B, C]``.

    Training on a range of blurs (rather than the nominal per-band MTF only) makes the
    network robust to the sensor's actual, imperfectly known MTF.
    """
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"need 0 < low <= high < 1, got {low}, {high}")
    u = torch.rand(batch, bands, generator=generator, device=device, dtype=dtype)
    return low + (high - low) * u


def _keys(s: torch.Tensor, a: float = KEYS_A) -> torch.Tensor:
    """Keys' cubic convolution kernel at distances ``s`` (input pixels)."""
    s = s.abs()
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return torch.where(s <= 1, near, torch.where(s < 2, far, torch.zeros_like(s)))


def _triangle(s: torch.Tensor) -> torch.Tensor:
    """Linear interpolation kernel at distances ``s`` (input pixels)."""
    return (1 - s.abs()).clamp(min=0)


def _phase_weights(factor: int, kernel: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``[factor, 5]`` weights of input taps ``m-2 .. m+2`` for output ``factor*m + r``."""
    r = torch.arange(factor, device=like.device, dtype=like.dtype)
    pos = (r + 0.5) / factor - 0.5  # output position relative to input pixel m, in (-0.5, 0.5)
    taps = torch.arange(-2, 3, device=like.device, dtype=like.dtype)
    return kernel(pos[:, None] - taps[None, :])


def _upsample_last(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Separable upsampling along the last axis of ``[1, N, H, W]`` -> ``[1, N, H, W*f]``."""
    f = weights.shape[0]
    n, h, w = x.shape[1:]
    y = F.pad(x, (2, 2, 0, 0), mode="replicate")
    # Group i makes f output channels, one per phase, ordered n*f + r; interleave them.
    y = F.conv2d(y, weights.repeat(n, 1)[:, None, None, :], groups=n)
    return y.reshape(1, n, f, h, w).permute(0, 1, 3, 4, 2).reshape(1, n, h, w * f)


def _upsample_separable(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[1, N, H, W]`` -> ``[1, N, H*f, W*f]`` with the same phase weights on both axes."""
    y = _upsample_last(x, weights)
    return _upsample_last(y.transpose(-1, -2), weights).transpose(-1, -2)


def _gdal_cubic_rows(n: int, factor: int, device: torch.device) -> torch.Tensor:
    """``[n*factor]`` bool: output positions whose 4 cubic taps all lie inside ``n`` input pixels.

    GDAL's warp kernel uses the 4x4 cubic neighbourhood ``floor(u)-1 .. floor(u)+2`` only when
    it is inside the source and falls back to bilinear (edge-clamped) otherwise.
    """
    i = torch.arange(n * factor, device=device, dtype=torch.float64)
    first = torch.floor((i + 0.5) / factor - 0.5) - 1
    return (first >= 0) & (first + 3 <= n - 1)


def cubic_upsample(x: torch.Tensor, factor: int, border: str = "gdal") -> torch.Tensor:
    """Upsample by an integer factor with Keys cubic convolution (a = -0.5), as GDAL's "cubic".

    This is the method that brings the 20 m bands onto the 10 m grid in the openEO process
    graph (``resample_cube_spatial(method="cubic")``, done by GDAL on the backends), so the
    training simulation uses it too.

    Args:
        x: ``[B, C, H, W]``.
        factor: integer upsampling factor.
        border: ``"gdal"`` (default) reproduces GDAL's warper exactly, which switches to
            bilinear interpolation (edge pixels replicated) on the output pixels whose 4x4
            cubic neighbourhood leaves the source (a ring of about ``1.5*factor`` pixels);
            ``"replicate"`` uses cubic everywhere with the edge pixels replicated outwards.
            Both agree away from the border.

    Returns:
        ``[B, C, H*factor, W*factor]``; output pixel ``i`` sits at input coordinate
        ``(i + 0.5)/factor - 0.5`` (edge-aligned grids).  Unlike
        ``F.interpolate(mode="bicubic")`` (a = -0.75) it matches GDAL.
    """
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got {tuple(x.shape)}")
    if border not in ("gdal", "replicate"):
        raise ValueError(f"border must be 'gdal' or 'replicate', got {border!r}")
    if factor == 1:
        return x
    b, c, h, w = x.shape
    flat = x.reshape(1, b * c, h, w)
    y = _upsample_separable(flat, _phase_weights(factor, _keys, x))
    if border == "gdal":
        linear = _upsample_separable(flat, _phase_weights(factor, _triangle, x))
        inside = _gdal_cubic_rows(h, factor, x.device)[:, None] & _gdal_cubic_rows(w, factor, x.device)[None, :]
        y = torch.where(inside, y, linear)
    return y.reshape(b, c, h * factor, w * factor)


def add_noise(x: torch.Tensor, sigma: PerBand, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Add zero-mean Gaussian noise of std ``sigma`` per band (``[C]`` or ``[B, C]``, x's units).

    ``generator`` must live on ``x``'s device.  Returns a new tensor of ``x``'s shape.
    """
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got {tuple(x.shape)}")
    s = _per_band(sigma, x.shape[0], x.shape[1], x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * s[:, :, None, None]
