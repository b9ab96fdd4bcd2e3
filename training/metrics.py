"""Evaluation metrics for super-resolved Sentinel-2 images (numpy).

Images are ``[C, H, W]`` float arrays in reflectance (DN / 10000), bands along the first axis in
any order (s2sr uses :data:`s2sr.training.bands.BANDS`).  Every metric is computed in float64
and reported per band unless stated otherwise.

Data range of PSNR and SSIM: by default a fixed reflectance peak of 1.0 (``data_range=1.0``), so
that values compare across scenes, bands and checkpoints (a per-band maximum of the reference
would change with the scene: a snowy tile would look worse than a forest at equal error).  Pass
``data_range=peak_from_reference(ref)`` for the per-band maximum of the reference instead, or
any scalar / ``[C]`` array.  With a peak of 1.0, typical land reflectances (0.02-0.4) give
higher PSNR than the 8-bit convention would; compare like with like.

Contents:

- :func:`psnr_per_band`, :func:`ssim_per_band` (Wang et al. 2004: Gaussian window 11, sigma 1.5,
  K1 = 0.01, K2 = 0.03, population statistics, mean over the window-valid interior);
- :func:`sam_map` / :func:`sam` (spectral angle in degrees, per pixel, then the mean);
- :func:`radiometric_consistency` (re-degrade the SR with a caller's function, compare with the
  low-resolution input: per-band MAE and bias in reflectance);
- :func:`radial_energy` / :func:`fft_gain` (radial FFT energy per band and the SR / reference
  energy ratio per radial frequency bin, plus its upper-half-band summary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
from scipy import ndimage

ArrayLike = Union[float, np.ndarray]

#: Default PSNR / SSIM peak: reflectance 1.0 (see the module docstring).
DEFAULT_DATA_RANGE = 1.0
#: SSIM constants of Wang et al. (2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_cube(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a float64 ``[C, H, W]`` array (a ``[H, W]`` image becomes one band)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected [C, H, W], got shape {arr.shape}")
    return arr


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _as_cube(pred, "pred"), _as_cube(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs ref {ref.shape}")
    return pred, ref


def _per_band(value: ArrayLike, n_bands: int) -> np.ndarray:
    """A scalar or ``[C]`` value as a ``[C]`` float64 array."""
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n_bands,))
    if np.any(arr <= 0):
        raise ValueError("data_range must be positive")
    return arr


def peak_from_reference(ref: np.ndarray) -> np.ndarray:
    """Per-band maximum of the reference, ``[C]`` (an alternative ``data_range``)."""
    cube = _as_cube(ref, "ref")
    return np.nanmax(cube.reshape(cube.shape[0], -1), axis=1)


# --------------------------------------------------------------------------- PSNR, SSIM


def psnr_per_band(pred: np.ndarray, ref: np.ndarray, data_range: ArrayLike = DEFAULT_DATA_RANGE) -> np.ndarray:
    """PSNR per band in dB, ``10 log10(peak^2 / MSE)``, ``[C]``; ``inf`` where the band is identical.

    ``data_range`` (the peak) is a reflectance scalar or a ``[C]`` array (see the module notes).
    """
    pred, ref = _pair(pred, ref)
    peak = _per_band(data_range, pred.shape[0])
    mse = np.mean((pred - ref) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(peak**2 / mse)


def _gaussian_mean(x: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """Gaussian-weighted local mean of each band (no mixing across bands), ``[C, H, W]``."""
    return ndimage.gaussian_filter(x, sigma=(0.0, sigma, sigma), truncate=truncate, mode="reflect")


def ssim_map(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: ArrayLike = DEFAULT_DATA_RANGE,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> np.ndarray:
    """Local SSIM of each band, ``[C, H - win + 1, W - win + 1]`` (the window-valid interior).

    Gaussian window of ``win_size`` taps with standard deviation ``sigma``; C1 = (K1 L)^2,
    C2 = (K2 L)^2 with L the band's ``data_range``.  The border where the window would leave the
    image is cropped, so padding never enters the score.
    """
    pred, ref = _pair(pred, ref)
    if win_size % 2 != 1 or min(pred.shape[1:]) < win_size:
        raise ValueError(f"win_size must be odd and <= the image sides, got {win_size} for {pred.shape}")
    peak = _per_band(data_range, pred.shape[0])[:, None, None]
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    truncate = (win_size // 2) / sigma  # exactly win_size taps
    mu_x, mu_y = _gaussian_mean(pred, sigma, truncate), _gaussian_mean(ref, sigma, truncate)
    var_x = _gaussian_mean(pred * pred, sigma, truncate) - mu_x**2
    var_y = _gaussian_mean(ref * ref, sigma, truncate) - mu_y**2
    cov = _gaussian_mean(pred * ref, sigma, truncate) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    r = win_size // 2
    return (num / den)[:, r:-r, r:-r]


def ssim_per_band(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: ArrayLike = DEFAULT_DATA_RANGE,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> np.ndarray:
    """Mean SSIM per band, ``[C]`` (1 for identical bands); see :func:`ssim_map`."""
    return ssim_map(pred, ref, data_range, win_size, sigma, k1, k2).mean(axis=(1, 2))


# --------------------------------------------------------------------------- SAM


def sam_map(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Spectral angle between the pixel spectra of ``pred`` and ``ref``, degrees, ``[H, W]``.

    Scale-invariant (a spectrum times a positive factor has angle 0).  Computed as
    ``2 atan2(|a/|a| - b/|b||, |a/|a| + b/|b||)``, exact near 0 where ``arccos`` of the cosine
    loses precision.  NaN where either spectrum is all zeros (no direction).
    """
    pred, ref = _pair(pred, ref)
    norm_p = np.linalg.norm(pred, axis=0)
    norm_r = np.linalg.norm(ref, axis=0)
    valid = (norm_p > 0) & (norm_r > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_p, unit_r = pred / norm_p, ref / norm_r
        angle = 2.0 * np.arctan2(np.linalg.norm(unit_p - unit_r, axis=0), np.linalg.norm(unit_p + unit_r, axis=0))
    return np.where(valid, np.degrees(angle), np.nan)


def sam(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean spectral angle over the pixels, degrees (pixels without a direction are skipped)."""
    angles = sam_map(pred, ref)
    return float(np.nanmean(angles)) if np.any(np.isfinite(angles)) else float("nan")


# --------------------------------------------------------------------------- radiometry


@dataclass(frozen=True)
class RadiometricReport:
    """Agreement of the re-degraded SR with the low-resolution input, per band, reflectance."""

    mae: np.ndarray  # [C] mean |degrade(sr) - lowres|
    bias: np.ndarray  # [C] mean (degrade(sr) - lowres): > 0 means the SR is too bright


def radiometric_consistency(
    sr: np.ndarray, lowres: np.ndarray, degrade: Callable[[np.ndarray], np.ndarray]
) -> RadiometricReport:
    """Re-degrade ``sr [C, h, w]`` with ``degrade(sr) -> [C, H, W]`` and compare with ``lowres [C, H, W]``.

    ``degrade`` is the caller's model of the sensor (e.g. MTF blur then decimation by the SR
    factor); a faithful SR reproduces its input once degraded.  Pixels that are NaN in either
    image are ignored.
    """
    low = _as_cube(lowres, "lowres")
    redegraded = _as_cube(np.asarray(degrade(_as_cube(sr, "sr"))), "degrade(sr)")
    if redegraded.shape != low.shape:
        raise ValueError(f"degrade(sr) has shape {redegraded.shape}, lowres {low.shape}")
    diff = redegraded - low
    return RadiometricReport(mae=np.nanmean(np.abs(diff), axis=(1, 2)), bias=np.nanmean(diff, axis=(1, 2)))


# --------------------------------------------------------------------------- frequency content


@dataclass(frozen=True)
class FFTGain:
    """SR / reference radial FFT energy ratio, per band."""

    bins: np.ndarray  # [n_bins] bin centres, cycles per pixel (0 to 0.5)
    ratio: np.ndarray  # [C, n_bins] energy(sr) / energy(reference) in each bin
    high_ratio: np.ndarray  # [C] the same over the upper half of the frequencies (0.25-0.5 c/px)


def _radius(h: int, w: int) -> np.ndarray:
    """Radial frequency of each FFT sample, cycles per pixel, ``[H, W]``."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2)


def _power_spectrum(img: np.ndarray, window: bool) -> np.ndarray:
    """``|FFT|^2`` of each band after removing its mean and (optionally) a 2-D Hann taper, ``[C, H, W]``.

    The taper stops the image edges, which the FFT sees as jumps, from adding a cross of false
    high frequencies that would hide the differences in texture.
    """
    x = img - img.mean(axis=(1, 2), keepdims=True)
    if window:
        x = x * np.outer(np.hanning(x.shape[1]), np.hanning(x.shape[2]))[None]
    return np.abs(np.fft.fft2(x)) ** 2


def radial_energy(img: np.ndarray, n_bins: int = 16, window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Spectral energy per radial frequency bin: ``(bin centres [n_bins], energy [C, n_bins])``.

    Bins split 0-0.5 cycles per pixel evenly; the DC term and the corners beyond 0.5 c/px (not
    sampled in every direction) are left out.
    """
    cube = _as_cube(img, "img")
    power = _power_spectrum(cube, window)
    radius = _radius(*cube.shape[1:])
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    index = np.digitize(radius, edges[1:-1])  # 0 .. n_bins-1 for radius <= 0.5
    keep = (radius > 0) & (radius <= 0.5)
    energy = np.stack([np.bincount(index[keep], weights=p[keep], minlength=n_bins) for p in power])
    return 0.5 * (edges[:-1] + edges[1:]), energy


def fft_gain(
    sr: np.ndarray, reference: np.ndarray, n_bins: int = 16, window: bool = True, high_from: float = 0.25
) -> FFTGain:
    """Radial FFT energy ratio of ``sr`` over ``reference`` (e.g. the bicubic product), same grid.

    ``ratio > 1`` in a bin: the SR has more detail (or noise) at those frequencies.  The summary
    ``high_ratio`` is the ratio of the energies summed over ``high_from``-0.5 cycles per pixel.
    """
    sr, reference = _pair(sr, reference)
    bins, e_sr = radial_energy(sr, n_bins, window)
    _, e_ref = radial_energy(reference, n_bins, window)
    high = bins - 0.25 / n_bins >= high_from - 1e-12  # bins whose lower edge is at or above high_from
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = e_sr / e_ref
        high_ratio = e_sr[:, high].sum(axis=1) / e_ref[:, high].sum(axis=1)
    return FFTGain(bins=bins, ratio=ratio, high_ratio=high_ratio)


def finite_mean(values: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """Mean of per-band values ignoring NaNs and infs, optionally weighted (``nan`` if none is finite)."""
    vals = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(vals)
    if not ok.any():
        return float("nan")
    w = np.ones_like(vals) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.sum(vals[ok] * w[ok]) / np.sum(w[ok]))
