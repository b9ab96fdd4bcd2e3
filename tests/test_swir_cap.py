"""The SWIR detail cap (a diagnostic, training/swir_cap.py): what it changes and what it keeps."""

import torch
import torch.nn.functional as F

from s2sr.training.bands import BANDS
from s2sr.training.swir_cap import cap_detail

B11, B12 = BANDS.index("B11"), BANDS.index("B12")


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x.double()[None], scale_factor=2.0, mode="bicubic", align_corners=False)[0].float()


def test_flat_swir_input_gets_no_detail_and_other_bands_are_kept():
    gen = torch.Generator().manual_seed(0)
    x = 1000 + 300 * torch.rand(10, 16, 16, generator=gen)
    x[B11] = 500.0  # a flat band: no contrast of its own
    y = _bicubic(x) + 80 * torch.randn(10, 32, 32, generator=gen)  # detail everywhere
    out = cap_detail(y, x, 2.0)
    assert torch.equal(out[[i for i in range(10) if i not in (B11, B12)]], y[[i for i in range(10) if i not in (B11, B12)]])
    torch.testing.assert_close(out[B11], _bicubic(x)[B11], atol=1e-2, rtol=0)  # the detail is gone
    assert out.dtype == y.dtype and out.shape == y.shape


def test_detail_within_the_bands_own_contrast_is_kept():
    gen = torch.Generator().manual_seed(1)
    x = 1000 + 400 * torch.rand(10, 16, 16, generator=gen)  # textured: local std ~ 100 DN
    y = _bicubic(x) + 5 * torch.randn(10, 32, 32, generator=gen)  # small detail
    torch.testing.assert_close(cap_detail(y, x, 2.0), y)
    capped_hard = cap_detail(y, x, 0.001)  # a tiny cap takes nearly all of it away
    assert (capped_hard[B12] - _bicubic(x)[B12]).abs().max() < (y[B12] - _bicubic(x)[B12]).abs().max() / 10
