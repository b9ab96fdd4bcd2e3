"""Write the tiny synthetic SEN2VENµS fixture ``tests/data/sen2venus_tiny/`` (seeded, idempotent).

It mimics the dataset's on-disk layouts as documented in ``training/data/sen2venus.py``
(sources cited there), with made-up sites, tiles, dates and pixel values, and small patches
(5 m: 24 x 24, 10 m: 12 x 12, 20 m: 6 x 6 instead of 256 / 128 / 64):

- ``v1/ALSACE``, ``v1/SUDOUE-4``: the Zenodo 1.x layout: ``index.csv`` (tab-separated, one row
  per acquisition) and, per acquisition, four int16 tensors ``[patches, 4, H, W]`` saved with
  ``torch.save``, named like the real files (``<SITE>_C_<TILE>_<DATE>_05m_b2b3b4b8.pt``, and
  ``..._b4b5b6b8a.pt`` for the B5 B6 B7 B8A group).  The per-acquisition ``*_patches.gpkg``
  footprint files of the real data are not written (the reader does not use them).
- ``v2/ARM``: the 2.0.0 layout with B11/B12: ``index.csv`` (tab-separated, one row per patch,
  a leading unnamed index column) whose cells are ``<inner>.zip/<patch>.tif``; one zip per
  acquisition and band group, one int16 GeoTIFF per patch inside.

Pixel values: per patch a smooth zero-mean pattern at 5 m; VENµS band ``b`` is
``MEAN[b] + 0.8 * STD[b] * pattern`` (so each band's patch mean is its s2sr normalisation
mean, which lets tests check the band order); Sentinel-2 is the 2 x 2 (10 m) or 4 x 4 (20 m)
block mean of the matching VENµS bands plus N(0, 0.001) noise (so tests can check pairing);
B11 B12 follow the same pattern at 20 m.  Stored as int16 reflectance x 10000.

Usage: ``python tests/data/make_sen2venus_fixture.py [OUT_DIR]`` (default: the committed
fixture beside this file).  Re-running rewrites the same content.
"""

import shutil
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

SEED = 20220713  # the SEN2VENµS paper's publication date
FINE = 24  # 5 m patch side (real data: 256)
SCALE = 10000.0
NOISE = 0.001  # reflectance std of the simulated Sentinel-2 noise
# s2sr's per-band normalisation statistics (training/bands.py), B02 B03 B04 B08 B05 B06 B07 B8A B11 B12;
# copied so the fixture does not change if those constants do.
MEAN = (0.0478, 0.0765, 0.0893, 0.2622, 0.1253, 0.2182, 0.2524, 0.2815, 0.2472, 0.1665)
STD = (0.0289, 0.0400, 0.0679, 0.0811, 0.0615, 0.0645, 0.0772, 0.0820, 0.1196, 0.1160)

# (site, tile, [(date, patches)]): made-up acquisitions.
V1_SITES = (
    ("ALSACE", "32ULU", (("2018-02-14", 2),)),
    ("SUDOUE-4", "31TCJ", (("2018-04-02", 2), ("2018-05-17", 1))),
)
V2_SITE = ("ARM", "14SQB", (("2019-06-11", 2),))
V1_COLUMNS = ("vns_site", "date", "nb_patches", "tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8",
              "tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a")
V2_GROUPS = ("b2b3b4b8_10m", "b2b3b4b8_05m", "b5b6b7b8a_20m", "b5b6b7b8a_05m", "b11b12_20m")
UTM_EPSG = {"14SQB": 32614}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member time: byte-stable zips


