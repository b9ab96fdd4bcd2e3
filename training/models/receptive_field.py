"""Receptive field of the generators, from their layers, and its autograd check.

Radii are one-sided distances: output pixel o depends on input pixels within ``margin_in_px``
of its parent, and on output-grid neighbours within ``radius_out_px``.  The UDF's overlap
(``margin`` in the weights' metadata) is ``margin_in_px``, never a hand-typed constant.

Upscaling rule: a radius r (in pixels of the coarse grid) seen from the fine grid of a x f
stage (PixelShuffle or nearest) becomes f*r + f - 1 fine pixels (the far sub-pixel).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from .carn import CARN
from .rrdbnet import RRDBNet
from .wrapper import SuperResolver

#: Support radius of bicubic interpolation, in input pixels (the 4-tap kernel's far tap).
BICUBIC_RADIUS_IN = 2


@dataclass(frozen=True)
class ReceptiveField:
    radius_lr_px: int  # layers before upsampling, input-grid pixels
    radius_out_px: int  # whole network, output-grid pixels (far side)
    margin_in_px: int  # input pixels needed on each side: ceil(radius_out / factor)
    factor: int


def _r(c: nn.Conv2d) -> int:
    """Radius of one conv: (k - 1) / 2 * dilation."""
    return (c.kernel_size[0] - 1) // 2 * c.dilation[0]


def _upscale(radius: int, factor: int) -> int:
    return factor * radius + factor - 1


def _carn(net: CARN) -> ReceptiveField:
    lr = _r(net.head) + _r(net.upconv)
    for cascade in net.cascades:
        for i in range(len(cascade.fusions)):
            unit = cascade.blocks[0 if cascade.shared else i]
            lr += _r(unit.conv1) + _r(unit.conv2) + _r(unit.conv3)
        lr += sum(_r(f) for f in cascade.fusions)
    lr += sum(_r(f) for f in net.fusions)
    f = net.cfg.factor
    out = _upscale(lr, f) + _r(net.tail)
    return ReceptiveField(lr, out, math.ceil(out / f), f)


def _rrdbnet(net: RRDBNet) -> ReceptiveField:
    lr = _r(net.conv_first) + _r(net.trunk_conv)
    for rrdb in net.trunk:
        for block in rrdb.dense:
            # the longest path through a dense block chains all five convs
            lr += sum(_r(c) for c in block.convs) + _r(block.conv5)
    out = lr
    for up in net.upconvs:
        out = _upscale(out, 2) + _r(up)
    out += _r(net.hr_conv) + _r(net.conv_last)
    f = net.cfg.factor
    return ReceptiveField(lr, out, math.ceil(out / f), f)


def receptive_field(model: nn.Module) -> ReceptiveField:
    """Receptive field of a backbone or a SuperResolver, walked from its conv layers."""
    backbone = model.backbone if isinstance(model, SuperResolver) else model
    if isinstance(backbone, CARN):
        rf = _carn(backbone)
    elif isinstance(backbone, RRDBNet):
        rf = _rrdbnet(backbone)
    else:
        raise TypeError(f"no receptive-field rule for {type(backbone).__name__}")
    if isinstance(model, SuperResolver) and model.global_skip:
        skip_out = _upscale(BICUBIC_RADIUS_IN, rf.factor)
        if skip_out > rf.radius_out_px:
            rf = ReceptiveField(rf.radius_lr_px, skip_out, math.ceil(skip_out / rf.factor), rf.factor)
    if isinstance(model, SuperResolver) and model.hard_constraint:
        out = rf.radius_out_px + model.constraint.radius_out_px()
        rf = ReceptiveField(rf.radius_lr_px, out, math.ceil(out / rf.factor), rf.factor)
    return rf


@torch.no_grad()
def _probe_size(margin: int) -> int:
    return 2 * margin + 9


def measure_receptive_field(model: nn.Module, bands: int = 10, seed: int = 0) -> ReceptiveField:
    """Measure the far-side radii with autograd: which inputs move one output pixel.

    Probes the two sub-pixel phases of the central input pixel on a random input (random so
    that no LeakyReLU sits exactly at a kink) far from the borders (so reflection padding does
    not fold the support back).
    """
    rf = receptive_field(model)
    size = _probe_size(rf.margin_in_px + 4)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, bands, size, size, generator=gen, dtype=torch.float64)
    model = model.double().eval()
    f = rf.factor
    c = size // 2
    margin_in = 0
    radius_out = 0
    for phase in range(f):
        xi = x.clone().requires_grad_(True)
        y = model(xi)
        o = f * c + phase
        y[0, :, o, o].sum().backward()
        support = (xi.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
        margin_in = max(margin_in, int((support - c).abs().max()))
        # an output pixel's far neighbour on the fine grid: distance to the far edge of the
        # farthest input pixel, measured in output pixels
        lo, hi = int(support.min()), int(support.max())
        radius_out = max(radius_out, o - f * lo, f * hi + f - 1 - o)
    model.float()
    return ReceptiveField(-1, radius_out, margin_in, f)
