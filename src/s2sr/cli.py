"""The ``s2sr`` command.

``s2sr run``: the committed UDP (``deploy/sentinel2_superresolution.json``) on the local
engine (``s2sr.deploy.local``).  With no arguments it super-resolves the shipped sample scene
(L1C, whole extent) and writes to ``./s2sr_output/``:

- ``sr_5m.tif``: the ten bands at 5 m (GeoTIFF, CRS, transform, band names);
- ``bicubic_5m.tif``: the comparison product on the same grid, GDAL cubic upsampling of the
  same 10 m input cube (the one the UDF's windows are cut from);
- ``preview.png``: input | bicubic | SR, true colour (B04 B03 B02) and red edge (B07 B06 B05);
- ``s2sr_run.json``: what ran (arguments, model, windows, seconds, files).

Several dates give one set of products per date (``sr_5m_<date>.tif`` ...).  Products are
written into a temporary folder beside ``--out`` and moved into place only when complete;
an error leaves no output folder behind.  Ctrl-C stops the run at once: one line saying how
many windows x dates were done, exit status 130, no output written (the temporary folder is
removed); a second Ctrl-C while it stops is ignored.  ``--weights FILE`` runs one's own
exported weights (``s2sr-export``) in place of the UDP's ``model``.

``s2sr evaluate``: forwards to ``s2sr.training.evaluate.main``.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Sequence

import numpy as np

from s2sr.engine.weights import MODEL_BANDS

DEFAULT_OUT = Path("s2sr_output")
RUN_FILE = "s2sr_run.json"
TRUE_COLOUR = ("B04", "B03", "B02")
RED_EDGE = ("B07", "B06", "B05")
#: the exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130
REQUIRED_BANDS = MODEL_BANDS


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


@dataclass
class RunState:
    """What a run has done so far: the line a Ctrl-C prints comes from it."""

    done: int = 0  # windows x dates finished (of the latest apply_neighborhood)
    total: int = 0
    published: bool = False

    def progress(self, done: int, total: int) -> None:
        """The engine's ``on_progress``: called from the window threads."""
        self.done, self.total = done, total

    def interrupted(self) -> str:
        if self.published:
            return "interrupted after the output was complete"
        if not self.total:
            return "interrupted before any window ran; no output written"
        return f"interrupted: {self.done} of {self.total} windows x dates done; no output written"


class Interrupts:
    """SIGINT during ``s2sr run``: the first raises ``KeyboardInterrupt`` once, every later one is
    ignored (a second Ctrl-C while the run stops aborts nothing); inside ``held()`` (the output's
    move into place) the first one waits for the block's end and is then dropped: the output is
    complete, the run ends as it would have."""

    def __init__(self) -> None:
        self.count, self.holding = 0, False
        self.previous: Any = None

    def install(self) -> "Interrupts":
        """Take over SIGINT (only the main thread can); ``restore`` gives it back."""
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1 and not self.holding:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


