"""Whole-image prediction for the evaluations: a network over an image in tiles, and the bicubic
baseline.  Its own module: the x4 evaluation (``evaluate``), the Wald x2 protocol (``protocol``)
and the training loop's validation (``train``) use it, and none imports another for it.
"""

from typing import Any

import torch


def bicubic(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Torch bicubic (a = -0.75) of ``[C, H, W]``: the baseline, and the models' global skip."""
    return torch.nn.functional.interpolate(x[None], scale_factor=float(factor), mode="bicubic", align_corners=False)[0]


@torch.no_grad()
def predict_module(module: Any, x: torch.Tensor, factor: int, margin: int, tile: int = 128) -> torch.Tensor:
    """SR of a whole ``[C, H, W]`` DN image, in tiles read with ``margin`` pixels of context (bounded memory).

    ``module``: a loaded TorchScript model or an eager ``SuperResolver``.
    """
    c, h, w = x.shape
    out = torch.empty(c, factor * h, factor * w)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ys, xs = max(0, y0 - margin), max(0, x0 - margin)
            ye, xe = min(h, y0 + tile + margin), min(w, x0 + tile + margin)
            y = module(x[None, :, ys:ye, xs:xe].contiguous())[0]
            ty, tx = min(tile, h - y0), min(tile, w - x0)
            oy, ox = factor * (y0 - ys), factor * (x0 - xs)
            out[:, factor * y0:factor * (y0 + ty), factor * x0:factor * (x0 + tx)] = y[:, oy:oy + factor * ty, ox:ox + factor * tx]
    return out
