"""Use the public s2sr UDP from another process graph, by its URL.

A UDP registered with ``s2sr-deploy register --public`` has a public URL (the ``canonical``
link the backend returns, ``.../processes/u:<user>/sentinel2_superresolution``).  Any openEO
user on that backend can call it by URL as the process's ``namespace``, without installing
s2sr, and keep processing its output (here: an optional NDVI at 5 m)::

    python examples/udp_by_url.py \\
        --udp-url https://openeo.dataspace.copernicus.eu/openeo/1.2/processes/u:USER/sentinel2_superresolution \\
        --bbox 5.05 51.21 5.08 51.23 --dates 2023-06-01 2023-06-15 [--ndvi] \\
        [--run --backend https://openeo.dataspace.copernicus.eu --out results/]

Without ``--run`` it prints the process graph, built offline: it connects to nothing (no
backend, no login, nothing executes).  With ``--run`` it connects to ``--backend``, logs in
(OIDC), starts a batch job and downloads the results.  The job options: the UDP's
``default_job_options`` where its document carries them (a JSON hosted at a static URL, as the
APEx catalogue does); where the backend dropped them (openeo-python-driver does), the dependency
archives from the UDP's ``related`` zip links (``<url>#s2sr_deps``, ``...#onnx_deps``) and the
memory options below, which ``s2sr.deploy.udp.job_options`` computes (a test keeps them equal).
``--archive-url`` names s2sr's dependency archive where the UDP carries none.

Needs only the ``openeo`` client.
"""

import argparse
import json
from typing import Any, Dict, List, Optional, Sequence

import openeo
import requests
from openeo.rest.datacube import DataCube
from openeo.rest.graph_building import PGNode

UDP_ID = "sentinel2_superresolution"
ARCHIVE_DIR = "s2sr_deps"  # the folder the UDF puts on sys.path; the archive URL's #fragment
#: the UDP's memory job options (s2sr.deploy.udp.job_options: two 512 px windows at once per 2-core
#: executor, each at its measured peak), for backends that drop a UDP's default_job_options
MEMORY_OPTIONS = {"executor-memory": "2304m", "executor-memoryOverhead": "8960m", "python-memory": "disable",
                  "executor-cores": 2, "task-cpus": 1}


def superresolved(connection: Optional[openeo.Connection], udp_url: str, spatial_extent: Dict[str, Any],
                  temporal_extent: Sequence[str], product: str = "SENTINEL2_L2A", **arguments: Any) -> DataCube:
    """The UDP's output cube: the ten bands at 5 m over ``spatial_extent`` and ``temporal_extent``.

    ``arguments``: further UDP parameters (``model``, ``precision``, ``runtime``,
    ``max_cloud_cover``, ``radiometric_offset``).  The process is referenced by URL (``namespace=udp_url``); the
    backend fetches its definition from there.  ``connection`` None: a graph built offline (printable,
    not executable), what ``connection.datacube_from_process`` builds, without a connection.
    """
    arguments = dict(spatial_extent=spatial_extent, temporal_extent=list(temporal_extent), product=product, **arguments)
    if connection is None:
        return DataCube(graph=PGNode(UDP_ID, namespace=udp_url, arguments=arguments), connection=None)
    return connection.datacube_from_process(UDP_ID, namespace=udp_url, **arguments)


def build(connection: Optional[openeo.Connection], udp_url: str, bbox: Sequence[float], dates: Sequence[str],
          product: str = "SENTINEL2_L2A", ndvi: bool = False, output_format: str = "GTiff") -> DataCube:
    """A whole graph using the UDP: super-resolve, optionally NDVI, save.  ``bbox``: W S E N (degrees);
    ``connection`` None: built offline."""
    west, south, east, north = bbox
    extent = {"west": west, "south": south, "east": east, "north": north, "crs": "EPSG:4326"}
    cube = superresolved(connection, udp_url, extent, dates, product=product)
    if ndvi:
        cube = cube.ndvi(nir="B08", red="B04")
    return cube.save_result(format=output_format)


def describe(udp_url: str, timeout: float = 30) -> Dict[str, Any]:
    """The public UDP document (no login needed)."""
    response = requests.get(udp_url, timeout=timeout)
    response.raise_for_status()
    return response.json()


def job_options(udp: Dict[str, Any], archive_url: Optional[str] = None) -> Dict[str, Any]:
    """Batch job options for the UDP: its ``default_job_options``, else its ``related`` zip links
    (``<url>#<folder>``) and ``MEMORY_OPTIONS``; ``archive_url`` adds s2sr's archive where the
    UDP names none."""
    options = dict(udp.get("default_job_options") or MEMORY_OPTIONS)
    archives: List[str] = list(options.get("udf-dependency-archives") or [])
    if not archives:
        archives = [link["href"] for link in udp.get("links") or []
                    if link.get("rel") == "related" and link.get("type") == "application/zip" and "#" in link.get("href", "")]
    if archive_url and not any(a.endswith(f"#{ARCHIVE_DIR}") for a in archives):
        archives.insert(0, f"{archive_url}#{ARCHIVE_DIR}")
    if archives:
        options["udf-dependency-archives"] = archives
    return options


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", help="openEO backend URL (with --run; without it nothing connects)")
    parser.add_argument("--udp-url", required=True, help="public URL of the sentinel2_superresolution UDP")
    parser.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"), required=True)
    parser.add_argument("--dates", nargs=2, metavar=("START", "END"), required=True)
    parser.add_argument("--product", default="SENTINEL2_L2A", choices=["SENTINEL2_L2A", "SENTINEL2_L1C"])
    parser.add_argument("--ndvi", action="store_true", help="compute NDVI on the 5 m bands")
    parser.add_argument("--archive-url", help="s2sr's dependency archive URL, if the UDP names none")
    parser.add_argument("--run", action="store_true", help="log in (OIDC), run a batch job, download results")
    parser.add_argument("--out", default="s2sr_results", help="download folder for --run")
    args = parser.parse_args(argv)
    if args.run and not args.backend:
        parser.error("--run needs --backend")

    if not args.run:  # the graph alone: built offline, nothing connects
        print(build(None, args.udp_url, args.bbox, args.dates, product=args.product, ndvi=args.ndvi).to_json())
        return 0
    connection = openeo.connect(args.backend)
    cube = build(connection, args.udp_url, args.bbox, args.dates, product=args.product, ndvi=args.ndvi)
    options = job_options(describe(args.udp_url), args.archive_url)
    connection.authenticate_oidc()
    job = cube.create_job(title="s2sr by URL", job_options=options)
    job.start_and_wait()
    job.get_results().download_files(args.out)
    print(json.dumps({"job": job.job_id, "out": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
