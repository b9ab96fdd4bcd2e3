"""Degradation ops: MTF response, decimation phase, mean, noise, dtypes, cubic vs GDAL."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2sr.training.degradation import (
    add_noise, cubic_upsample, gaussian_kernel1d, gaussian_sigma, mtf_downsample, random_mtf,
)

FACTORS = (2, 3, 4)
MTFS = (0.19, 0.304, 0.343, 0.6, 0.7)  # S2's range and random_mtf's (narrow blurs alias)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _block_centres(n: int, f: int) -> torch.Tensor:
    """Fine coordinates of the centres of the ``n`` coarse pixels (pixel i centred on i)."""
    return f * torch.arange(n, dtype=torch.float64) + (f - 1) / 2


def test_gaussian_sigma_matches_the_gaussian_response():
    for f in FACTORS:
        for m in MTFS:
            s = gaussian_sigma(m, f)
            nu = 1 / (2 * f)  # coarse Nyquist, cycles per fine pixel
            assert math.exp(-2 * math.pi**2 * s**2 * nu**2) == pytest.approx(m, rel=1e-12)
    assert gaussian_sigma(0.304, 2) == pytest.approx(2 * math.sqrt(-2 * math.log(0.304)) / math.pi)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            gaussian_sigma(bad, 2)


@pytest.mark.parametrize("f", FACTORS)
def test_kernel_dft_at_coarse_nyquist_is_the_mtf(f):
    mtf = torch.tensor(MTFS, dtype=torch.float64)
    k = gaussian_kernel1d(mtf, f)
    assert (k.shape[1] - f) % 2 == 0  # taps straddle the block centre symmetrically
    offsets = torch.arange(k.shape[1], dtype=torch.float64) - (k.shape[1] - 1) / 2
    response = (k * torch.exp(-2j * math.pi * offsets / (2 * f))).sum(1)
    torch.testing.assert_close(response.real, mtf, atol=1e-9, rtol=0)
    assert response.imag.abs().max() < 1e-12  # symmetric kernel: no phase shift
    torch.testing.assert_close(k.sum(1), torch.ones_like(mtf))


def test_kernel_refuses_unreachable_mtf():
    """At even factors the taps sit at half-integers: a response above cos(pi/(2f)) is impossible."""
    with pytest.raises(ValueError):
        gaussian_kernel1d(torch.tensor([0.3, 0.71]), 2)
    gaussian_kernel1d(torch.tensor([0.3, 0.71]), 3)  # fine at odd factors


@pytest.mark.parametrize("f", FACTORS)
def test_sinusoid_at_coarse_nyquist_comes_out_scaled_by_the_mtf(f):
    """A cosine at the coarse Nyquist peaking on coarse centres -> mtf * (-1)^j, along x and y.

    Sampling d fine pixels off the block centres would give mtf * cos(pi d / f) instead
    (0.71 mtf for a half-pixel shift at f = 2): this checks both the response and the phase.
    """
    n, mtf = 24, (0.19, 0.343, 0.7)
    i = torch.arange(n * f, dtype=torch.float64)
    wave = torch.cos(math.pi / f * (i - (f - 1) / 2))  # frequency 1/(2f) cycles per fine pixel
    x = wave.expand(3, n * f, n * f)[None].clone()  # varies along x
    expected = torch.tensor(mtf, dtype=torch.float64)[:, None] * (-1.0) ** torch.arange(n)
    for img, axis in ((x, -1), (x.transpose(-1, -2), -2)):
        y = mtf_downsample(img, f, mtf)[0]
        line = y[:, n // 2, :] if axis == -1 else y[:, :, n // 2]
        torch.testing.assert_close(line[:, 4:-4], expected[:, 4:-4], atol=1e-9, rtol=0)


@pytest.mark.parametrize("f", FACTORS)
def test_decimation_phase_ramp_and_blob(f):
    n = 20
    ramp = torch.arange(n * f, dtype=torch.float64).expand(1, 2, n * f, n * f)
    y = mtf_downsample(ramp, f, (0.2, 0.5))
    centres = _block_centres(n, f)
    torch.testing.assert_close(y[0, :, 5, 4:-4], centres[4:-4].expand(2, -1), atol=1e-9, rtol=0)
    # Symmetric blob on the centre of fine block (i0, j0): lands centred on coarse pixel (i0, j0).
    i0, j0 = 7, 11
    r = torch.arange(n * f, dtype=torch.float64)
    cy, cx = _block_centres(n, f)[i0], _block_centres(n, f)[j0]
    blob = torch.exp(-((r[:, None] - cy) ** 2 + (r[None, :] - cx) ** 2) / (2 * (0.7 * f) ** 2))
    out = mtf_downsample(blob[None, None], f, (0.3,))[0, 0]
    assert divmod(int(out.argmax()), n) == (i0, j0)
    torch.testing.assert_close(out[i0, j0 - 1], out[i0, j0 + 1], rtol=1e-9, atol=0)
    torch.testing.assert_close(out[i0 - 1, j0], out[i0 + 1, j0], rtol=1e-9, atol=0)
    torch.testing.assert_close(out[i0 - 2, j0], out[i0, j0 + 2], rtol=1e-9, atol=0)


def test_mean_is_preserved_and_shapes_floor():
    const = torch.full((2, 3, 37, 41), 1234.5, dtype=torch.float64)
    y = mtf_downsample(const, 4, (0.19, 0.3, 0.6))
    assert y.shape == (2, 3, 9, 10)
    torch.testing.assert_close(y, torch.full_like(y, 1234.5), atol=1e-9, rtol=0)
    g = torch.Generator().manual_seed(1)
    x = 100 + 10 * torch.rand(1, 3, 256, 256, generator=g, dtype=torch.float64)
    means = mtf_downsample(x, 2, (0.19, 0.3, 0.6)).mean((2, 3))
    torch.testing.assert_close(means, x.mean((2, 3)), atol=0.02, rtol=0)  # noise of the mean ~0.01


def test_per_image_mtf_equals_separate_calls():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 32, 32, generator=g, dtype=torch.float64)
    mtf = random_mtf(3, 2, generator=g, dtype=torch.float64)
    y = mtf_downsample(x, 2, mtf)
    for b in range(3):
        torch.testing.assert_close(y[b:b + 1], mtf_downsample(x[b:b + 1], 2, mtf[b]), atol=1e-12, rtol=0)
    assert not torch.allclose(y[0], mtf_downsample(x[:1], 2, mtf[1])[0])
    with pytest.raises(ValueError):
        mtf_downsample(x, 2, (0.3, 0.3, 0.3))


def test_random_mtf_range_shape_and_seed():
    a = random_mtf(64, 10, low=0.3, high=0.7, generator=torch.Generator().manual_seed(3))
    b = random_mtf(64, 10, low=0.3, high=0.7, generator=torch.Generator().manual_seed(3))
    assert a.shape == (64, 10) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert 0.3 <= float(a.min()) and float(a.max()) <= 0.7
    assert float(a.max() - a.min()) > 0.3  # actually spread over the range
    with pytest.raises(ValueError):
        random_mtf(2, 2, low=0.7, high=0.3)


def test_noise_statistics_per_band_and_seed():
    sigma = (1.0, 5.0, 20.0)
    x = torch.zeros(4, 3, 128, 128)
    y = add_noise(x, sigma, torch.Generator().manual_seed(4))
    std = y.std(dim=(0, 2, 3))
    torch.testing.assert_close(std, torch.tensor(sigma), rtol=0.02, atol=0)
    n = 4 * 128 * 128
    assert (y.mean(dim=(0, 2, 3)).abs() < 4 * torch.tensor(sigma) / math.sqrt(n)).all()
    assert torch.equal(y, add_noise(x, sigma, torch.Generator().manual_seed(4)))
    per_image = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    z = add_noise(torch.zeros(2, 3, 128, 128), per_image, torch.Generator().manual_seed(5))
    torch.testing.assert_close(z.std(dim=(2, 3)), per_image, rtol=0.05, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_follow_input_dtype_and_device(device, dtype):
    x = torch.rand(2, 3, 32, 32, device=device, dtype=dtype)
    mtf32 = torch.tensor([0.2, 0.3, 0.4])  # float32, CPU: cast to x's dtype and device
    g = torch.Generator(device=device).manual_seed(0)
    outs = [mtf_downsample(x, 2, mtf32), mtf_downsample(x, 4, (0.2, 0.3, 0.4)), cubic_upsample(x, 2),
            cubic_upsample(x, 3, border="replicate"), add_noise(x, mtf32, g),
            mtf_downsample(x, 2, random_mtf(2, 3, device=device, dtype=dtype))]
    for y in outs:
        assert y.dtype == dtype and y.device.type == device


def _gdal_cubic(src: np.ndarray, f: int) -> np.ndarray:
    """GDAL warp (rasterio.warp.reproject, Resampling.cubic) onto the f-times finer aligned grid."""
    from rasterio.transform import from_origin
    from rasterio.warp import Resampling, reproject

    dst = np.zeros((src.shape[0] * f, src.shape[1] * f), np.float32)
    reproject(src, dst, src_transform=from_origin(500000, 4000000, 20, 20),
              dst_transform=from_origin(500000, 4000000, 20 / f, 20 / f),
              src_crs="EPSG:32618", dst_crs="EPSG:32618", resampling=Resampling.cubic)
    return dst


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # affine's `*`, inside rasterio
@pytest.mark.parametrize("f", (2, 3, 4))
@pytest.mark.parametrize("shape", [(12, 10), (7, 9)])
def test_cubic_upsample_matches_gdal(f, shape):
    """GDAL cubic (Keys a = -0.5) on [0, 1000) float32 data: agree to < 2e-4 (float32 rounding).

    Measured max |difference|: ~8e-5 everywhere with border="gdal" (GDAL falls back to
    bilinear near the edges); border="replicate" matches in the interior only; torch's bicubic
    (a = -0.75) is off by tens of DN.
    """
    g = torch.Generator().manual_seed(10 * f + shape[0])
    x = 1000 * torch.rand(1, 1, *shape, generator=g, dtype=torch.float64)
    ref = _gdal_cubic(x[0, 0].numpy().astype(np.float32), f).astype(np.float64)
    ours = cubic_upsample(x, f)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=0)
    inner = (slice(2 * f, -2 * f),) * 2  # outside GDAL's bilinear ring (1.5 f px)
    replicate = cubic_upsample(x, f, border="replicate")[0, 0].numpy()
    np.testing.assert_allclose(replicate[inner], ref[inner], atol=2e-4, rtol=0)
    assert np.abs(replicate - ref).max() > 1  # the ring does differ: the option is not a no-op
    torch_bicubic = F.interpolate(x, scale_factor=f, mode="bicubic", align_corners=False)[0, 0].numpy()
    assert np.abs(torch_bicubic[inner] - ref[inner]).max() > 1


@pytest.mark.parametrize("f", (2, 4))
def test_cubic_upsample_keeps_ramps_on_aligned_grids(f):
    """Keys cubic reproduces linear ramps: output pixel i sits at input coordinate (i+0.5)/f - 0.5."""
    n = 16
    ramp = torch.arange(n, dtype=torch.float64).expand(1, 1, n, n)
    y = cubic_upsample(ramp, f)[0, 0]
    expected = (torch.arange(n * f, dtype=torch.float64) + 0.5) / f - 0.5
    torch.testing.assert_close(y[3, 2 * f:-2 * f], expected[2 * f:-2 * f], atol=1e-12, rtol=0)
    assert y.shape == (n * f, n * f)
    # Down then up keeps a constant exactly (both operators preserve means / partition unity).
    const = torch.full((1, 2, 16, 16), 7.0)
    torch.testing.assert_close(cubic_upsample(mtf_downsample(const, 2, (0.3, 0.3)), 2), const)


def test_matched_mtf_makes_the_blurred_native_image_reach_the_total_mtf():
    from s2sr.training.degradation import matched_mtf

    native, total, factor = torch.tensor([0.304, 0.21]), torch.tensor([0.304, 0.21]), 2
    blur = matched_mtf(total, native, factor)
    torch.testing.assert_close(blur, total / native ** 0.25)
    # a cosine at the coarse Nyquist carrying the native Gaussian's response there (native ** (1/4)),
    # peaks on the coarse centres (fine coordinate 2 j + 0.5): after the blur and decimation its
    # amplitude is the total MTF, not the total times the native response
    i = torch.arange(64, dtype=torch.float64)
    wave = torch.cos(math.pi * (i - 0.5) / 2)
    for b in range(2):
        img = (native[b].double() ** 0.25 * wave).expand(1, 1, 64, 64).contiguous()
        out = mtf_downsample(img, factor, blur[b:b + 1].double())[0, 0, 10:-10, 10:-10]
        torch.testing.assert_close(out.abs().mean(), total[b].double(), atol=1e-4, rtol=0)
        plain = mtf_downsample(img, factor, total[b:b + 1].double())[0, 0, 10:-10, 10:-10]
        assert float(plain.abs().mean()) < 0.8 * float(total[b])  # the blur alone: a blurrier image
    with pytest.raises(ValueError, match="not below the native image's"):
        matched_mtf(torch.tensor([0.8]), torch.tensor([0.3]), 2)
