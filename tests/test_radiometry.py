"""The L2A-like variant of the evaluation scene (training/radiometry.py)."""

import numpy as np

from s2sr.training.radiometry import dark_object_offsets, dark_object_subtraction


def _bands(seed: int = 0):
    rng = np.random.default_rng(seed)
    haze = np.array([900, 600, 400, 500, 460, 580, 610, 630, 490, 250], float)
    b10 = haze[:4, None, None] + rng.gamma(2.0, 300.0, (4, 64, 64))
    b20 = haze[4:, None, None] + rng.gamma(2.0, 300.0, (6, 32, 32))
    return b10, b20, haze


def test_offsets_follow_each_bands_dark_object():
    b10, b20, haze = _bands()
    off = dark_object_offsets(b10, b20)
    assert off.shape == (10,)
    # the 0.5th percentile sits a little above the haze floor: offsets within 150 DN of haze - 100
    assert np.all(np.abs(off - (haze - 100)) < 150), off
    assert np.argmax(off) == 0  # the blue band carries the most haze here


def test_subtraction_keeps_structure_and_stays_non_negative():
    b10, b20, _ = _bands(1)
    l10, l20, off = dark_object_subtraction(b10, b20)
    assert l10.min() >= 0 and l20.min() >= 0
    inside = b10 > off[:4, None, None]
    np.testing.assert_allclose((b10 - l10)[inside], np.broadcast_to(off[:4, None, None], b10.shape)[inside])
    assert (l10 == 0).mean() < 0.01  # only the darkest half percent reaches the floor
    assert np.median(l10[0]) < np.median(b10[0]) - 700


def test_no_offset_on_a_band_without_haze():
    b10, b20, _ = _bands(2)
    b20[-1] -= b20[-1].min()  # a band that already reaches 0 DN
    off = dark_object_offsets(b10, b20)
    assert off[-1] == 0.0
