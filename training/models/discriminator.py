"""UNet discriminator with spectral normalisation for the GAN fine-tuning stage.

The design follows the UNet discriminator of Real-ESRGAN (Wang et al. 2021), written here from
its description: a UNet that outputs one logit per pixel, so the generator gets a dense
real/fake signal, with spectral normalisation (Miyato et al. 2018) on every conv except the
first and the last to keep the discriminator Lipschitz-bounded and the GAN stable.

With F = ``features``::

    conv0   3x3        bands -> F                 (no SN)     full res   -> x0
    conv1   4x4 s2     F  -> 2F    SN, no bias                1/2        -> x1
    conv2   4x4 s2     2F -> 4F    SN, no bias                1/4        -> x2
    conv3   4x4 s2     4F -> 8F    SN, no bias                1/8        -> x3
    up x2 bilinear, conv4 3x3  8F -> 4F  SN (+ x2 if skip)    1/4
    up x2 bilinear, conv5 3x3  4F -> 2F  SN (+ x1 if skip)    1/2
    up x2 bilinear, conv6 3x3  2F -> F   SN (+ x0 if skip)    full res
    conv7, conv8 3x3   F -> F      SN, no bias
    conv9   3x3        F -> 1                     (no SN)     logits

every conv but the last followed by LeakyReLU(0.2); zero padding.  With the seed's set-up the
module high-pass filters its own input first (``high_pass_sigma``), so a training loop cannot
forget it.  Input ``[B, bands, H, W]`` with H and W multiples of 8 (three stride-2 levels),
output per-pixel logits ``[B, 1, H, W]`` (use them with ``losses.relativistic_*``).
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..filters import high_pass

NEG_SLOPE = 0.2
#: Spatial sizes must be multiples of this (three stride-2 downsamplings).
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class UNetDiscriminatorConfig:
    bands: int = 10
    features: int = 64
    skip: bool = True  # add the encoder features to the decoder's (UNet skips)
    #: Gaussian sigma (pixels) of the input high-pass filter; None feeds the raw input.
    high_pass_sigma: Optional[float] = 1.0


def _sn_conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    """Spectrally normalised bias-free conv; padding keeps size (k=3) or halves it (k=4, s=2)."""
    return spectral_norm(nn.Conv2d(cin, cout, k, stride=stride, padding=1, bias=False))


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel real/fake logits of ``[B, bands, H, W]`` images -> ``[B, 1, H, W]``."""

    def __init__(self, cfg: UNetDiscriminatorConfig = UNetDiscriminatorConfig()) -> None:
        super().__init__()
        if cfg.high_pass_sigma is not None and not cfg.high_pass_sigma > 0:
            raise ValueError(f"high_pass_sigma must be > 0 or None, got {cfg.high_pass_sigma}")
        self.cfg = cfg
        f = cfg.features
        self.conv0 = nn.Conv2d(cfg.bands, f, 3, padding=1)
        self.conv1 = _sn_conv(f, 2 * f, 4, stride=2)
        self.conv2 = _sn_conv(2 * f, 4 * f, 4, stride=2)
        self.conv3 = _sn_conv(4 * f, 8 * f, 4, stride=2)
        self.conv4 = _sn_conv(8 * f, 4 * f, 3)
        self.conv5 = _sn_conv(4 * f, 2 * f, 3)
        self.conv6 = _sn_conv(2 * f, f, 3)
        self.conv7 = _sn_conv(f, f, 3)
        self.conv8 = _sn_conv(f, f, 3)
        self.conv9 = nn.Conv2d(f, 1, 3, padding=1)
        self.act = nn.LeakyReLU(NEG_SLOPE)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.cfg.bands:
            raise ValueError(f"expected [B, {self.cfg.bands}, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
            raise ValueError(
                f"H and W must be positive multiples of {SIZE_MULTIPLE} (three stride-2 levels), "
                f"got {h} x {w}; crop the patches"
            )

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.cfg.high_pass_sigma is not None:
            x = high_pass(x, self.cfg.high_pass_sigma)
        x0 = self.act(self.conv0(x))
        x1 = self.act(self.conv1(x0))
        x2 = self.act(self.conv2(x1))
        x3 = self.act(self.conv3(x2))
        y = self.act(self.conv4(self._up(x3)))
        if self.cfg.skip:
            y = y + x2
        y = self.act(self.conv5(self._up(y)))
        if self.cfg.skip:
            y = y + x1
        y = self.act(self.conv6(self._up(y)))
        if self.cfg.skip:
            y = y + x0
        y = self.act(self.conv7(y))
        y = self.act(self.conv8(y))
        return self.conv9(y)


def build_discriminator(cfg: UNetDiscriminatorConfig = UNetDiscriminatorConfig()) -> UNetDiscriminatorSN:
    """The discriminator for a config (defaults: ten S2 bands, 64 features, high-pass sigma 1)."""
    return UNetDiscriminatorSN(cfg)