def _exit_now(status: int) -> NoReturn:
    """End the process now, without waiting for windows still computing in their threads (a
    network pass cannot be stopped midway and would hold the interpreter's exit for seconds):
    the output's temporary folder is already gone, the streams are flushed here."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


# --------------------------------------------------------------------------- arguments

def _run_parser(prog: str = "s2sr run") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run the s2sr openEO process (UDP) on the local engine. "
                                "No arguments: the shipped sample scene, written to ./s2sr_output/.")
    src = p.add_argument_group("input (default: the shipped sample scene, SENTINEL2_L1C)")
    src.add_argument("--input", type=Path, metavar="FILE", help="GeoTIFF or NetCDF holding the ten bands")
    src.add_argument("--input-10m", type=Path, metavar="FILE", help="GeoTIFF/NetCDF with B02 B03 B04 B08 (10 m)")
    src.add_argument("--input-20m", type=Path, metavar="FILE", help="GeoTIFF/NetCDF with B05 B06 B07 B8A B11 B12 (20 m)")
    src.add_argument("--date", help="acquisition date YYYY-MM-DD of an input file that carries none")
    src.add_argument("--product", choices=["SENTINEL2_L2A", "SENTINEL2_L1C"],
                     help="collection the input is registered as (default: L1C for the sample, L2A for --input)")
    sel = p.add_argument_group("selection")
    sel.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"), help="output extent (default: the whole input)")
    sel.add_argument("--bbox-crs", default="EPSG:4326", help="CRS of --bbox (default %(default)s)")
    sel.add_argument("--temporal", nargs=2, metavar=("START", "END"), help="dates [START, END) (default: all dates of the input)")
    sel.add_argument("--max-cloud-cover", type=float, help="skip dates with more cloud cover (percent; UDP default 50)")
    udp = p.add_argument_group("processing")
    udp.add_argument("--model", help="model name (the UDP's 'model' parameter; default: the UDP's default)")
    udp.add_argument("--weights", type=Path, metavar="FILE",
                     help="one's own weights file (TorchScript exported by s2sr-export) in place of --model")
    udp.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8", "int8_dynamic"],
                     help="network arithmetic (the UDP's 'precision'; default auto: fp32 or bf16, whichever runs faster)")
    udp.add_argument("--runtime", choices=["auto", "torch", "ncnn", "onnxruntime"],
                     help="inference runtime (the UDP's 'runtime'; default auto)")
    udp.add_argument("--swir-cap", dest="swir_cap", type=float, metavar="K",
                     help="cap on B11 / B12's detail, in units of each band's own local input contrast (the UDP's "
                          "'swir_cap'; default 2.5; 0: none)")
    udp.add_argument("--radiometric-offset", type=float, help="added to DN before scaling (-1000 for baseline >= 04.00 products)")
    udp.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler address (default: local threads)")
    udp.add_argument("--workers", type=int, help="local threads running windows (default: the CPUs available)")
    sc = p.add_argument_group("benchmark scenario (APEx format; runs on the sample scene)")
    sc.add_argument("--scenario", type=Path, metavar="FILE",
                    help="run the scenario's call of the UDP (e.g. benchmark_scenarios/sentinel2_superresolution.json) "
                         "and compare the SR product with its reference data; exit 1 where it differs")
    sc.add_argument("--scenario-id", metavar="ID", help="which scenario of the file (default: the first)")
    sc.add_argument("--write-reference", action="store_true",
                    help="write the scenario's reference files from this run instead of comparing")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default ./%(default)s/)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _catalogue(args: argparse.Namespace):
    """The catalogue and product id for the chosen input; bands checked up front."""
    from s2sr.deploy import local

    files = [args.input] if args.input else [f for f in (args.input_10m, args.input_20m) if f]
    if not files:
        return local.sample_catalogue(), args.product or local.SAMPLE_COLLECTION
    product = args.product or "SENTINEL2_L2A"
    catalogue = local.Catalogue()
    try:
        catalogue.register_files(product, files, date=args.date)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    missing = [b for b in REQUIRED_BANDS if b not in catalogue.bands(product)]
    if missing:
        raise CliError(f"the input lacks bands {missing} (it has {catalogue.bands(product)}; "
                       f"s2sr needs {list(REQUIRED_BANDS)})")
    return catalogue, product


def _check_sources(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.input and (args.input_10m or args.input_20m):
        parser.error("give either --input or --input-10m/--input-20m")
    if bool(args.input_10m) != bool(args.input_20m):
        parser.error("--input-10m and --input-20m go together")
    if args.weights and args.model:
        parser.error("give either --model or --weights")


def weights_context(path: Optional[Path]) -> Dict[str, str]:
    """``--weights FILE`` as the UDF context key ``weights``, checked before any work: the file
    exists, is a TorchScript archive whose entries pass their CRCs, describes itself (s2sr
    metadata) and, where torch is installed, loads and runs on a probe.  Empty without
    ``--weights``."""
    if path is None:
        return {}
    from s2sr.engine import weights
    from s2sr.engine.runtimes import torch_available

    path = path.resolve()
    try:
        if path.is_dir():
            raise ValueError(f"weights file {path} is a folder")
        weights.read_metadata(path)  # exists, a zip archive, valid s2sr metadata
        weights.verify_checksum(str(path), *weights.stat_key(path))  # every entry whole
        if torch_available():  # the engine's own load and probe: a broken network fails here, in one line
            from s2sr.engine.torch_runtime import load_torchscript

            load_torchscript(str(path), *weights.stat_key(path), "cpu")
    except (ValueError, OSError) as exc:
        raise CliError(f"--weights: {' '.join(str(exc).split())}") from None
    return {"weights": str(path)}


def udp_arguments(args: argparse.Namespace, catalogue, product: str) -> Dict[str, Any]:
    """The UDP's arguments from the command line; extents default to the whole input."""
    from s2sr.deploy import local

    if args.bbox is not None:
        _check_bbox(args.bbox, args.bbox_crs)
    bbox = (local.collection_extent(catalogue, product) if args.bbox is None else
            dict(zip(("west", "south", "east", "north"), args.bbox), crs=_crs_arg(args.bbox_crs)))
    arguments: Dict[str, Any] = {
        "product": product, "spatial_extent": bbox,
        "temporal_extent": list(args.temporal) if args.temporal else local.collection_dates(catalogue, product),
    }
    for name, value in (("model", args.model), ("max_cloud_cover", args.max_cloud_cover),
                        ("radiometric_offset", args.radiometric_offset), ("precision", args.precision),
                        ("runtime", args.runtime), ("swir_cap", args.swir_cap)):
        if value is not None:
            arguments[name] = value
    return arguments


