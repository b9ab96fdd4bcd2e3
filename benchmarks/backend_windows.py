"""Per-window cost of the UDF on the geopyspark executor's path (s2sr.deploy.geopyspark).

The executor runs the UDF text in a fresh interpreter for every window (openeo-geotrellis-
extensions Udf.scala): what the UDF keeps across windows lives in the engine's modules.  This
measures, in one fresh process, the UDP's window (512 px: size 470 + 2 x 21 overlap):

- window 1: ``apply_metadata`` (its own namespace) then the first window, with the one-time
  costs (model load and checks, weights checksum, the ``auto`` decision);
- windows 2..N, each in a fresh namespace with the executor's float32 coordinates;
- warm calls: ``apply_datacube`` of the same namespace again (no exec, no new globals);
- the process's resident memory after every window.

Targets (issue 19): windows 2..N at most 1.05x a warm call; memory within +100 MB over 50
windows.  Usage: ``python benchmarks/backend_windows.py [--windows 50] [--window 512]``; writes
``docs/backend_windows_<cpu>.json`` and prints a Markdown table.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DECISION_DIR_ENV = "S2SR_CACHE_DIR"  # s2sr.engine.precision's
sys.path.insert(0, str(Path(__file__).parent))


def rss_mib() -> float:
    """Resident memory now (not the peak): /proc/self/statm pages."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(windows: int, window: int, warm: int, context: Dict[str, Any]) -> Dict[str, Any]:
    from inference import _sample_window, cpu_model

    from s2sr.deploy import geopyspark
    from s2sr.engine.coords import pixel_centres
    from s2sr.engine.nodata import required_overlap
    from s2sr.engine.weights import read_metadata, resolve_weights
    from s2sr.training.bands import BANDS
    from s2sr.udf import udf_source

    margin = required_overlap(read_metadata(resolve_weights(context)))  # the UDP's overlap
    size = window - 2 * margin
    tile = _sample_window(window)
    res, x0, y0 = 10.0, 435730.0, 4179460.0
    x, y = pixel_centres(x0, res, window), pixel_centres(y0, -res, window)
    key = geopyspark.key_window(tile, x, y, (size, size), (margin, margin), BANDS, [np.datetime64("2020-06-10")])
    code, ctx = udf_source(), {**context, "overlap": margin}
    rss = [rss_mib()]
    t = time.perf_counter()
    step = geopyspark.call_apply_metadata(code, ctx, (res, res), 32618)
    metadata_s = time.perf_counter() - t
    scope: Dict[str, Any] = {}
    exec(code, scope)  # one namespace, called again and again: a warm call
    cube = geopyspark.PythonInterpreter()
    geopyspark.provide_openeo_driver_errors()
    cube.exec(geopyspark.DEFAULT_IMPORTS)
    for name, value in geopyspark.window_variables(key).items():
        cube.set(name, value)
    cube.exec(geopyspark.CUBE_COORDS)
    cube.set("npCube", key.tile)
    cube.exec(geopyspark.CUBE_ARRAY)
    datacube = cube.getValue("datacube")
    from s2sr.engine.precision import load_model
    from s2sr.engine.threads import set_threads

    t = time.perf_counter()  # the one-time costs alone: load and checks, checksum, the auto decision
    set_threads(ctx)
    load_model(ctx)
    one_time = time.perf_counter() - t
    times, warm_times = [], []
    for i in range(windows):
        t = time.perf_counter()
        out, _ = geopyspark.run_window(code, key, ctx, step is not None)
        times.append(time.perf_counter() - t)
        rss.append(rss_mib())
        if i >= 1 and len(warm_times) < warm:  # a warm call after each window: side by side, whatever the load
            t = time.perf_counter()
            scope["apply_datacube"](datacube, dict(ctx))
            warm_times.append(time.perf_counter() - t)
    assert out.shape[-2:] == (2 * window, 2 * window)
    from s2sr import engine

    later, warm_median = statistics.median(times[1:]), statistics.median(warm_times)
    paired = [times[i + 1] / w for i, w in enumerate(warm_times)]  # window i + 1 against the warm call right after it
    return {
        "cpu": cpu_model(), "window": window, "size": size, "overlap": margin, "context": context,
        "auto": [{k: d[k] for k in ("precision", "runtime", "reason")} for d in engine.decisions()],
        "apply_metadata_s": metadata_s, "first_window_s": times[0], "window_s": times, "warm_s": warm_times,
        "later_windows_median_s": later, "warm_median_s": warm_median, "later_over_warm": statistics.median(paired),
        "later_over_warm_medians": later / warm_median,
        "one_time_cost_s": one_time, "first_window_minus_warm_s": times[0] - warm_median,
        "rss_mib": rss, "rss_growth_after_window_2_mib": rss[-1] - rss[2] if len(rss) > 2 else None,
        "command": "python benchmarks/backend_windows.py " + " ".join(sys.argv[1:]),
    }


