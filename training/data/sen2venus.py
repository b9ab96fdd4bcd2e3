"""Reader for the SEN2VENµS dataset (Michel et al. 2022) in its on-disk layouts.

SEN2VENµS pairs cloud-free Sentinel-2 L2A patches (10 m: B2 B3 B4 B8; 20 m: B5 B6 B7 B8A)
with VENµS patches acquired the same day, registered and resampled to 5 m, which serve as
the 5 m reference for those 8 bands.  It cannot be downloaded here; this module reads a copy
a user has, and is tested on a seeded synthetic fixture written in the same layout
(``tests/data/make_sen2venus_fixture.py``).

Facts used, and where they come from
------------------------------------
[P]  Michel, Vinasco-Salinas, Inglada, Hagolle, "SEN2VENµS, a Dataset for the Training of
     Sentinel-2 Super-Resolution Algorithms", Data 7(7):96, 2022, doi:10.3390/data7070096;
     data: Zenodo doi:10.5281/zenodo.6514159, one ``<SITE>.7z`` archive per site (ALSACE,
     ARM, SUDOUE-4, ... 29 sites; the URL list is in github.com/piclem/sen2venus-pytorch-dataset,
     ``sen2venus/dataset/sen2venus.py``).  256 x 256 patches at 5 m.
[S]  github.com/hachreak/swin2-mose (IMPLabUniPr), ``README.md``: quotes the paper's file
     list ``{id}_05m_b5b6b7b8a.pt`` (5 m, 256 x 256, VENµS) and ``{id}_20m_b5b6b7b8a.pt``
     (20 m, 64 x 64, Sentinel-2) and reports the real names differ:
     ``ALSACE_C_32ULU_2018-02-14_05m_b4b5b6b8a.pt`` / ``..._20m_b4b5b6b8a.pt``;
     ``scripts/sen2venus/split.py`` finds ``index.csv`` in each site folder, reads it with a
     whitespace separator and counts patches with its ``nb_patches`` column;
     ``scripts/sen2venus/rebuild.py`` loads every ``tensor_*`` column's file with
     ``torch.load`` and takes patch ``index`` along the first axis, and uses the ``date``
     column; ``cfgs/sen2venus_4x.yml`` / ``cfgs/sen2venus_exp4_2x_v2.yml`` name the columns
     ``tensor_05m_b2b3b4b8``, ``tensor_10m_b2b3b4b8``, ``tensor_05m_b5b6b7b8a``,
     ``tensor_20m_b5b6b7b8a``, give input shapes [4, 128, 128] (10 m) and [4, 64, 64]
     (20 m), and per-band statistics in integer digital numbers: means 444 716 813 2603
     (B2 B3 B4 B8) and 1181 2150 2501 2794 (B5 B6 B7 B8A), minima down to -8687, maxima up to
     21622.  Those means are s2sr's reflectance means (``bands.MEAN``) x 10000 (B05 0.125,
     B06 0.218, B07 0.252, B8A 0.282; B04 would be 0.089): the files named ``b4b5b6b8a``
     hold B5 B6 B7 B8A, and values are reflectance x 10000, negative values included.
[L]  github.com/piclem/sen2venus-pytorch-dataset, ``sen2venus/dataset/sen2venus.py``: site
     folder holding ``*_10m_b2b3b4b8.pt`` / ``*_05m_b2b3b4b8.pt`` / ``*_20m_b4b5b6b8a.pt`` /
     ``*_05m_b4b5b6b8a.pt`` per acquisition, patches stacked on the first axis, ``SCALE =
     10000.0``; a ``<prefix>_patches.gpkg`` per acquisition holds the footprints (not read
     here).
[T]  CESBIO's torchsisr ``dataset.py`` (AGPL; read for facts, no code taken; seen through code
     search, repository name not shown): reads ``<site>/index.csv`` with ``sep="\\t"``, one row
     per patch, columns ``b2b3b4b8_10m``, ``b2b3b4b8_05m``, ``b5b6b7b8a_20m``,
     ``b5b6b7b8a_05m`` and ``b11b12_20m`` (bands B2 B3 B4 B8 / B5 B6 B7 B8A / B11 B12), each a
     GeoTIFF opened as ``/vsizip/<site>/<cell>``; the training code divides by 10000.
[H]  huggingface.co/datasets/tacofoundation/sen2venus (dataset card): "Modifications in
     Version 2.0.0: all patches are stored in individual geoTIFF files with proper
     georeferencing and grouped in zip files per site and per category; the dataset now
     includes 20-meter resolution SWIR bands B11 and B12 ... no high-resolution reference for
     these bands".  Third-party readers of that version (seen through code search) split the
     cells at ``.zip/`` (``ALSACE_2018-02-14_32ULU_b2b3b4b8_10m.zip/<name>.tif``) and name the
     files ``<SITE>_<patch>_<date>_<tile>_<bands>_<res>.tif``.
[E]  github.com/Evoland-Land-Monitoring-Evolution/sentinel2_superresolution ``README.org``:
     the EVOLAND network was trained on SEN2VENµS "complimented with B11 and B12 patches".

Layouts read (detected from the columns of ``index.csv``)
---------------------------------------------------------
``"pt"`` (Zenodo 1.x, [P] [S] [L]): ``<SITE>/index.csv`` (tab-separated, any extra columns
ignored) with one row per acquisition and the columns ``nb_patches``, ``date`` (optional here:
taken from the file name when absent) and the four ``tensor_*`` columns above, each naming a
file of the site folder saved with ``torch.save``: a tensor ``[nb_patches, 4, H, W]``.
``"zip"`` (2.0.0 with B11/B12, [T] [H]): ``<SITE>/index.csv`` (tab-separated) with one row
per patch and the five columns of [T], each ``<inner>.zip/<path>.tif`` relative to the site
folder (the inner zips are read in place; a plain relative ``.tif`` path is accepted too).

Not verified (no real file could be opened here), so the reader is tolerant:
- the stored dtype: third-party loaders say int16; the reader scales from the dtype instead
  (``to_reflectance``): integers are digital numbers (/ 10000), floats whose largest magnitude
  exceeds ``FLOAT_DN_THRESHOLD`` are digital numbers too, smaller floats are reflectance
  already; ``scale=`` forces a factor;
- the full column set and separator of ``index.csv``: tabs are used when the header has one,
  runs of whitespace otherwise, and a leading unnamed index column is allowed;
- the 2.0.0 ``index.csv`` may have a date column: ``date`` is used when present, otherwise the
  first ``YYYY-MM-DD`` in the 10 m file name.

Values are returned as is: negative reflectances (present in the data, [S]) are not clipped
and nothing is masked (the dataset keeps valid patches only [P]).  Grids are edge-aligned:
a 2h x 2w patch at 5 m, h x w at 10 m and h/2 x w/2 at 20 m cover the same ground.
"""

