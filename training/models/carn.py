"""Shallow CARN generator (Ahn et al. 2018) as sized in the EVOLAND SISR table.

Name ``carn_{C}x{U}x{F}g{G}[sw]``: C cascades of U residual units, F features per unit of
factor^2 (so the trunk is F * factor^2 = 256 channels wide at x2), grouped convolutions with
G groups, and ``sw`` when the U units of a cascade share one set of weights.

The parameter counts of the seed table fix the design (see ``tests/test_models.py``):

* a residual unit is grouped 3x3 -> LeakyReLU -> grouped 3x3 -> LeakyReLU -> 1x1, plus the
  skip (361,216 parameters at 256 channels, 4 groups);
* each cascade has one 1x1 fusion conv after each of its units and one global 1x1 fusion
  conv after the cascade, all 256 -> 256 (4 x 65,792).  The counts rule out CARN's
  concatenating fusions (a 1x1 conv over [x, b1 .. bk] has k+1 times the inputs), so the
  cascading connections are summed: fusion k sees x + b1 + ... + bk;
* head 3x3 bands -> 256, a 3x3 256 -> 256 before PixelShuffle(factor), a 3x3 64 -> bands.

All convs pad by reflection, activations are LeakyReLU(0.2).  The module works in the
normalised space (see ``wrapper.SuperResolver``); input ``[B, bands, H, W]``, output
``[B, bands, factor*H, factor*W]``.
"""

from dataclasses import dataclass
from typing import Final

import torch
from torch import nn

NEG_SLOPE = 0.2


def conv(cin: int, cout: int, k: int, groups: int = 1) -> nn.Conv2d:
    """A k x k conv with 'same' reflection padding."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, padding_mode="reflect")


@dataclass(frozen=True)
class CARNConfig:
    bands: int = 10
    factor: int = 2
    features: int = 64  # per unit of factor^2; trunk width = features * factor**2
    cascades: int = 3
    units: int = 3
    groups: int = 4
    shared: bool = True  # the units of a cascade share their weights ("sw")

    @property
    def width(self) -> int:
        return self.features * self.factor**2


class ResidualUnit(nn.Module):
    """x + 1x1(lrelu(gconv3x3(lrelu(gconv3x3(x))))); shape preserved."""

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.conv1 = conv(width, width, 3, groups)
        self.conv2 = conv(width, width, 3, groups)
        self.conv3 = conv(width, width, 1)
        self.act = nn.LeakyReLU(NEG_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class Cascade(nn.Module):
    """U residual units with summed cascading connections and a 1x1 fusion after each."""

    shared: Final[bool]

    def __init__(self, width: int, units: int, groups: int, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        n_sets = 1 if shared else units
        self.blocks = nn.ModuleList([ResidualUnit(width, groups) for _ in range(n_sets)])
        self.fusions = nn.ModuleList([conv(width, width, 1) for _ in range(units)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = x
        out = x
        if self.shared:
            for fusion in self.fusions:
                acc = acc + self.blocks[0](out)
                out = fusion(acc)
        else:
            for block, fusion in zip(self.blocks, self.fusions):
                acc = acc + block(out)
                out = fusion(acc)
        return out


class CARN(nn.Module):
    """Cascading residual network generator for one integer upscaling factor."""

    def __init__(self, cfg: CARNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        self.head = conv(cfg.bands, width, 3)
        self.cascades = nn.ModuleList(
            [Cascade(width, cfg.units, cfg.groups, cfg.shared) for _ in range(cfg.cascades)]
        )
        self.fusions = nn.ModuleList([conv(width, width, 1) for _ in range(cfg.cascades)])
        self.upconv = conv(width, width, 3)
        self.shuffle = nn.PixelShuffle(cfg.factor)
        self.tail = conv(width // cfg.factor**2, cfg.bands, 3)
        self.act = nn.LeakyReLU(NEG_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        acc = h
        out = h
        for cascade, fusion in zip(self.cascades, self.fusions):
            acc = acc + cascade(out)
            out = fusion(acc)
        up = self.act(self.shuffle(self.upconv(out)))
        return self.tail(up)

    def last_conv(self) -> nn.Conv2d:
        return self.tail

    @torch.jit.export
    def compute_dtype(self) -> torch.dtype:
        """The dtype the trunk runs in (bf16 after ``.to(torch.bfloat16)`` for the fast path)."""
        return self.head.weight.dtype
