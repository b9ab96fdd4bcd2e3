"""Tests of s2sr.training.metrics: PSNR, SSIM, SAM, radiometric consistency, FFT gain."""

import numpy as np
import pytest
from scipy import ndimage

from s2sr.training.metrics import (
    fft_gain,
    finite_mean,
    peak_from_reference,
    psnr_per_band,
    radial_energy,
    radiometric_consistency,
    sam,
    sam_map,
    ssim_map,
    ssim_per_band,
)


def textured(shape=(3, 64, 64), seed=0) -> np.ndarray:
    """A seeded reflectance-like cube: lightly smoothed noise around 0.2, [C, H, W]."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, 1.0, 1.0))
    return 0.2 + 0.05 * noise / noise.std()


# --------------------------------------------------------------------------- PSNR


def test_psnr_identical_is_inf():
    img = textured()
    assert np.all(np.isinf(psnr_per_band(img, img)))
    assert np.isnan(finite_mean(psnr_per_band(img, img)))  # no finite value to average


def test_finite_mean_skips_inf_and_nan():
    assert finite_mean(np.array([30.0, np.inf, 40.0, np.nan])) == 35.0
    assert finite_mean(np.array([30.0, 40.0, np.inf]), weights=np.array([1.0, 3.0, 5.0])) == 37.5


def test_psnr_known_values():
    ref = np.zeros((2, 8, 8))
    pred = ref.copy()
    pred[0] += 0.1  # MSE 1e-2 -> 20 dB with peak 1
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    np.testing.assert_allclose(psnr_per_band(pred, ref), [20.0, 40.0], atol=1e-10)
    # per-band peaks: 20 log10(0.5 / 0.1) and 20 log10(0.05 / 0.01)
    np.testing.assert_allclose(psnr_per_band(pred, ref, data_range=np.array([0.5, 0.05])),
                               [20 * np.log10(5.0), 20 * np.log10(5.0)], atol=1e-10)


def test_psnr_errors_and_peak_helper():
    ref = textured()
    np.testing.assert_allclose(peak_from_reference(ref), ref.reshape(3, -1).max(axis=1))
    with pytest.raises(ValueError):
        psnr_per_band(ref, ref[:, :10])
    with pytest.raises(ValueError):
        psnr_per_band(ref, ref, data_range=0.0)


# --------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    img = textured()
    np.testing.assert_allclose(ssim_per_band(img, img), 1.0, atol=1e-12)
    assert ssim_map(img, img).shape == (3, 64 - 10, 64 - 10)  # window-valid interior only


def test_ssim_decreases_with_noise():
    ref = textured()
    rng = np.random.default_rng(1)
    unit_noise = rng.normal(size=ref.shape)
    scores = [ssim_per_band(ref + s * unit_noise, ref) for s in (0.002, 0.01, 0.03, 0.1)]
    for higher, lower in zip(scores, scores[1:]):
        assert np.all(lower < higher)
    assert np.all(scores[0] < 1.0) and np.all(scores[-1] < 0.5)


def test_ssim_known_value_constant_images():
    # constant images: only the luminance term, (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2
    a, b = 0.2, 0.4
    pred, ref = np.full((1, 16, 16), a), np.full((1, 16, 16), b)
    expected = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    np.testing.assert_allclose(ssim_per_band(pred, ref), [expected], rtol=1e-12)


def test_ssim_is_per_band():
    ref = textured()
    pred = ref.copy()
    pred[1] += np.random.default_rng(2).normal(0, 0.05, ref.shape[1:])
    scores = ssim_per_band(pred, ref)
    np.testing.assert_allclose(scores[[0, 2]], 1.0, atol=1e-12)
    assert scores[1] < 0.9


# --------------------------------------------------------------------------- SAM


def test_sam_scale_invariant():
    ref = textured(shape=(10, 16, 16))
    scale = np.random.default_rng(3).uniform(0.2, 5.0, size=(1, 16, 16))
    assert np.nanmax(sam_map(ref * scale, ref)) < 1e-6
    assert sam(ref * scale, ref) < 1e-6


def test_sam_orthogonal_and_45_degrees():
    ref = np.zeros((4, 5, 5))
    ref[0] = 0.3
    ortho = np.zeros_like(ref)
    ortho[2] = 0.1
    np.testing.assert_allclose(sam_map(ortho, ref), 90.0, atol=1e-10)
    diag = ref.copy()
    diag[1] = 0.3
    np.testing.assert_allclose(sam(diag, ref), 45.0, atol=1e-10)


def test_sam_skips_zero_spectra():
    ref = np.ones((3, 2, 2))
    pred = ref.copy()
    pred[:, 0, 0] = 0.0  # no direction: left out of the mean
    pred[:, 1, 1] = [1.0, 0.0, 0.0]  # angle with (1,1,1): arccos(1/sqrt 3)
    angles = sam_map(pred, ref)
    assert np.isnan(angles[0, 0])
    expected = np.degrees(np.arccos(1 / np.sqrt(3)))
    np.testing.assert_allclose(sam(pred, ref), expected / 3, atol=1e-10)


# --------------------------------------------------------------------------- radiometry


def block_mean(x: np.ndarray, f: int = 2) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // f, f, w // f, f).mean(axis=(2, 4))


def test_radiometric_consistency():
    low = textured(shape=(2, 16, 16))
    sr = np.repeat(np.repeat(low, 2, axis=1), 2, axis=2)  # re-degrades exactly to low
    rep = radiometric_consistency(sr, low, block_mean)
    np.testing.assert_allclose(rep.mae, 0.0, atol=1e-15)
    np.testing.assert_allclose(rep.bias, 0.0, atol=1e-15)
    sr2 = sr.copy()
    sr2[0] += 0.01
    sr2[1, ::2] -= 0.02  # every other fine row: mean -0.01, |.| mean 0.01 after averaging
    rep = radiometric_consistency(sr2, low, block_mean)
    np.testing.assert_allclose(rep.bias, [0.01, -0.01], atol=1e-12)
    np.testing.assert_allclose(rep.mae, [0.01, 0.01], atol=1e-12)
    with pytest.raises(ValueError):
        radiometric_consistency(sr, low[:, :8], block_mean)


# --------------------------------------------------------------------------- FFT gain


def test_fft_gain_identical_is_one():
    img = textured()
    gain = fft_gain(img, img)
    np.testing.assert_allclose(gain.ratio, 1.0, rtol=1e-12)
    np.testing.assert_allclose(gain.high_ratio, 1.0, rtol=1e-12)
    assert gain.bins.shape == (16,) and gain.ratio.shape == (3, 16)
    assert gain.bins[0] > 0 and gain.bins[-1] < 0.5


def test_fft_gain_sharpened_vs_blurred():
    img = textured(shape=(2, 96, 96), seed=4)
    blurred = ndimage.gaussian_filter(img, sigma=(0, 1.2, 1.2))
    sharpened = blurred + 1.5 * (blurred - ndimage.gaussian_filter(blurred, sigma=(0, 1.0, 1.0)))
    gain = fft_gain(sharpened, blurred)
    assert np.all(gain.high_ratio > 1.5)
    high = gain.bins > 0.25
    assert np.all(gain.ratio[:, high] > 1.0)
    assert np.all(fft_gain(blurred, img).high_ratio < 0.5)  # and blurring loses energy


def test_radial_energy_puts_a_sinusoid_in_its_bin():
    x = np.arange(64)
    img = np.broadcast_to(np.cos(2 * np.pi * (20 / 64) * x), (1, 64, 64))  # 0.3125 cycles per pixel
    bins, energy = radial_energy(img, n_bins=16, window=False)
    assert np.argmax(energy[0]) == 10  # bin [0.3125, 0.34375)
    np.testing.assert_allclose(energy[0].sum(), energy[0, 10], rtol=1e-12)
    np.testing.assert_allclose(energy[0, 10], 2 * (64 * 64 / 2) ** 2, rtol=1e-9)  # two peaks of N/2 amplitude


def test_x4_consistency_rebuilds_the_wald_input():
    """The x4 report's re-degradation (evaluate._degrade) makes the Wald pair's input from its
    target: exactly for the 20 m bands (x4 to 80 m, cubic x2, as wald_pair made it), closely for
    the 10 m bands (x2 of the x2-degraded target against x4 of the native: within a quarter of the
    input's contrast even on white noise)."""
    import torch

    from s2sr.training.data.wald import wald_pair
    from s2sr.training.evaluate import _degrade

    g = torch.Generator().manual_seed(0)
    b10 = 1000 + 500 * torch.rand(4, 64, 64, generator=g, dtype=torch.float64)
    b20 = 1000 + 500 * torch.rand(6, 32, 32, generator=g, dtype=torch.float64)
    inp, tgt = wald_pair(b10, b20)
    redone = _degrade(2)(tgt.numpy())
    np.testing.assert_allclose(redone[4:], inp[4:].numpy(), atol=1e-9)
    assert np.abs(redone[:4] - inp[:4].numpy()).mean() < 0.25 * np.abs(inp[:4].numpy() - inp[:4].numpy().mean()).mean()