import csv
import re
import zipfile
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..bands import BANDS, BANDS_10M, BANDS_20M, MEAN, REFLECTANCE_SCALE

PathLike = Union[str, Path]
Item = Dict[str, Union[torch.Tensor, str]]
Upsample = Callable[[torch.Tensor, int], torch.Tensor]

#: Sentinel-2 bands of each item tensor, in channel order (the models' order: these three
#: concatenated are ``BANDS``, which the sample relies on): the 10 m bands, the 20 m bands with a
#: VENµS counterpart (B05 B06 B07 B8A), the SWIR ones (B11 B12, none).
S2_10M_BANDS: Tuple[str, ...] = BANDS_10M
S2_20M_BANDS: Tuple[str, ...] = BANDS_20M[:4]
S2_SWIR_BANDS: Tuple[str, ...] = BANDS_20M[4:]
#: Bands with a 5 m VENµS reference, in the order of ``training_sample``'s target.
TARGET_BANDS: Tuple[str, ...] = S2_10M_BANDS + S2_20M_BANDS

INDEX_FILE = "index.csv"
#: Float arrays whose largest |value| exceeds this are digital numbers (reflectance x 10000):
#: reflectance stays below ~3, a valid patch in digital numbers peaks far above 10.
FLOAT_DN_THRESHOLD: float = 10.0

