"""BRISQUE no-reference image quality (Mittal, Moorthy, Bovik, IEEE TIP 2012), fully offline.

Used to pick checkpoints of the GAN fine-tuning, as CESBIO did: lower is better (about 0 for
pristine natural images, up to about 100 for heavily distorted ones; slightly negative values
happen on very clean content and are not clamped).

What is here:

- the 36 BRISQUE features, written in numpy/scipy after the paper, with the conventions of the
  LIVE C++ release that produced the shipped model's training features: grey levels in [0, 1]
  with the MSCN constant C = 1/255 (identical to C = 1 on 0-255), a 7x7 Gaussian window with
  sigma 1.166 (the release's rounding of 7/6) and reflect-101 borders, an asymmetric generalised
  Gaussian (AGGD) fit for the MSCN field too (shape and (sigma_l^2 + sigma_r^2) / 2), paired
  products with the four shifts H, V, D1, D2 and zeros past the border, shape parameters picked on
  the grid 0.2:0.001:10 by moment matching, and the second scale made by OpenCV-style bicubic
  resizing (a = -0.75, no antialiasing) to half size;
- the LIVE-trained epsilon-SVR (RBF kernel, 770 support vectors) and its feature ranges, read
  from ``brisque_data/`` (see ``brisque_data/NOTICE.md`` for provenance and licences) and
  evaluated in numpy; no libsvm, no download;
- a fixed, documented mapping of reflectance bands to the 0-255 grey range BRISQUE expects
  (:class:`BandStretch`), so that an SR product and its bicubic baseline are stretched
  identically.

Degenerate inputs (a flat image, NaNs) give ``nan`` rather than an exception: a checkpoint loop
can skip them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage, special

DATA_DIR = Path(__file__).resolve().parent / "brisque_data"
MODEL_FILE = DATA_DIR / "brisque_live_svr.txt"
RANGE_FILE = DATA_DIR / "brisque_live_range.json"

#: Gaussian window of the local mean / deviation: 7x7, sigma as in the LIVE C++ release.
WINDOW_RADIUS = 3
WINDOW_SIGMA = 1.166
#: MSCN stabilising constant for grey levels in [0, 1] (the paper's C = 1 on 0-255).
MSCN_C = 1.0 / 255.0
#: (row, column) offsets of the paired products: horizontal, vertical, main and secondary diagonal.
SHIFTS: Tuple[Tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (-1, 1))
#: Number of features: 18 per scale, two scales.
N_FEATURES = 36
#: Smallest accepted image side (the half-scale image still needs a few 7x7 windows).
MIN_SIDE = 16

# Candidate AGGD shapes 0.2, 0.201, ... < 10, accumulated in single precision as the C++
# release's `for (float gam = 0.2; gam < 10; gam += 0.001)` does: its drift is visible in the
# shipped feature ranges (0.336999, 9.999411), so the model was trained on these values.
_SHAPES = np.cumsum(np.r_[np.float32(0.2), np.full(9800, 0.001, np.float32)], dtype=np.float32)
_SHAPES = _SHAPES[_SHAPES < 10].astype(np.float64)
# Their moment ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), increasing with a.
_SHAPE_RATIOS = np.exp(
    2.0 * special.gammaln(2.0 / _SHAPES) - special.gammaln(1.0 / _SHAPES) - special.gammaln(3.0 / _SHAPES)
)


# --------------------------------------------------------------------------- features


def _gaussian_taps(radius: int = WINDOW_RADIUS, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps, shape ``[2 radius + 1]``."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-(x**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _local_mean(image: np.ndarray) -> np.ndarray:
    """Separable Gaussian-weighted mean, reflect-101 borders (scipy 'mirror', OpenCV's default)."""
    taps = _gaussian_taps()
    out = ndimage.correlate1d(image, taps, axis=0, mode="mirror")
    return ndimage.correlate1d(out, taps, axis=1, mode="mirror")


def mscn(image01: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a grey image in [0, 1], shape ``[H, W]``."""
    mu = _local_mean(image01)
    # abs as MATLAB and OpenCV's pow(., 0.5) do: the difference is only negative by rounding.
    sigma = np.sqrt(np.abs(_local_mean(image01 * image01) - mu * mu))
    return (image01 - mu) / (sigma + MSCN_C)


def paired_product(coeffs: np.ndarray, shift: Tuple[int, int]) -> np.ndarray:
    """``coeffs * coeffs shifted by (dy, dx)``, zero where the neighbour falls outside; ``[H, W]``."""
    dy, dx = shift
    h, w = coeffs.shape
    neighbour = np.zeros_like(coeffs)
    # neighbour[i, j] = coeffs[i + dy, j + dx] where that index exists
    neighbour[max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)] = coeffs[
        max(0, dy): h + min(0, dy), max(0, dx): w + min(0, dx)
    ]
    return coeffs * neighbour


def aggd_fit(values: np.ndarray) -> Tuple[float, float, float]:
    """Moment-matching AGGD fit: ``(shape, sigma_left, sigma_right)``.

    The side deviations use the strictly negative / strictly positive values; exact zeros (the
    border of a paired product) still count in the absolute and squared means, as in the
    release.  Returns NaNs when a side is empty (flat image).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    neg, pos = x[x < 0], x[x > 0]
    if neg.size == 0 or pos.size == 0:
        return float("nan"), float("nan"), float("nan")
    sigma_l = float(np.sqrt(np.mean(neg * neg)))
    sigma_r = float(np.sqrt(np.mean(pos * pos)))
    g = sigma_l / sigma_r
    r_hat = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x * x))
    r_norm = r_hat * (g**3 + 1.0) * (g + 1.0) / (g**2 + 1.0) ** 2
    shape = float(_SHAPES[np.argmin(np.abs(_SHAPE_RATIOS - r_norm))])
    return shape, sigma_l, sigma_r