def _check_bbox(bbox: Sequence[float], crs: str) -> None:
    """One line for the likeliest mistake: metres (the sample scene's and the examples' UTM)
    given with the default --bbox-crs, degrees."""
    west, south, east, north = bbox
    if str(crs).upper() in ("EPSG:4326", "4326", "WGS84", "OGC:CRS84") and \
            (max(abs(west), abs(east)) > 180 or max(abs(south), abs(north)) > 90):
        raise CliError(f"--bbox {west:g} {south:g} {east:g} {north:g} is not in degrees ({crs}, the default); "
                       "for metres give their CRS, e.g. --bbox-crs EPSG:32618")
    if west >= east or south >= north:
        raise CliError(f"--bbox must be W S E N with W < E and S < N, got {west:g} {south:g} {east:g} {north:g}")


def _crs_arg(text: str) -> Any:
    return int(text) if text.isdigit() else text


# --------------------------------------------------------------------------- products

def bicubic_product(cube10, sr):
    """GDAL cubic upsampling of the 10 m input cube onto the SR's grid (same shape, coords)."""
    import xarray
    from rasterio.warp import Resampling

    from s2sr.deploy import local

    lead = [d for d in cube10.dims if d not in ("y", "x")]
    values = local.warp_array(cube10.transpose(*lead, "y", "x").values, local.cube_grid(cube10), local.cube_grid(sr),
                              Resampling.cubic)
    coords = {**{d: cube10[d].values for d in lead if d in cube10.coords}, "y": sr.y.values, "x": sr.x.values}
    return xarray.DataArray(values, dims=lead + ["y", "x"], coords=coords, attrs=dict(sr.attrs)).transpose(*sr.dims)


def _input_crop(cube10, sr):
    """The 10 m input over the SR's extent (pixels whose centres fall inside it)."""
    from s2sr.deploy import local

    w, s, e, n = local.cube_grid(sr).bounds
    extent = {"west": w, "south": s, "east": e, "north": n, "crs": sr.attrs["crs"]}
    return local.filter_bbox({"data": cube10, "extent": extent}, None)


def _rgb(cube, bands: Sequence[str], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    data = np.stack([cube.sel(bands=b).values for b in bands], axis=-1).astype(np.float32)
    data = np.where(data <= -10000, np.nan, data)
    return np.nan_to_num(np.clip((data - lo) / np.maximum(hi - lo, 1e-6), 0, 1), nan=0.0)


def write_preview(cube10, bicubic, sr, path: Path, title: str = "") -> Path:
    """PNG: rows true colour / red edge, columns input (10 m) | bicubic | SR (5 m).

    One stretch per row (2nd-98th percentile of the bicubic per band) for all three panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from s2sr.deploy import local

    w, s, e, n = local.cube_grid(sr).bounds
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4), constrained_layout=True)
    for row, bands in enumerate((TRUE_COLOUR, RED_EDGE)):
        ref = np.stack([bicubic.sel(bands=b).values for b in bands], axis=-1)
        ref = np.where(ref <= -10000, np.nan, ref)
        lo, hi = np.nanpercentile(ref, 2, axis=(0, 1)), np.nanpercentile(ref, 98, axis=(0, 1))
        for col, (name, cube) in enumerate((("input 10 m", cube10), ("bicubic 5 m", bicubic), ("s2sr 5 m", sr))):
            ax = axes[row, col]
            ax.imshow(_rgb(cube, bands, lo, hi), extent=(w, e, s, n), interpolation="nearest")
            ax.set_title(f"{name}: {' '.join(bands)}", fontsize=10)
            ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_products(execution, arguments: Dict[str, Any], folder: Path, dtype: str = "float32",
                   model: Optional[str] = None) -> List[str]:
    """SR, bicubic and preview per date into ``folder``; returns the file names.  ``model``:
    what the preview's title names (default: the UDP's ``model`` argument)."""
    from s2sr.deploy import local

    sr = execution.result
    cube10 = neighborhood_input(execution)
    dates = [str(np.datetime64(t, "D")) for t in sr.t.values]
    files = []
    for i, date in enumerate(dates):
        tag = "" if len(dates) == 1 else f"_{date}"
        sr_i, in_i = sr.isel(t=i), cube10.isel(t=i)
        bic_i = bicubic_product(in_i, sr_i)
        local.to_geotiff(sr_i, folder / f"sr_5m{tag}.tif", dtype)
        local.to_geotiff(bic_i, folder / f"bicubic_5m{tag}.tif", dtype)
        write_preview(_input_crop(in_i, sr_i), bic_i, sr_i, folder / f"preview{tag}.png",
                      f"{arguments['product']} {date}, model {model or model_name(arguments)}")
        files += [f"sr_5m{tag}.tif", f"bicubic_5m{tag}.tif", f"preview{tag}.png"]
    return files


def neighborhood_input(execution):
    """The cube the UDP's apply_neighborhood cut its windows from (the merged 10 m cube)."""
    from s2sr.deploy.udp import load_udp_json

    graph = load_udp_json()["process_graph"]
    node = next(n for n in graph.values() if n["process_id"] == "apply_neighborhood")
    return execution.results[node["arguments"]["data"]["from_node"]]


