"""Run s2sr's openEO process (the committed UDP JSON) on the local engine, from Python.

The same process graph a backend runs, executed here over the sample scene shipped with s2sr
(a 2.56 km Sentinel-2 L1C crop, EPSG:32618).  Usage::

    python examples/run_local.py                        # a 1 km area of the sample -> ./s2sr_example/
    python examples/run_local.py --bbox -75.705 37.73 -75.695 37.74 --out my_folder

Your own data: ``catalogue.register_files("SENTINEL2_L2A", ["scene.tif"])`` (the ten bands in
one GeoTIFF / NetCDF, or a 10 m and a 20 m file) and ``"product": "SENTINEL2_L2A"``.
"""

import argparse
from pathlib import Path

from s2sr.deploy.local import LocalEngine, collection_dates, sample_catalogue, to_geotiff

# A 1.2 km square inside the sample scene (UTM 18N metres; the scene spans 437020-439580 E).
DEFAULT_BBOX = {"west": 437500, "south": 4176500, "east": 438700, "north": 4177700, "crs": 32618}


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"), help="extent in EPSG:4326")
    parser.add_argument("--out", type=Path, default=Path("s2sr_example"))
    args = parser.parse_args(argv)

    catalogue = sample_catalogue()  # SENTINEL2_L1C = the shipped sample scene
    bbox = DEFAULT_BBOX if args.bbox is None else dict(zip(("west", "south", "east", "north"), args.bbox), crs=4326)
    arguments = {
        "product": "SENTINEL2_L1C",
        "spatial_extent": bbox,
        "temporal_extent": collection_dates(catalogue, "SENTINEL2_L1C"),
    }
    engine = LocalEngine(catalogue, progress=True)
    execution = engine.run_udp(arguments=arguments)  # default: deploy/sentinel2_superresolution.json
    sr = execution.result  # [t, bands, y, x] at 5 m, float32, NaN no-data
    print(f"{dict(sr.sizes)} at 5 m in {execution.seconds:.1f} s; windows: {execution.stats['apply_neighborhood'][0]['windows']}")

    args.out.mkdir(parents=True, exist_ok=True)
    path = to_geotiff(sr.isel(t=0), args.out / "sr_5m.tif")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