def _aggd_mean(shape: float, sigma_l: float, sigma_r: float) -> float:
    """Mean of the fitted AGGD (the paper's eta)."""
    lg1, lg2, lg3 = special.gammaln([1.0 / shape, 2.0 / shape, 3.0 / shape])
    return (sigma_r - sigma_l) * float(np.exp(lg2 - lg1 + 0.5 * (lg1 - lg3)))


def _scale_features(image01: np.ndarray) -> List[float]:
    """The 18 features of one scale: MSCN (shape, variance), then 4 x (shape, mean, sl^2, sr^2)."""
    coeffs = mscn(image01)
    shape, sl, sr = aggd_fit(coeffs)
    feats = [shape, (sl * sl + sr * sr) / 2.0]
    for shift in SHIFTS:
        shape, sl, sr = aggd_fit(paired_product(coeffs, shift))
        feats += [shape, _aggd_mean(shape, sl, sr), sl * sl, sr * sr]
    return feats


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic weights of taps at offsets -1, 0, 1, 2 for fractional positions ``t``: ``[n, 4]``."""
    d = np.stack([1.0 + t, t, 1.0 - t, 2.0 - t], axis=-1)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return np.where(d <= 1.0, near, far)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix of OpenCV's INTER_CUBIC resampling along one axis (edge taps clamped)."""
    scale = n_in / n_out
    src = (np.arange(n_out) + 0.5) * scale - 0.5  # pixel-centre alignment, as OpenCV
    i0 = np.floor(src).astype(int)
    weights = _cubic_weights(src - i0)
    mat = np.zeros((n_out, n_in))
    rows = np.repeat(np.arange(n_out), 4)
    cols = np.clip(i0[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1).ravel()
    np.add.at(mat, (rows, cols), weights.ravel())
    return mat


def half_size(image: np.ndarray) -> np.ndarray:
    """Bicubic (a = -0.75, no antialiasing) resize to ``[H // 2, W // 2]``, as the release's scale 2."""
    h, w = image.shape
    return _resize_matrix(h, h // 2) @ image @ _resize_matrix(w, w // 2).T


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of a grey image in the 0-255 range, ``[H, W]`` -> ``[36]`` float64."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a [H, W] grey image, got shape {img.shape}")
    if min(img.shape) < MIN_SIDE:
        raise ValueError(f"image too small for BRISQUE: {img.shape}, need sides >= {MIN_SIDE}")
    img01 = img / 255.0
    return np.asarray(_scale_features(img01) + _scale_features(half_size(img01)), dtype=np.float64)


# --------------------------------------------------------------------------- the SVR


@dataclass(frozen=True)
class SVRModel:
    """An RBF epsilon-SVR: ``f(x) = sum_i coef_i exp(-gamma |x - sv_i|^2) - rho``."""

    support_vectors: np.ndarray  # [n_sv, n_features]
    coef: np.ndarray  # [n_sv]
    gamma: float
    rho: float
    feature_min: np.ndarray  # [n_features], scaling range of each raw feature
    feature_max: np.ndarray

    def scale(self, features: np.ndarray) -> np.ndarray:
        """Raw features -> the SVR's [-1, 1] input space (libsvm svm-scale), ``[36]``."""
        lo, hi = self.feature_min, self.feature_max
        return -1.0 + 2.0 * (np.asarray(features, dtype=np.float64) - lo) / (hi - lo)

    def predict(self, features: np.ndarray) -> float:
        """Quality score of one raw feature vector ``[36]``."""
        x = self.scale(features)
        d2 = np.sum((self.support_vectors - x[None, :]) ** 2, axis=1)
        return float(self.coef @ np.exp(-self.gamma * d2) - self.rho)


def _parse_libsvm_model(text: str, n_features: int) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """Support vectors, coefficients, gamma and rho of a libsvm text model (RBF epsilon-SVR only)."""
    lines = text.splitlines()
    header = {}
    start = lines.index("SV") + 1
    for line in lines[: start - 1]:
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"unsupported libsvm model: {header}")
    rows = [line.split() for line in lines[start:] if line.strip()]
    sv = np.zeros((len(rows), n_features))  # sparse format: absent indices are zeros
    coef = np.empty(len(rows))
    for r, tokens in enumerate(rows):
        coef[r] = float(tokens[0])
        for token in tokens[1:]:
            index, _, value = token.partition(":")
            sv[r, int(index) - 1] = float(value)
    if len(rows) != int(header["total_sv"]):
        raise ValueError("libsvm model: support vector count differs from total_sv")
    return sv, coef, float(header["gamma"]), float(header["rho"])


