"""Sentinel-2 band facts shared by the models, the simulation and the export.

The order is the order of the CESBIO shallow SISR models: the four 10 m bands, then the
six 20 m bands.  Everything in s2sr that lays bands along a channel axis uses it.
"""

from typing import Dict, Tuple

from s2sr.engine.nodata import INT16_NODATA as _INT16_NODATA
from s2sr.engine.weights import BANDS_10M, BANDS_20M, MODEL_BANDS

__all__ = ["BANDS", "BANDS_10M", "BANDS_20M", "INT16_NODATA", "MEAN", "MTF_NYQUIST", "NATIVE_RESOLUTION_M",
           "REFLECTANCE_SCALE", "STD"]

#: Band order along the channel axis of every s2sr model (the engine's list: one source; the
#: 10 m / 20 m split: ``BANDS_10M`` / ``BANDS_20M``, the engine's too).
BANDS: Tuple[str, ...] = MODEL_BANDS
#: Native ground sampling distance of each band, metres.
NATIVE_RESOLUTION_M: Dict[str, int] = {**{b: 10 for b in BANDS_10M}, **{b: 20 for b in BANDS_20M}}
#: Per-band reflectance mean and standard deviation used to normalise network inputs
#: (CESBIO's published statistics; reflectance = DN / 10000).
MEAN: Tuple[float, ...] = (0.0478, 0.0765, 0.0893, 0.2622, 0.1253, 0.2182, 0.2524, 0.2815, 0.2472, 0.1665)
STD: Tuple[float, ...] = (0.0289, 0.0400, 0.0679, 0.0811, 0.0615, 0.0645, 0.0772, 0.0820, 0.1196, 0.1160)
#: Published Sentinel-2 MTF at the band's Nyquist frequency.
MTF_NYQUIST: Dict[str, float] = {
    "B02": 0.304, "B03": 0.276, "B04": 0.233, "B08": 0.222,
    "B05": 0.343, "B06": 0.336, "B07": 0.338, "B8A": 0.325, "B11": 0.21, "B12": 0.19,
}
#: L2A digital numbers: reflectance x 10000, no offset (openEO's SENTINEL2_L2A units).
REFLECTANCE_SCALE: float = 10000.0
#: int16 nodata value of the reference tool's products (and of s2sr's int16 output): the engine's.
INT16_NODATA: int = _INT16_NODATA
