"""The exported unit: normalisation, a generator backbone, the global skip, denormalisation.

``SuperResolver`` takes digital numbers in the model's units (L2A convention: reflectance x
10000, no offset) and returns the same units at ``factor`` times the resolution:
``[B, bands, H, W] -> [B, bands, factor*H, factor*W]``, float32 in and out.  Inside, as
CESBIO's models do: reflectance = DN / scale, per band (r - mean) / std, the backbone, and
the inverse on the output.  With ``global_skip`` the bicubic upsampling of the normalised
input is added to the backbone's output (no parameters; the net learns the residual).  With ``hard_constraint``
a final ``LowFrequencyConstraint`` makes the output, re-degraded by each band's MTF blur and
decimation, reproduce the input (see ``constraint.py``).
"""

from typing import Final, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .constraint import LowFrequencyConstraint


class SuperResolver(nn.Module):
    factor: Final[int]
    global_skip: Final[bool]
    hard_constraint: Final[bool]

    def __init__(
        self,
        backbone: nn.Module,
        factor: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: float = 10000.0,
        global_skip: bool = True,
        hard_constraint: bool = False,
        mtf: Optional[Sequence[float]] = None,
        constrained_bands: Optional[Sequence[bool]] = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std must have one entry per band")
        self.backbone = backbone
        self.factor = int(factor)
        self.global_skip = bool(global_skip)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("scale", torch.tensor(float(scale)))
        # the low-frequency hard constraint (radiometric faithfulness by construction); always
        # built (TorchScript needs a fixed module tree), applied only when enabled
        self.hard_constraint = bool(hard_constraint)
        self.constraint = LowFrequencyConstraint(mtf if mtf is not None else [0.3] * len(mean), self.factor,
                                                 active=constrained_bands)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """DN -> normalised units, [B, C, H, W]."""
        return (x / self.scale - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised units -> DN, [B, C, H, W]."""
        return (z * self.std + self.mean) * self.scale

    def forward_normalized(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised [B, C, H, W] -> normalised [B, C, f*H, f*W] (what training optimises).

        The backbone runs in its own dtype (a bf16 copy on the fast inference path); the
        normalisation, the skip and the constraint stay in the input's precision (float32).
        """
        y = self.backbone(z.to(self.backbone.compute_dtype())).to(z.dtype)
        if self.global_skip:
            y = y + F.interpolate(z, scale_factor=float(self.factor), mode="bicubic", align_corners=False)
        if self.hard_constraint:
            y = self.constraint(y, z)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.denormalize(self.forward_normalized(self.normalize(x)))