@lru_cache(maxsize=None)
def load_model(model_file: str = str(MODEL_FILE), range_file: str = str(RANGE_FILE)) -> SVRModel:
    """The shipped LIVE BRISQUE SVR with its feature ranges (cached)."""
    sv, coef, gamma, rho = _parse_libsvm_model(Path(model_file).read_text(), N_FEATURES)
    ranges = json.loads(Path(range_file).read_text())
    return SVRModel(sv, coef, gamma, rho, np.asarray(ranges["min"], float), np.asarray(ranges["max"], float))


def brisque_from_features(features: np.ndarray) -> float:
    """BRISQUE score of a raw 36-feature vector (``nan`` if any feature is)."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape != (N_FEATURES,):
        raise ValueError(f"expected {N_FEATURES} features, got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        return float("nan")
    return load_model().predict(features)


def brisque(image: np.ndarray) -> float:
    """BRISQUE score of a grey image ``[H, W]`` in the 0-255 range; lower is better.

    ``nan`` for images with NaNs or without texture.  Sides must be >= ``MIN_SIDE``.
    """
    img = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(img)):
        return float("nan")
    return brisque_from_features(brisque_features(img))


# --------------------------------------------------------------------------- reflectance bands


@dataclass(frozen=True)
class BandStretch:
    """A fixed per-band linear map of reflectance to 0-255 grey: ``255 (x - low) / (high - low)``, clipped.

    Compute it once on a reference (e.g. the low-resolution input or the bicubic product) with
    :meth:`from_reference`, then apply the same one to every candidate (SR checkpoints, bicubic),
    so that differences in score come from the images, not from their stretch.  Values are kept
    as floats (no 8-bit rounding, which would add quantisation texture to smooth areas).
    """

    low: np.ndarray  # [C] reflectance mapped to 0
    high: np.ndarray  # [C] reflectance mapped to 255

    @classmethod
    def from_reference(cls, reference: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> "BandStretch":
        """Per-band ``low_pct`` / ``high_pct`` percentiles of ``reference [C, H, W]`` (NaNs ignored)."""
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 3:
            raise ValueError(f"expected [C, H, W], got shape {ref.shape}")
        flat = ref.reshape(ref.shape[0], -1)
        low = np.nanpercentile(flat, low_pct, axis=1)
        high = np.nanpercentile(flat, high_pct, axis=1)
        high = np.where(high > low, high, low + 1e-6)  # a flat band still maps without dividing by 0
        return cls(low, high)

    def band(self, index: int, band: np.ndarray) -> np.ndarray:
        """Band ``index`` (``[H, W]`` reflectance) in 0-255 grey, float64."""
        return to_grey255(band, float(self.low[index]), float(self.high[index]))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """All bands, ``[C, H, W]`` reflectance -> ``[C, H, W]`` 0-255 grey."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != len(self.low):
            raise ValueError(f"expected [{len(self.low)}, H, W], got shape {image.shape}")
        return np.stack([self.band(c, image[c]) for c in range(image.shape[0])])


def to_grey255(band: np.ndarray, low: float, high: float) -> np.ndarray:
    """``clip(255 (band - low) / (high - low), 0, 255)`` as float64, ``[H, W]``; NaNs stay NaN."""
    return np.clip(255.0 * (np.asarray(band, dtype=np.float64) - low) / (high - low), 0.0, 255.0)


def brisque_bands(image: np.ndarray, stretch: BandStretch) -> List[float]:
    """BRISQUE of each band of ``image [C, H, W]`` (reflectance) after ``stretch``; one float per band."""
    grey = stretch(image)
    return [brisque(grey[c]) for c in range(grey.shape[0])]


def mean_brisque(scores: Sequence[float]) -> float:
    """Mean of per-band scores ignoring NaNs (``nan`` if all are)."""
    arr = np.asarray(scores, dtype=np.float64)
    return float(np.nanmean(arr)) if np.any(np.isfinite(arr)) else float("nan")
