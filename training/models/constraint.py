"""Radiometric faithfulness by construction: the low-frequency hard constraint.

A final layer that replaces the SR output's low frequencies by the input's, so that the output,
degraded again by the band's MTF blur and decimation, reproduces the input (the idea of the
"low-frequency hard constraint" of ESA OpenSR's SEN2SR, Aybar et al. 2026; written here from
the description, as a projection):

    y' = y + U (x - D y),   D = MTF blur + decimation by f (``degradation.mtf_downsample``),
                            U = D^T h,  h ~ (D D^T)^-1 on the coarse grid.

With the exact inverse, ``D y' = x`` exactly (``D U = I``).  ``h`` is the inverse of the
coarse-grid filter ``D D^T`` (the autocorrelation of the blur kernel sampled every f pixels),
computed by FFT and truncated to a ``(2R+1)^2`` FIR filter so that the layer stays local: the
UDF's tiling stays seam-free and the receptive field grows by a known amount (walked in
``receptive_field``).  A second pass (``iterations=2``) removes most of the truncation error.
It works on the normalised bands (D keeps constants, so it commutes with the per-band affine
normalisation).  ``D`` uses each band's MTF at the coarse (10 m grid) Nyquist.

Which bands: ``active`` (default in s2sr models: the native 10 m bands B02 B03 B04 B08).  The
20 m bands reach the network only through their cubic interpolation onto the 10 m grid, so a x2
constraint would tie them to that interpolated (blurred) signal; their faithful constraint
(x4 to the native 20 m samples) needs inputs the openEO graph does not pass to the UDF.
"""

import math
from typing import Final, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..degradation import gaussian_kernel1d


def inverse_filter(kernel1d: torch.Tensor, factor: int, radius: int, grid: int = 256) -> torch.Tensor:
    """``[N, 2R+1, 2R+1]`` FIR approximations of ``(D D^T)^-1`` for 1-D kernels ``[N, K]``.

    ``D D^T`` on the coarse grid is separable with taps ``a[k] = sum_n g[n] g[n + f k]``.
    """
    g = kernel1d.to(torch.float64)
    n, k = g.shape
    lags = range(-(k // factor) - 1, k // factor + 2)
    a = torch.zeros(n, len(lags), dtype=torch.float64)
    for i, lag in enumerate(lags):
        s = factor * lag
        if abs(s) < k:
            a[:, i] = (g[:, max(0, -s):min(k, k - s)] * g[:, max(0, s):min(k, k + s)]).sum(1)
    # transfer function of the separable 2-D filter on a periodic grid, then its inverse
    taps = torch.zeros(n, grid, dtype=torch.float64)
    for i, lag in enumerate(lags):
        taps[:, lag % grid] += a[:, i]
    spectrum = torch.fft.fft(taps).real  # symmetric taps: real spectrum
    inv1d = torch.fft.ifft(1.0 / spectrum).real  # [N, grid], centred at 0
    idx = torch.arange(-radius, radius + 1) % grid
    h1 = inv1d[:, idx]  # [N, 2R+1]
    return h1[:, :, None] * h1[:, None, :]


class LowFrequencyConstraint(nn.Module):
    """``forward(y [B,C,fH,fW], x [B,C,H,W]) -> y'`` with ``D y' ~= x`` (normalised units)."""

    factor: Final[int]
    pad: Final[int]
    radius: Final[int]
    iterations: Final[int]

    def __init__(self, mtf: Sequence[float], factor: int = 2, radius: int = 8, iterations: int = 2,
                 active: Optional[Sequence[bool]] = None) -> None:
        super().__init__()
        active = [True] * len(mtf) if active is None else list(active)
        if len(active) != len(mtf):
            raise ValueError(f"active needs one flag per band ({len(mtf)}), got {len(active)}")
        g = gaussian_kernel1d(torch.tensor(list(mtf), dtype=torch.float64), factor)  # [C, K]
        self.factor, self.radius, self.iterations = int(factor), int(radius), int(iterations)
        self.pad = (g.shape[1] - factor) // 2
        # non-persistent: rebuilt from the MTFs, so checkpoints with and without the layer load alike
        self.register_buffer("kernel", g.float(), persistent=False)
        self.register_buffer("inverse", inverse_filter(g, factor, radius).float()[:, None], persistent=False)
        self.register_buffer("active", torch.tensor(active, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def down(self, y: torch.Tensor) -> torch.Tensor:
        """D: blur + decimate, [B, C, fH, fW] -> [B, C, H, W] (as degradation.mtf_downsample)."""
        c = y.shape[1]
        f, p = self.factor, self.pad
        y = F.conv2d(F.pad(y, (p, p, 0, 0), mode="reflect"), self.kernel[:, None, None, :], stride=(1, f), groups=c)
        return F.conv2d(F.pad(y, (0, 0, p, p), mode="reflect"), self.kernel[:, None, :, None], stride=(f, 1), groups=c)

    def up(self, r: torch.Tensor) -> torch.Tensor:
        """U = D^T h: [B, C, H, W] -> [B, C, fH, fW]."""
        c = r.shape[1]
        f, p = self.factor, self.pad
        r = F.conv2d(F.pad(r, (self.radius,) * 4, mode="replicate"), self.inverse, groups=c)
        r = F.conv_transpose2d(r, self.kernel[:, None, :, None], stride=(f, 1), groups=c)[:, :, p:p + f * r.shape[2]]
        r = F.conv_transpose2d(r, self.kernel[:, None, None, :], stride=(1, f), groups=c)[:, :, :, p:p + f * r.shape[3]]
        return r

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.iterations):
            y = y + self.active * self.up(x - self.down(y))
        return y

    def radius_out_px(self) -> int:
        """Growth of the receptive field on the fine grid (far side, an upper bound): per pass,
        D^T reaches the coarse pixels whose kernel covers a fine pixel, h spreads R coarse
        pixels, D reaches back ``pad`` fine pixels beyond a block: f R + 2 pad + f - 1."""
        return self.iterations * (self.factor * self.radius + 2 * self.pad + self.factor - 1)
