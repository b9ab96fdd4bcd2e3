"""RRDBNet generator (ESRGAN, Wang et al. 2018), shallow: ``esrgan_{B}x{F}x{G}``.

B residual-in-residual dense blocks (RRDB) of three 5-conv dense blocks, F features, growth
G.  Standard layout: conv_first, trunk of RRDBs, trunk conv, global residual, then one
(nearest x2 -> 3x3 conv -> LeakyReLU) stage per factor of 2, an HR conv and the last conv.
The residual scales (0.2 in ESRGAN) are learnable here, one per dense block and one per
RRDB: the 12 parameters that separate the seed's 2,280,662 from a plain RRDBNet's 2,280,650.
Input ``[B, bands, H, W]`` (normalised), output ``[B, bands, factor*H, factor*W]``.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .carn import NEG_SLOPE, conv


@dataclass(frozen=True)
class RRDBConfig:
    bands: int = 10
    factor: int = 2
    features: int = 64
    growth: int = 32
    blocks: int = 3
    residual_scale: float = 0.2  # initial value of the learnable scales


class DenseBlock(nn.Module):
    """Five 3x3 convs with dense connections; x + scale * conv5([x, c1 .. c4])."""

    def __init__(self, nf: int, gc: int, scale: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList([conv(nf + i * gc, gc, 3) for i in range(4)])
        self.conv5 = conv(nf + 4 * gc, nf, 3)
        self.act = nn.LeakyReLU(NEG_SLOPE)
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for c in self.convs:
            feats.append(self.act(c(torch.cat(feats, 1))))
        return x + self.scale * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int, scale: float) -> None:
        super().__init__()
        self.dense = nn.Sequential(*[DenseBlock(nf, gc, scale) for _ in range(3)])
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.dense(x)


class RRDBNet(nn.Module):
    def __init__(self, cfg: RRDBConfig) -> None:
        super().__init__()
        if cfg.factor < 2 or cfg.factor & (cfg.factor - 1):
            raise ValueError(f"RRDBNet upsamples by powers of 2, got factor {cfg.factor}")
        self.cfg = cfg
        nf = cfg.features
        self.conv_first = conv(cfg.bands, nf, 3)
        self.trunk = nn.Sequential(*[RRDB(nf, cfg.growth, cfg.residual_scale) for _ in range(cfg.blocks)])
        self.trunk_conv = conv(nf, nf, 3)
        self.upconvs = nn.ModuleList([conv(nf, nf, 3) for _ in range(int(math.log2(cfg.factor)))])
        self.hr_conv = conv(nf, nf, 3)
        self.conv_last = conv(nf, cfg.bands, 3)
        self.act = nn.LeakyReLU(NEG_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.trunk_conv(self.trunk(feat))
        for up in self.upconvs:
            feat = self.act(up(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.act(self.hr_conv(feat)))

    def last_conv(self) -> nn.Conv2d:
        return self.conv_last

    @torch.jit.export
    def compute_dtype(self) -> torch.dtype:
        """The dtype the trunk runs in (bf16 after ``.to(torch.bfloat16)`` for the fast path)."""
        return self.conv_first.weight.dtype
