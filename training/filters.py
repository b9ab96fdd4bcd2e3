"""Image filters of the GAN set-up: the Gaussian blur and the high-pass filter the discriminator
sees its input through (seed: "UNet discriminator with High Pass Filtering of inputs").  Their
own module: they lived in ``losses.py``, which the discriminator (``models/discriminator.py``)
imported for them alone; it imports them from here, and ``losses.py`` holds losses only.

Pure torch functions that follow the device and dtype of their input.  (``degradation.py``'s
``gaussian_kernel1d`` is another thing: the MTF blur of the sensor simulation, sized by the MTF.)
"""

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised sampled Gaussian, radius ``ceil(3 sigma)`` pixels; shape ``[2r + 1]``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable per-channel Gaussian blur with reflect padding; ``[B, C, H, W]`` -> same.

    ``sigma`` in pixels; the image must be larger than the kernel radius ``ceil(3 sigma)``
    along both axes (reflect padding needs it).
    """
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
    k = gaussian_kernel(sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    if min(x.shape[-2:]) <= r:
        raise ValueError(f"image {tuple(x.shape[-2:])} too small for sigma={sigma} (radius {r} px)")
    c = x.shape[1]
    # Depthwise (groups=C) so that bands never mix.
    kh = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    y = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kh, groups=c)
    return F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), kw, groups=c)


def high_pass(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """High-pass filter ``x - gaussian_blur(x, sigma)``, per channel, reflect padding.

    The discriminator sees these images (seed: "UNet discriminator with High Pass Filtering of
    inputs") so it judges texture and detail, not the low frequencies (radiometry) that the L1
    loss already ties to the target.

    Args:
        x: ``[B, C, H, W]``, any units (the result has the same units, zero mean locally).
        sigma: Gaussian standard deviation in pixels; the image must be larger than
            ``ceil(3 sigma)`` along both axes.

    Returns:
        ``[B, C, H, W]``; a constant image maps to 0.
    """
    return x - gaussian_blur(x, sigma)