def to_markdown(r: Dict[str, Any]) -> str:
    n = len(r["window_s"])
    return "\n".join([
        f"Backend path, {r['cpu']}" + (f", model `{r['context']['model']}`" if r["context"].get("model") else "")
        + f": {r['window']} px windows (size {r['size']} + 2 x {r['overlap']} overlap) "
        f"on {r.get('threads', 2)} thread(s), "
        f"each in a fresh namespace as the geopyspark executor runs them; auto: "
        + ", ".join(f"{d['precision']} on {d['runtime']}" for d in r["auto"]) + ".",
        "",
        "| figure | value |",
        "|---|---|",
        f"| apply_metadata (own namespace) | {r['apply_metadata_s']:.3f} s |",
        "| one-time cost, timed alone before window 1 (model load and checks, checksum, auto decision) | "
        + (f"{r['one_time_cost_s']:.2f} s |" if r.get("one_time_cost_s") is not None else "not timed alone in this run |"),
        f"| window 1 | {r['first_window_s']:.2f} s |",
        f"| windows 2..{n}, median | {r['later_windows_median_s']:.2f} s |",
        f"| warm call (same namespace), median of {len(r['warm_s'])}, each right after a window | {r['warm_median_s']:.2f} s |",
        f"| window / the warm call after it, median of the pairs | **{r['later_over_warm']:.3f}x** (target <= 1.05x) |",
        f"| resident memory, after window 2 -> after window {n} | {r['rss_mib'][2]:.0f} -> {r['rss_mib'][-1]:.0f} MiB "
        f"(**{r['rss_growth_after_window_2_mib']:+.0f} MiB**, target <= +100) |",
        "",
        *([r["note"], ""] if r.get("note") else []),
        f"`{r['command']}`",
    ])


SECTION = "## On the backend's path"


def cpu_slug(cpu: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", cpu.lower()).strip("_")


def result_path(cpu: str, threads: int = 2, model: str = "") -> Path:
    """This CPU's result for windows on ``threads`` threads (2: the file without a suffix), of
    ``model`` (a shipped model's name; empty or the default: no suffix)."""
    from s2sr.engine.weights import DEFAULT_MODEL

    suffix = ("" if threads == 2 else f"_{threads}thread") + ("" if model in ("", DEFAULT_MODEL) else f"_{model}")
    return REPO / "docs" / f"backend_windows_{cpu_slug(cpu)}{suffix}.json"


def section(result: Dict[str, Any]) -> str:
    """The Markdown section docs/benchmarks_zen3.md carries (benchmarks/inference.py keeps it)."""
    return f"{SECTION}\n\n{to_markdown(result)}\n"


def update_doc(doc: Path, result: Dict[str, Any]) -> None:
    """Replace (or append) the section in ``doc``: it is the document's last section."""
    text = doc.read_text() if doc.is_file() else ""
    if SECTION in text:
        text = text[:text.index(SECTION)]
    doc.write_text(text.rstrip() + "\n\n" + section(result))


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--warm", type=int, default=20, help="warm calls, one after each of windows 2.. (default 20)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--model", default="", help="a shipped model other than the default (its own overlap; "
                                                    "writes ..._<model>.json)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per window, as task-cpus gives them (default 2; 1 writes ..._1thread.json)")
    parser.add_argument("--note", default="", help="a sentence on the run's conditions, printed with the figures")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default docs/backend_windows_<cpu>.json)")
    parser.add_argument("--doc", type=Path, default=None,
                        help="also write the section into this Markdown file (e.g. docs/benchmarks_zen3.md, where it is this CPU's)")
    args = parser.parse_args(argv)
    if args.windows < 3:
        parser.error("--windows must be >= 3")
    # a fresh worker: no auto decision recorded yet, so window 1 carries its whole one-time cost
    os.environ[DECISION_DIR_ENV] = tempfile.mkdtemp(prefix="s2sr-bench-")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # as Spark sets it to task-cpus: the engine's cap
    context = {"precision": args.precision, **({"model": args.model} if args.model else {})}
    result = measure(args.windows, args.window, args.warm, context)
    result["note"], result["threads"] = args.note, args.threads
    out = args.out or result_path(result["cpu"], args.threads, args.model)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if args.doc:
        update_doc(args.doc, result)
    print(to_markdown(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
