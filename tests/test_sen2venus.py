"""The SEN2VENµS reader on the tiny synthetic fixture (tests/data/sen2venus_tiny/).

The fixture encodes checkable facts (see tests/data/make_sen2venus_fixture.py): each band's
patch mean is its s2sr normalisation mean (band order), Sentinel-2 is the block mean of the
matching VENµS bands plus small noise (pairing), values are int16 reflectance x 10000 (scaling).
"""

import importlib.util
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from s2sr.training.bands import BANDS, MEAN
from s2sr.training.data.sen2venus import (
    FLOAT_DN_THRESHOLD, TARGET_BANDS, Sen2Venus, Sen2VenusSite, bicubic_upsample, find_sites, to_reflectance,
    training_sample,
)

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "sen2venus_tiny"
V1, V2 = FIXTURE / "v1", FIXTURE / "v2"
TOL_MEAN = 2e-3  # closest band means that could be swapped within one tensor differ by >= 5e-3


def _generator():
    spec = importlib.util.spec_from_file_location("make_sen2venus_fixture", DATA / "make_sen2venus_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset() -> Sen2Venus:
    return Sen2Venus([V1, V2])


@pytest.fixture(scope="module")
def items(dataset):
    return [dataset[i] for i in range(len(dataset))]


# --- the fixture itself -------------------------------------------------------------------------

def _tif(payload: bytes):
    with rasterio.io.MemoryFile(payload) as mem, mem.open() as ds:
        return ds.read(), ds.dtypes, ds.transform, ds.crs


def _assert_same_file(a: Path, b: Path) -> None:
    """Same content: text bytes, tensors (dtype, shape, values), zips member by member (pixels, georef)."""
    if a.suffix == ".pt":
        ta, tb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        assert ta.dtype == tb.dtype and torch.equal(ta, tb), a
    elif a.suffix == ".zip":
        with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
            assert za.namelist() == zb.namelist(), a
            for name in za.namelist():
                ra, rb = _tif(za.read(name)), _tif(zb.read(name))
                assert np.array_equal(ra[0], rb[0]) and ra[1:] == rb[1:], f"{a}/{name}"
    else:
        assert a.read_bytes() == b.read_bytes(), a


def _files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_generator_is_idempotent_and_matches_committed_fixture(tmp_path):
    make = _generator().make_fixture
    out = make(tmp_path / "fx")
    first = {p: (out / p).read_bytes() for p in _files(out)}
    (out / "v1" / "stale.txt").write_text("left over")
    make(out)  # a re-run replaces its own folders: same files, same bytes
    assert {p: (out / p).read_bytes() for p in _files(out)} == first
    assert _files(out) == _files(FIXTURE), "committed fixture differs from the script's output"
    for p in _files(out):
        _assert_same_file(FIXTURE / p, out / p)
    assert sum((FIXTURE / p).stat().st_size for p in _files(FIXTURE)) < 200_000


# --- reading -------------------------------------------------------------------------------------

def test_sites_layouts_and_lengths(dataset):
    summary = [(s.site, s.layout, s.has_swir, len(s)) for s in dataset.sites]
    assert summary == [("ALSACE", "pt", False, 2), ("SUDOUE-4", "pt", False, 3), ("ARM", "zip", True, 2)]
    assert len(dataset) == 7
    assert [p.name for p in find_sites(V1)] == ["ALSACE", "SUDOUE-4"]
    assert find_sites(V2 / "ARM") == [V2 / "ARM"]


def test_item_shapes_dtype_and_metadata(items):
    dates = [it["date"] for it in items]
    assert dates == ["2018-02-14"] * 2 + ["2018-04-02"] * 2 + ["2018-05-17"] + ["2019-06-11"] * 2
    assert [it["site"] for it in items] == ["ALSACE"] * 2 + ["SUDOUE-4"] * 3 + ["ARM"] * 2
    assert len({it["patch"] for it in items}) == len(items)
    for it in items:
        h, w = it["s2_10m"].shape[-2:]
        assert (h, w) == (12, 12)
        assert it["venus_10m_bands"].shape == it["venus_20m_bands"].shape == (4, 2 * h, 2 * w)
        assert it["s2_20m"].shape == (4, h // 2, w // 2)
        assert ("s2_b11b12" in it) == (it["site"] == "ARM")
        if "s2_b11b12" in it:
            assert it["s2_b11b12"].shape == (2, h // 2, w // 2)
        assert all(v.dtype == torch.float32 for v in it.values() if isinstance(v, torch.Tensor))


def test_v1_values_are_stored_int16_over_10000(dataset):
    site = dataset.sites[1]  # SUDOUE-4: second acquisition holds one patch -> item 2 is its patch 0
    raw = torch.load(V1 / "SUDOUE-4" / "SUDOUE-4_C_31TCJ_2018-05-17_05m_b4b5b6b8a.pt", weights_only=True)
    assert raw.dtype == torch.int16 and raw.shape == (1, 4, 24, 24)
    assert torch.equal(site[2]["venus_20m_bands"], raw[0].float() / 10000.0)
    raw10 = torch.load(V1 / "SUDOUE-4" / "SUDOUE-4_C_31TCJ_2018-04-02_10m_b2b3b4b8.pt", weights_only=True)
    assert torch.equal(site[1]["s2_10m"], raw10[1].float() / 10000.0)


def test_v2_values_are_stored_int16_over_10000(dataset):
    site = dataset.sites[2]
    ref = "ARM_2019-06-11_14SQB_b11b12_20m.zip/ARM_1_2019-06-11_14SQB_b11b12_20m.tif"
    with zipfile.ZipFile(V2 / "ARM" / ref.split("/")[0]) as z:
        raw, dtypes, _, _ = _tif(z.read(ref.split("/")[1]))
    assert set(dtypes) == {"int16"}
    assert torch.equal(site[1]["s2_b11b12"], torch.from_numpy(raw).float() / 10000.0)


def test_band_order_from_band_means(items):
    """Each tensor's per-band means are the fixture's band levels, in s2sr band order."""
    groups = {"s2_10m": BANDS[:4], "venus_10m_bands": BANDS[:4], "s2_20m": BANDS[4:8],
              "venus_20m_bands": BANDS[4:8], "s2_b11b12": BANDS[8:]}
    for it in items:
        for key, bands in groups.items():
            if key in it:
                expected = torch.tensor([MEAN[BANDS.index(b)] for b in bands])
                assert torch.allclose(it[key].mean((1, 2)), expected, atol=TOL_MEAN), (it["patch"], key)


def test_sentinel2_pairs_with_its_own_venus_patch(items):
    """S2 ~ block mean of the paired VENµS patch; another patch's VENµS is far off (test can fail)."""
    def error(s2, venus, k):
        return float((F.avg_pool2d(venus[None], k)[0] - s2).abs().mean())

    for i, it in enumerate(items):
        other = items[(i + 1) % len(items)]
        assert error(it["s2_10m"], it["venus_10m_bands"], 2) < 2e-3
        assert error(it["s2_20m"], it["venus_20m_bands"], 4) < 2e-3
        assert error(it["s2_10m"], other["venus_10m_bands"], 2) > 5e-3


# --- the training sample -------------------------------------------------------------------------

def test_training_sample_layout(items):
    it = items[-1]  # ARM: has B11 B12
    sample = training_sample(it)
    h, w = it["s2_10m"].shape[-2:]
    assert sample["input"].shape == (10, h, w) and sample["target"].shape == (8, 2 * h, 2 * w)
    assert TARGET_BANDS == BANDS[:8]
    assert sample["band_mask"].tolist() == [1.0] * 8 + [0.0] * 2
    assert sample["input_mask"].tolist() == [1.0] * 10
    assert torch.equal(sample["input"][:4], it["s2_10m"])
    twenty = torch.cat([it["s2_20m"], it["s2_b11b12"]])[None]
    assert torch.allclose(sample["input"][4:], bicubic_upsample(twenty, 2)[0])
    assert torch.equal(sample["target"], torch.cat([it["venus_10m_bands"], it["venus_20m_bands"]]))
    assert torch.allclose(sample["input"].mean((1, 2)), torch.tensor(MEAN), atol=TOL_MEAN)
    assert (sample["site"], sample["date"]) == ("ARM", "2019-06-11")


def test_training_sample_uses_the_callers_upsample(items):
    calls = []

    def nearest(x, factor):
        calls.append((tuple(x.shape), factor))
        return x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)

    it = items[-2]
    sample = training_sample(it, upsample=nearest)
    assert calls == [((1, 6, 6, 6), 2)]
    assert torch.equal(sample["input"][4:8], nearest(it["s2_20m"][None], 2)[0])
    assert torch.equal(sample["input"][8:], nearest(it["s2_b11b12"][None], 2)[0])


def test_training_sample_with_project_cubic_upsample(items):
    degradation = pytest.importorskip("s2sr.training.degradation")
    sample = training_sample(items[-1], upsample=degradation.cubic_upsample)
    assert sample["input"].shape == (10, 12, 12)
    assert torch.allclose(sample["input"].mean((1, 2)), torch.tensor(MEAN), atol=TOL_MEAN)


def test_training_sample_without_swir(items):
    it = items[0]  # Zenodo 1.x layout: no B11 B12
    with pytest.raises(ValueError, match="B11/B12"):
        training_sample(it)
    sample = training_sample(it, missing_swir="mean")
    assert sample["input"].shape == (10, 12, 12)
    assert torch.equal(sample["input"][8], torch.full((12, 12), MEAN[8]))
    assert torch.equal(sample["input"][9], torch.full((12, 12), MEAN[9]))
    assert sample["input_mask"].tolist() == [1.0] * 8 + [0.0] * 2
    assert sample["band_mask"].tolist() == [1.0] * 8 + [0.0] * 2


def test_dataloader_batches_v1_items():
    loader = torch.utils.data.DataLoader(Sen2Venus(V1), batch_size=2, shuffle=False)
    batch = next(iter(loader))
    assert batch["s2_10m"].shape == (2, 4, 12, 12) and batch["venus_20m_bands"].shape == (2, 4, 24, 24)
    assert batch["site"] == ["ALSACE", "ALSACE"]


# --- scaling -------------------------------------------------------------------------------------

def test_to_reflectance_detects_the_scaling():
    dn = torch.tensor([[-120, 0, 2500, 12000]], dtype=torch.int16)
    assert torch.equal(to_reflectance(dn), dn.float() / 10000)
    assert torch.equal(to_reflectance(dn.float()), dn.float() / 10000)  # float digital numbers
    refl = torch.tensor([0.01, 0.3, 1.4, -0.02])
    assert torch.equal(to_reflectance(refl), refl)  # float reflectance: unchanged
    assert float(refl.abs().max()) < FLOAT_DN_THRESHOLD < 100
    assert torch.equal(to_reflectance(dn, scale=1.0), dn.float())  # forced


def test_float_reflectance_files_read_unchanged(tmp_path):
    site = shutil.copytree(V1 / "ALSACE", tmp_path / "ALSACE")
    for pt in site.glob("*.pt"):
        torch.save(torch.load(pt, weights_only=True).float() / 10000.0, pt)
    ours, reference = Sen2VenusSite(site)[1], Sen2VenusSite(V1 / "ALSACE")[1]
    assert torch.allclose(ours["venus_10m_bands"], reference["venus_10m_bands"], atol=1e-7)


# --- broken folders ------------------------------------------------------------------------------

def _copy(tmp_path, site=V1 / "SUDOUE-4"):
    return Path(shutil.copytree(site, tmp_path / site.name))


def test_error_missing_index(tmp_path):
    site = _copy(tmp_path)
    (site / "index.csv").unlink()
    with pytest.raises(ValueError, match="index.csv is missing"):
        Sen2VenusSite(site)
    with pytest.raises(ValueError, match="no SEN2VENµS site"):
        Sen2Venus(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        Sen2VenusSite(tmp_path / "nowhere")


def test_error_missing_tensor_file(tmp_path):
    site = _copy(tmp_path)
    (site / "SUDOUE-4_C_31TCJ_2018-05-17_20m_b4b5b6b8a.pt").unlink()
    with pytest.raises(ValueError, match=r"tensor_20m_b5b6b7b8a.*SUDOUE-4_C_31TCJ_2018-05-17_20m_b4b5b6b8a\.pt"):
        Sen2VenusSite(site)


def test_error_missing_column(tmp_path):
    site = _copy(tmp_path)
    index = site / "index.csv"
    index.write_text(index.read_text().replace("tensor_05m_b5b6b7b8a", "tensor_05m_other"))
    with pytest.raises(ValueError, match="tensor_05m_b5b6b7b8a"):
        Sen2VenusSite(site)


def test_error_patch_count_exceeds_file(tmp_path):
    site = _copy(tmp_path)
    index = site / "index.csv"
    index.write_text(index.read_text().replace("2018-05-17\t1\t", "2018-05-17\t2\t"))
    ds = Sen2VenusSite(site)
    assert len(ds) == 4
    with pytest.raises(ValueError, match="holds 1 patches"):
        ds[3]


def test_error_missing_inner_zip(tmp_path):
    site = _copy(tmp_path, V2 / "ARM")
    (site / "ARM_2019-06-11_14SQB_b11b12_20m.zip").unlink()
    with pytest.raises(ValueError, match=r"b11b12_20m.*ARM_2019-06-11_14SQB_b11b12_20m\.zip"):
        Sen2VenusSite(site)


def test_error_missing_zip_member(tmp_path):
    site = _copy(tmp_path, V2 / "ARM")
    index = site / "index.csv"
    index.write_text(index.read_text().replace("ARM_1_2019-06-11_14SQB_b5b6b7b8a_05m.tif", "ARM_9_gone.tif"))
    with pytest.raises(ValueError, match=r"b5b6b7b8a_05m.*no member 'ARM_9_gone.tif'"):
        Sen2VenusSite(site)


def test_error_wrong_shapes(tmp_path):
    site = _copy(tmp_path)
    name = "SUDOUE-4_C_31TCJ_2018-05-17_10m_b2b3b4b8.pt"
    torch.save(torch.zeros(1, 4, 10, 10, dtype=torch.int16), site / name)
    with pytest.raises(ValueError, match="venus_10m_bands has shape"):
        Sen2VenusSite(site)[2]