# --------------------------------------------------------------------------- output folder

def _check_out(out: Path) -> None:
    """Before any work: refuse to replace a folder that is not an earlier s2sr output, an --out
    under a regular file, or one whose parent cannot be written."""
    import os

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / RUN_FILE).is_file())):
        raise CliError(f"{out} exists and is not an s2sr output folder: choose another --out")
    parent = out.parent
    while not parent.exists():  # the first existing folder above: where the output folder gets made
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(f"--out {out} lies under {parent}, which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"--out {out}: {parent} is not writable")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (replacing an earlier s2sr output)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / "previous")
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run(args: argparse.Namespace, state: Optional[RunState] = None, interrupts: Optional[Interrupts] = None) -> Path:
    """The run; ``state`` records its progress, ``interrupts`` holds Ctrl-C off the output's
    move into place."""
    from s2sr.deploy import local

    state = state if state is not None else RunState()
    out = args.out.resolve()
    _check_out(out)
    scenario = udp = None
    if args.scenario:
        scenario, udp, catalogue, product, arguments = _scenario_run(args)
    else:
        catalogue, product = _catalogue(args)
        arguments = udp_arguments(args, catalogue, product)
    engine = local.LocalEngine(catalogue, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet,
                               on_progress=state.progress, udf_context=weights_context(args.weights))
    _say(args, f"s2sr: running the UDP on {product} (local engine)...")
    from s2sr.engine.precision import decision_uses

    uses = decision_uses()
    try:
        execution = engine.run_udp(udp, arguments=arguments)
    except (local.ProcessError, local.ParameterError, ValueError) as exc:
        raise CliError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output folder should not be
    try:
        files = write_products(execution, arguments, tmp, model=model_name(arguments, args.weights))
        record = {"scenario": _scenario_check(scenario, tmp / "sr_5m.tif", args)} if scenario else {}
        record["auto"] = auto_decisions(uses)
        _write_run_file(tmp, args, arguments, execution, files, record)
        with interrupts.held() if interrupts is not None else contextlib.nullcontext():
            _publish(tmp, out)
            state.published = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(args, f"s2sr: wrote {', '.join(files)} to {out} in {execution.seconds:.1f} s")
    if scenario and record["scenario"].get("problems"):
        raise CliError(f"scenario {scenario['id']!r}: the SR product differs from the reference: "
                       + "; ".join(record["scenario"]["problems"][:5]) + f" (outputs in {out})")
    return out


# --------------------------------------------------------------------------- benchmark scenarios

SCENARIO_EXCLUSIVE = ("input", "input_10m", "input_20m", "date", "product", "bbox", "temporal", "max_cloud_cover",
                      "model", "weights", "precision", "runtime", "radiometric_offset", "swir_cap")


def _scenario_run(args: argparse.Namespace):
    """(scenario, UDP document, catalogue, product, arguments) of ``--scenario``: its UDP call on
    the sample scene."""
    from s2sr.deploy import local, scenario as sc

    given = [f"--{k.replace('_', '-')}" for k in SCENARIO_EXCLUSIVE if getattr(args, k) is not None]
    if given:
        raise CliError(f"--scenario takes its input and arguments from the scenario file; drop {' '.join(given)}")
    try:
        scenario = sc.select(sc.load_scenarios(args.scenario), args.scenario_id)
        _, node = sc.udp_node(scenario)
        udp = sc.resolve_udp(node, args.scenario.resolve().parent)
    except sc.ScenarioError as exc:
        raise CliError(str(exc)) from None
    arguments = json.loads(json.dumps(node["arguments"]))
    catalogue = local.sample_catalogue()
    product = arguments.get("product", "SENTINEL2_L2A")
    if product not in catalogue.collections:
        raise CliError(f"the scenario loads {product}; locally only the sample scene's {local.SAMPLE_COLLECTION} exists")
    return scenario, udp, catalogue, product, arguments


def _scenario_check(scenario: Dict[str, Any], sr_tif: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """Compare (or, with ``--write-reference``, write) the scenario's reference data."""
    from s2sr.deploy import scenario as sc

    try:
        references = sc.reference_paths(scenario, args.scenario.resolve().parent)
    except sc.ScenarioError as exc:
        raise CliError(str(exc)) from None
    if args.write_reference:
        folders = {p.parent for p in references.values()}
        if len(folders) != 1 or set(references) != {sc.STATS_FILE, sc.CROP_FILE}:
            raise CliError(f"--write-reference needs reference_data naming {sc.STATS_FILE} and {sc.CROP_FILE} in one folder")
        written = sc.write_reference(sr_tif, folders.pop())
        return {"id": scenario["id"], "reference_written": sorted(str(p) for p in written.values())}
    if not references:
        return {"id": scenario["id"], "reference": "none"}
    problems = sc.compare(sr_tif, references, scenario.get("reference_options"))
    return {"id": scenario["id"], "reference": sorted(references), "matches": not problems, "problems": problems}


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def model_name(arguments: Dict[str, Any], weights: Optional[Path] = None) -> str:
    """The model a run uses: ``--weights``' file name, else its argument, else the UDP's default."""
    from s2sr.deploy.udp import load_udp_json

    if weights is not None:
        return Path(weights).name
    if arguments.get("model"):
        return str(arguments["model"])
    return next(p.get("default", "?") for p in load_udp_json()["parameters"] if p["name"] == "model")


def _write_run_file(folder: Path, args, arguments: Dict[str, Any], execution, files: List[str],
                    extra: Optional[Dict[str, Any]] = None) -> None:
    import s2sr
    from s2sr.deploy.geopyspark import UDF_SCALA

    inputs = [str(p) for p in (args.input, args.input_10m, args.input_20m) if p] or ["s2sr sample scene"]
    if args.scenario:
        inputs = [f"s2sr sample scene (scenario {args.scenario})"]
    record = {"s2sr": s2sr.__version__, "udp": "sentinel2_superresolution", "arguments": arguments,
              "model": model_name(arguments, args.weights), "inputs": inputs,
              **({"weights": str(Path(args.weights).resolve())} if args.weights else {}),
              "executor": f"Python-Jep as the geopyspark executor runs it ({UDF_SCALA}): "
                          "a fresh namespace per window, float32 coordinates, apply_metadata first",
              "seconds": round(execution.seconds, 2), "stats": execution.stats, "files": files,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def auto_decisions(since: Optional[Dict[str, int]] = None) -> List[Dict[str, Any]]:
    """The engine's ``auto`` decisions a run used (those used after ``since``, a
    ``decision_uses()``): precision, runtime, why, on which CPU."""
    from s2sr import engine

    return [{"precision": d["precision"], "runtime": d["runtime"], "reason": d["reason"],
             "cpu": d["key"]["cpu"], "torch": d["key"]["torch"], "ncnn": d["key"]["ncnn"],
             "threads": d["key"]["threads"], "weights_sha256": d["key"]["weights_sha256"], "file": d["file"]}
            for d in engine.decisions(since)]


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


# --------------------------------------------------------------------------- entry point

USAGE = """usage: s2sr {run,evaluate} ...

  run       super-resolve with the openEO UDP on the local engine (no arguments: the sample scene)
  evaluate  Wald x2 (and x4) metrics vs GDAL cubic / B-spline on the held-out area

s2sr COMMAND --help for a command's options."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``s2sr`` with ``argv`` (default: the program's).  Called as the program (no ``argv``), a
    Ctrl-C ends the process at once (``_exit_now``); with ``argv`` it returns 130."""
    argv_given = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "evaluate":
        from s2sr.training.evaluate import main as evaluate_main

        return evaluate_main(rest)
    if command != "run":
        print(f"{USAGE}\n\ns2sr: error: unknown command {command!r}", file=sys.stderr)
        return 2
    interrupts, state = Interrupts().install(), RunState()
    try:
        parser = _run_parser()
        args = parser.parse_args(rest)
        _check_sources(args, parser)
        run(args, state, interrupts)
    except CliError as exc:
        print(f"s2sr run: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"s2sr run: {state.interrupted()}", file=sys.stderr)
        if argv_given:
            return INTERRUPTED
        _exit_now(INTERRUPTED)  # the program: windows still computing must not hold its exit
    finally:
        interrupts.restore()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