def _pattern(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth zero-mean field in [-1, 1]-ish, ``[n, n]``: two random plane waves."""
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    f = rng.uniform(0.15, 0.45, size=4)
    phase = rng.uniform(0.0, 2 * np.pi, size=2)
    field = 0.6 * np.sin(f[0] * x + f[1] * y + phase[0]) + 0.4 * np.cos(f[2] * x - f[3] * y + phase[1])
    return field - field.mean()


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of ``[C, H, W]`` (edge-aligned grids)."""
    c, h, w = a.shape
    return a.reshape(c, h // k, k, w // k, k).mean(axis=(2, 4))


def _to_dn(refl: np.ndarray) -> np.ndarray:
    return np.round(refl * SCALE).astype(np.int16)


def make_patch(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One synthetic patch: int16 digital numbers per band group, keyed like the v2 columns."""
    pattern = _pattern(rng, FINE)
    venus = np.stack([MEAN[b] + 0.8 * STD[b] * pattern for b in range(8)])
    swir = np.stack([MEAN[b] + 0.8 * STD[b] * _block_mean(pattern[None], 4)[0] for b in (8, 9)])
    s2_10 = _block_mean(venus[:4], 2) + rng.normal(0.0, NOISE, (4, FINE // 2, FINE // 2))
    s2_20 = _block_mean(venus[4:], 4) + rng.normal(0.0, NOISE, (4, FINE // 4, FINE // 4))
    swir = swir + rng.normal(0.0, NOISE, swir.shape)
    return {"b2b3b4b8_05m": _to_dn(venus[:4]), "b2b3b4b8_10m": _to_dn(s2_10),
            "b5b6b7b8a_05m": _to_dn(venus[4:]), "b5b6b7b8a_20m": _to_dn(s2_20), "b11b12_20m": _to_dn(swir)}


def _write_tsv(path: Path, header: Sequence[str], rows: List[Sequence[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_v1_site(root: Path, site: str, tile: str, acquisitions, rng: np.random.Generator) -> None:
    """A Zenodo 1.x site folder: index.csv + four torch.save-d int16 tensors per acquisition."""
    folder = root / site
    folder.mkdir(parents=True)
    rows = []
    for date, count in acquisitions:
        patches = [make_patch(rng) for _ in range(count)]
        prefix = f"{site}_C_{tile}_{date}"
        names = {  # the real files say b4b5b6b8a for the B5 B6 B7 B8A group
            "tensor_05m_b2b3b4b8": (f"{prefix}_05m_b2b3b4b8.pt", "b2b3b4b8_05m"),
            "tensor_10m_b2b3b4b8": (f"{prefix}_10m_b2b3b4b8.pt", "b2b3b4b8_10m"),
            "tensor_05m_b5b6b7b8a": (f"{prefix}_05m_b4b5b6b8a.pt", "b5b6b7b8a_05m"),
            "tensor_20m_b5b6b7b8a": (f"{prefix}_20m_b4b5b6b8a.pt", "b5b6b7b8a_20m"),
        }
        for name, group in names.values():
            stacked = np.ascontiguousarray(np.stack([p[group] for p in patches]))
            torch.save(torch.from_numpy(stacked), folder / name)
        rows.append([site, date, count] + [names[c][0] for c in V1_COLUMNS[3:]])
    _write_tsv(folder / "index.csv", V1_COLUMNS, rows)


def _geotiff_bytes(data: np.ndarray, epsg: int, left: float, top: float, res: float) -> bytes:
    """An uncompressed int16 GeoTIFF of ``[bands, H, W]`` with a north-up UTM transform."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype="int16",
                   crs=rasterio.crs.CRS.from_epsg(epsg), transform=Affine(res, 0.0, left, 0.0, -res, top))
    with MemoryFile() as memfile:
        with memfile.open(**profile) as ds:
            ds.write(data)
        return memfile.read()


def _write_zip(path: Path, members: Sequence[Tuple[str, bytes]]) -> None:
    """A stored (uncompressed) zip with fixed member times."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, payload in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, payload)


def write_v2_site(root: Path, site: str, tile: str, acquisitions, rng: np.random.Generator) -> None:
    """A 2.0.0 site folder: index.csv + one zip per (acquisition, band group) of per-patch GeoTIFFs."""
    folder = root / site
    folder.mkdir(parents=True)
    rows, pid = [], 0
    for date, count in acquisitions:
        members: Dict[str, List[Tuple[str, bytes]]] = {g: [] for g in V2_GROUPS}
        for _ in range(count):
            patch = make_patch(rng)
            left, top = 600000.0 + 1280.0 * pid, 4000000.0  # one real patch width (1280 m) apart
            row = [str(len(rows))]
            for group in V2_GROUPS:
                res = {"05m": 5.0, "10m": 10.0, "20m": 20.0}[group[-3:]]
                name = f"{site}_{pid}_{date}_{tile}_{group}.tif"
                members[group].append((name, _geotiff_bytes(patch[group], UTM_EPSG[tile], left, top, res)))
                row.append(f"{site}_{date}_{tile}_{group}.zip/{name}")
            rows.append(row)
            pid += 1
        for group in V2_GROUPS:
            _write_zip(folder / f"{site}_{date}_{tile}_{group}.zip", members[group])
    _write_tsv(folder / "index.csv", ("",) + V2_GROUPS, rows)


def make_fixture(out_dir: Path) -> Path:
    """(Re)write the fixture under ``out_dir``; only its own ``v1``/``v2`` folders are replaced."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in ("v1", "v2"):
        shutil.rmtree(out_dir / part, ignore_errors=True)
    rng = np.random.default_rng(SEED)
    for site, tile, acquisitions in V1_SITES:
        write_v1_site(out_dir / "v1", site, tile, acquisitions, rng)
    write_v2_site(out_dir / "v2", *V2_SITE, rng)
    return out_dir


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "sen2venus_tiny"
    print(make_fixture(target))