#: Item key -> index.csv column, layout "pt" (Zenodo 1.x; file names say b4b5b6b8a, see [S]).
PT_COLUMNS: Dict[str, str] = {
    "s2_10m": "tensor_10m_b2b3b4b8",
    "venus_10m_bands": "tensor_05m_b2b3b4b8",
    "s2_20m": "tensor_20m_b5b6b7b8a",
    "venus_20m_bands": "tensor_05m_b5b6b7b8a",
}
PT_COUNT_COLUMN = "nb_patches"
#: Item key -> index.csv column, layout "zip" (2.0.0).
ZIP_COLUMNS: Dict[str, str] = {
    "s2_10m": "b2b3b4b8_10m",
    "venus_10m_bands": "b2b3b4b8_05m",
    "s2_20m": "b5b6b7b8a_20m",
    "venus_20m_bands": "b5b6b7b8a_05m",
}
ZIP_SWIR_COLUMN = "b11b12_20m"
DATE_COLUMN = "date"
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def to_reflectance(x: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """Stored values -> float32 surface reflectance (same shape, device).

    ``scale`` given: ``x / scale``.  Otherwise detected from the dtype: integers are digital
    numbers (``/ REFLECTANCE_SCALE``); floats are digital numbers when their largest magnitude
    exceeds ``FLOAT_DN_THRESHOLD``, reflectance already otherwise.
    """
    y = x.to(torch.float32)
    if scale is None:
        is_dn = not x.dtype.is_floating_point or (y.numel() > 0 and float(y.abs().amax()) > FLOAT_DN_THRESHOLD)
        scale = REFLECTANCE_SCALE if is_dn else 1.0
    return y / scale if scale != 1.0 else y


def bicubic_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Default upsampler: torch bicubic (a = -0.75), edge-aligned grids; ``[B, C, H, W]``."""
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)


def _read_index(path: Path) -> Tuple[List[str], List[Dict[str, str]]]:
    """Header and rows of an index.csv (tab-separated, or whitespace when the header has no tab)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")

    def split(line: str) -> List[str]:
        return [c.strip() for c in (next(csv.reader([line], delimiter="\t")) if "\t" in lines[0] else line.split())]

    header = split(lines[0])
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = split(line)
        names = [""] + header if len(cells) == len(header) + 1 else header  # unnamed index column
        if len(cells) != len(names):
            raise ValueError(f"{path}, line {number}: {len(cells)} fields, header has {len(header)}")
        rows.append(dict(zip(names, cells)))
    return header, rows


def _detect_layout(site_dir: Path, header: Sequence[str]) -> str:
    """``"pt"`` or ``"zip"`` from the index columns; a ValueError naming what is missing otherwise."""
    columns = set(header)
    missing_pt = [c for c in [PT_COUNT_COLUMN, *PT_COLUMNS.values()] if c not in columns]
    missing_zip = [c for c in ZIP_COLUMNS.values() if c not in columns]
    if not missing_pt:
        return "pt"
    if not missing_zip:
        return "zip"
    raise ValueError(
        f"{site_dir / INDEX_FILE} is not a SEN2VENµS index: it lacks the columns {missing_pt} "
        f"(Zenodo 1.x .pt layout) or {missing_zip} (2.0.0 zip/GeoTIFF layout); it has {list(header)}")


def _date_of(row: Dict[str, str], name: str) -> str:
    """The row's ``date`` column, else the first YYYY-MM-DD in ``name``, else ``""``."""
    if row.get(DATE_COLUMN):
        return row[DATE_COLUMN]
    match = _DATE_RE.search(Path(name).name)
    return match.group(0) if match else ""


def _load_pt(path: Path) -> torch.Tensor:
    """A ``torch.save``-d tensor, memory-mapped when the file allows it (acquisition files are
    hundreds of MB; only the patches read are paged in)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        data = torch.load(path, map_location="cpu", weights_only=True)
    data = torch.as_tensor(data)
    if data.ndim != 4:
        raise ValueError(f"{path}: expected a [patches, bands, H, W] tensor, got shape {tuple(data.shape)}")
    return data


def _zip_parts(site_dir: Path, ref: str) -> Tuple[Path, Optional[str]]:
    """``inner.zip/path.tif`` -> (site_dir/inner.zip, "path.tif"); a plain path -> (file, None)."""
    if ".zip/" in ref:
        archive, member = ref.split(".zip/", 1)
        return site_dir / f"{archive}.zip", member
    return site_dir / ref, None


def _read_tif(site_dir: Path, ref: str) -> torch.Tensor:
    """One patch GeoTIFF ``[bands, H, W]`` of the 2.0.0 layout, read inside its zip by GDAL."""
    try:
        import rasterio
    except ImportError as error:  # only the 2.0.0 layout needs it
        raise ImportError("the SEN2VENµS zip/GeoTIFF layout needs rasterio (pip install rasterio)") from error
    archive, member = _zip_parts(site_dir, ref)
    path = f"/vsizip/{archive.resolve().as_posix()}/{member}" if member is not None else str(archive)
    with rasterio.open(path) as ds:
        return torch.from_numpy(ds.read())


class Sen2VenusSite(Dataset):
    """The patches of one SEN2VENµS site folder (layout ``"pt"`` or ``"zip"``, see the module doc).

    Each item is a dict of float32 reflectance tensors (``h, w`` the 10 m patch size):

    - ``s2_10m`` ``[4, h, w]``: Sentinel-2 B02 B03 B04 B08 at 10 m;
    - ``venus_10m_bands`` ``[4, 2h, 2w]``: their VENµS reference at 5 m;
    - ``s2_20m`` ``[4, h/2, w/2]``: Sentinel-2 B05 B06 B07 B8A at 20 m;
    - ``venus_20m_bands`` ``[4, 2h, 2w]``: their VENµS reference at 5 m;
    - ``s2_b11b12`` ``[2, h/2, w/2]``: Sentinel-2 B11 B12 at 20 m, only when the site has them
      (layout ``"zip"`` with a ``b11b12_20m`` column; there is no 5 m reference for them);

    plus ``site`` (folder name), ``date`` (YYYY-MM-DD) and ``patch`` (an id: ``site/file#i`` for
    patch ``i`` of an acquisition file, ``site/<inner>.zip/<name>.tif`` for a GeoTIFF).

    Args:
        site_dir: the site folder (holding ``index.csv``).
        scale: divisor from stored values to reflectance; ``None`` detects it (``to_reflectance``).
        cache_size: acquisition tensors kept open (layout ``"pt"``), per worker.

    Raises:
        ValueError: the folder is not in either layout; the message names what is missing.
    """

    def __init__(self, site_dir: PathLike, scale: Optional[float] = None, cache_size: int = 4) -> None:
        self.site_dir = Path(site_dir)
        self.site = self.site_dir.name
        self.scale = scale
        self.cache_size = max(1, cache_size)
        self._cache: "OrderedDict[Path, torch.Tensor]" = OrderedDict()
        self._members: Dict[Path, set] = {}
        index = self.site_dir / INDEX_FILE
        if not self.site_dir.is_dir():
            raise ValueError(f"SEN2VENµS site folder {self.site_dir} does not exist")
        if not index.is_file():
            raise ValueError(f"{self.site_dir} is not a SEN2VENµS site folder: {INDEX_FILE} is missing")
        header, self._rows = _read_index(index)
        self.layout = _detect_layout(self.site_dir, header)
        self.has_swir = self.layout == "zip" and ZIP_SWIR_COLUMN in header
        self._columns = dict(PT_COLUMNS if self.layout == "pt" else ZIP_COLUMNS)
        if self.has_swir:
            self._columns["s2_b11b12"] = ZIP_SWIR_COLUMN
        self._patches = self._list_patches()

    def _list_patches(self) -> List[Tuple[int, int]]:
        """(row, patch in the row's files) for every patch, after checking the files exist."""
        patches: List[Tuple[int, int]] = []
        for r, row in enumerate(self._rows):
            for column in self._columns.values():
                self._check_exists(row[column], column)
            if self.layout == "pt":
                count = row[PT_COUNT_COLUMN]
                if not count.isdigit():
                    raise ValueError(f"{self.site_dir / INDEX_FILE}, row {r}: {PT_COUNT_COLUMN} is {count!r}")
                patches.extend((r, i) for i in range(int(count)))
            else:
                patches.append((r, 0))
        return patches

    def _check_exists(self, ref: str, column: str) -> None:
        """ValueError naming the file (or zip member) a cell points to when it is missing."""
        path, member = _zip_parts(self.site_dir, ref)
        if not ref or not path.is_file():
            raise ValueError(f"{self.site_dir}: {INDEX_FILE} column {column} names {ref!r}, but {path} is missing")
        if member is not None:
            if path not in self._members:  # read each zip's directory once
                with zipfile.ZipFile(path) as archive:
                    self._members[path] = set(archive.namelist())
            if member not in self._members[path]:
                raise ValueError(f"{self.site_dir}: {INDEX_FILE} column {column} names {ref!r}, "
                                 f"but {path.name} has no member {member!r}")

    def __len__(self) -> int:
        return len(self._patches)

    def _acquisition(self, name: str) -> torch.Tensor:
        """An acquisition tensor ``[patches, 4, H, W]`` (layout "pt"), through a small LRU cache."""
        path = self.site_dir / name
        if path not in self._cache:
            self._cache[path] = _load_pt(path)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(path)
        return self._cache[path]

    def _raw(self, row: Dict[str, str], column: str, patch: int) -> torch.Tensor:
        """Stored values of one patch ``[bands, H, W]`` for one column."""
        if self.layout == "zip":
            return _read_tif(self.site_dir, row[column])
        data = self._acquisition(row[column])
        if patch >= data.shape[0]:
            raise ValueError(f"{self.site_dir / row[column]} holds {data.shape[0]} patches, "
                             f"{INDEX_FILE} says {row[PT_COUNT_COLUMN]}")
        return data[patch]

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"patch {index} out of range for {len(self)} patches of {self.site}")
        r, patch = self._patches[index]
        row = self._rows[r]
        item: Item = {key: to_reflectance(self._raw(row, column, patch), self.scale)
                      for key, column in self._columns.items()}
        name = row[self._columns["s2_10m"]]
        _check_shapes(item, f"{self.site_dir}/{name}")
        patch_id = f"{self.site}/{name}#{patch}" if self.layout == "pt" else f"{self.site}/{name}"
        item.update(site=self.site, date=_date_of(row, name), patch=patch_id)
        return item


def _check_shapes(item: Item, where: str) -> None:
    """ValueError unless the item's tensors have the paired SEN2VENµS shapes."""
    c, h, w = item["s2_10m"].shape
    expected = {
        "s2_10m": (4, h, w), "venus_10m_bands": (4, 2 * h, 2 * w),
        "s2_20m": (4, h // 2, w // 2), "venus_20m_bands": (4, 2 * h, 2 * w), "s2_b11b12": (2, h // 2, w // 2),
    }
    if h % 2 or w % 2:
        raise ValueError(f"{where}: 10 m patch {h}x{w} is not even")
    for key, shape in expected.items():
        if key in item and tuple(item[key].shape) != shape:
            raise ValueError(f"{where}: {key} has shape {tuple(item[key].shape)}, expected {shape}")


def find_sites(path: PathLike) -> List[Path]:
    """Site folders at ``path``: itself if it holds ``index.csv``, else its sub-folders that do."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        return [path]
    sites = sorted(p for p in path.iterdir() if (p / INDEX_FILE).is_file()) if path.is_dir() else []
    if not sites:
        raise ValueError(f"no SEN2VENµS site under {path}: neither it nor a sub-folder holds {INDEX_FILE}")
    return sites


class Sen2Venus(Dataset):
    """SEN2VENµS patches of several sites, concatenated (items as ``Sen2VenusSite``'s).

    Args:
        paths: site folders and/or folders of site folders (``find_sites`` on each).
        scale, cache_size: as ``Sen2VenusSite``.
    """

    def __init__(self, paths: Union[PathLike, Sequence[PathLike]], scale: Optional[float] = None,
                 cache_size: int = 4) -> None:
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        folders = [site for p in paths for site in find_sites(p)]
        self.sites = [Sen2VenusSite(f, scale=scale, cache_size=cache_size) for f in folders]
        self._ends: List[int] = []
        total = 0
        for site in self.sites:
            total += len(site)
            self._ends.append(total)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> Item:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"patch {index} out of range for {len(self)} patches")
        s = bisect_right(self._ends, index)
        return self.sites[s][index - (self._ends[s - 1] if s else 0)]


def training_sample(item: Item, upsample: Optional[Upsample] = None, missing_swir: str = "error") -> Item:
    """The model's 10-band training sample from a ``Sen2VenusSite`` item.

    Args:
        item: one item (tensors ``[C, H, W]``).
        upsample: ``upsample(x, factor)`` on ``[B, C, H, W]`` bringing the 20 m bands to 10 m
            (s2sr passes ``degradation.cubic_upsample``); default ``bicubic_upsample``.
        missing_swir: for items without B11/B12 (the Zenodo 1.x layout): ``"error"`` raises a
            ValueError, ``"mean"`` fills those two inputs with their normalisation mean
            (``bands.MEAN``, i.e. 0 after normalisation) and clears them in ``input_mask``.

    Returns:
        ``input`` ``[10, h, w]`` at 10 m in ``BANDS`` order (B02 B03 B04 B08 B05 B06 B07 B8A
        B11 B12); ``target`` ``[8, 2h, 2w]`` at 5 m in ``TARGET_BANDS`` order (= ``BANDS[:8]``);
        ``band_mask`` ``[10]`` (1 where a 5 m target exists, 0 for B11 B12); ``input_mask``
        ``[10]`` (0 for filled inputs); ``site``, ``date``.  Tensors follow ``s2_10m``'s device
        and dtype.
    """
    if missing_swir not in ("error", "mean"):
        raise ValueError(f"missing_swir must be 'error' or 'mean', got {missing_swir!r}")
    s2_10m = item["s2_10m"]
    h, w = s2_10m.shape[-2:]
    like = dict(device=s2_10m.device, dtype=s2_10m.dtype)
    swir = item.get("s2_b11b12")
    if swir is None and missing_swir == "error":
        raise ValueError(f"{item.get('patch', 'item')} has no B11/B12 input (Zenodo 1.x layout); "
                         "pass missing_swir='mean' to fill them")
    coarse = item["s2_20m"] if swir is None else torch.cat([item["s2_20m"], swir])
    fine = (upsample or bicubic_upsample)(coarse.to(**like)[None], 2)[0]
    if tuple(fine.shape) != (coarse.shape[0], h, w):
        raise ValueError(f"upsample returned {tuple(fine.shape)}, expected {(coarse.shape[0], h, w)}")
    input_mask = torch.ones(len(BANDS), **like)
    if swir is None:
        fill = torch.tensor(MEAN[-2:], **like)[:, None, None].expand(2, h, w)
        fine = torch.cat([fine, fill])
        input_mask[-2:] = 0
    band_mask = torch.tensor([float(b in TARGET_BANDS) for b in BANDS], **like)
    return {
        "input": torch.cat([s2_10m, fine]),
        "target": torch.cat([item["venus_10m_bands"], item["venus_20m_bands"]]).to(**like),
        "band_mask": band_mask,
        "input_mask": input_mask,
        "site": item.get("site", ""),
        "date": item.get("date", ""),
    }
