"""GPU benchmark of the s2sr UDF: a full-tile time where a GPU is lent (the goal: under a minute).

The UDF as a backend runs it with ``device: "cuda"`` (window in, 2x window out, overlap
included, the cached model), in one process:

  ``udf_fp32``: float32 (cuDNN without TensorFloat-32, so the fp32 contract holds);
  ``udf_bf16``: the trunk in bfloat16 (tensor cores), radiometry in float32;
  ``udf``: the default ``precision: "auto"`` (on a GPU: fp32 or bf16, whichever a one-off timing
  finds faster, bf16 only where >= 1.1x faster);
  ``eager_fp32``: the bare network in torch eager float32 on the GPU, for context.

Windows of 512 px (the UDP's) and larger; ``--dates`` dates per window, all in one forward pass
(the context's ``batch``).  Reported: output megapixels per second (10 bands), seconds per
window, the extrapolated time for a full 10980 x 10980 tile, peak GPU memory, one-time costs
(model load with auto's timing, the first call with cuDNN's algorithm search), the GPU's matmul
peak, and each precision's error against FP32 eager on the CPU (max |diff| on the shipped sample
scene, PSNR drop on the Wald test split).

On the lent GPU machine (no network there; ``benchmarks/gpu.sh`` installs what it lacks from
wheels carried beside the repo and runs this):

    python benchmarks/gpu.py --prepare .gpu_inputs          # here: the sample inputs as .npy
    python benchmarks/gpu.py --inputs .gpu_inputs --out $OUT  # there
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from inference import TILE_PX, _eager_model, accuracy_on, tile_scene  # noqa: E402  (the CPU benchmark's helpers)

PATHS = {"udf_fp32": {"precision": "fp32"}, "udf_bf16": {"precision": "bf16"}, "udf": {}, "eager_fp32": None}


def prepare(folder: Path) -> None:
    """The sample scene and the Wald test split as .npy (reading them needs rasterio)."""
    import numpy as np

    from s2sr.training.data.wald import build_wald_split
    from s2sr.training.data.sample_scene import sample_scene_input

    folder.mkdir(parents=True, exist_ok=True)
    x, ref = build_wald_split("test")
    np.save(folder / "sample.npy", sample_scene_input())
    np.save(folder / "wald_x.npy", x.numpy())
    np.save(folder / "wald_ref.npy", ref.numpy())


def load_inputs(folder: Any) -> Dict[str, Any]:
    import numpy as np

    if folder is None:
        from s2sr.training.data.wald import build_wald_split
        from s2sr.training.data.sample_scene import sample_scene_input

        x, ref = build_wald_split("test")
        return {"sample": sample_scene_input(), "wald_x": x.numpy(), "wald_ref": ref.numpy()}
    return {name: np.load(Path(folder) / f"{name}.npy") for name in ("sample", "wald_x", "wald_ref")}


def window_cube(sample: Any, window: int, dates: int) -> Any:
    """``[dates, 10, window, window]`` DN from the sample scene (reflected where larger; each
    date shifted by a few DN so that batched dates are not copies)."""
    import numpy as np

    one = tile_scene(sample, window)
    return np.concatenate([one + 5.0 * d for d in range(dates)])


def synced(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def matmul_peak(device: str, dtype: Any, n: int) -> float:
    """TFLOP/s of an n^3 matmul on the device (TensorFloat-32 off for float32)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.rand(n, n, device=device).to(dtype), torch.rand(n, n, device=device).to(dtype)
    sync = synced(device)
    torch.mm(a, b)
    sync()
    reps = 10 if device.startswith("cuda") else 1
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync()
    return reps * 2 * n**3 / (time.perf_counter() - t) / 1e12


def measure(udf: Dict[str, Any], path: str, window: int, dates: int, args: argparse.Namespace, weights: str,
            margin: int, sample: Any) -> Dict[str, Any]:
    """One path at one window: load, first call, median of ``args.reps`` calls."""
    import torch
    import xarray

    from s2sr import engine
    from openeo.udf import XarrayDataCube

    from s2sr.training.bands import BANDS

    x = window_cube(sample, window, dates)
    sync = synced(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    precision = None
    if PATHS[path] is None:
        model = _eager_model(weights).to(args.device)
        xt = torch.from_numpy(x).to(args.device)

        def run():
            with torch.inference_mode(), engine.gpu_flags(args.device):
                y = model(xt)
                sync()
                return y
    else:
        cube = XarrayDataCube(xarray.DataArray(x, dims=("t", "bands", "y", "x"), coords={"bands": list(BANDS)}))
        ctx = {"device": args.device, "overlap": margin, "weights": weights, "batch": dates, **PATHS[path]}
        engine.load_model(ctx)  # load, probe and (auto) the timing: one-time costs
        precision = engine.choose_path(Path(weights).resolve(), ctx.get("precision", "auto"), args.device, "auto")[1]

        def run():
            return udf["apply_datacube"](cube, ctx).get_array().values  # back on the host: the whole call
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    run()
    first_s = time.perf_counter() - t1
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    size = window - 2 * margin
    return {"path": path, "precision": precision, "window": window, "size": size, "dates": dates,
            "s_per_window": s, "mpix_per_s": dates * (2 * size) ** 2 / s / 1e6,
            "full_tile_minutes": math.ceil(TILE_PX / size) ** 2 * s / dates / 60,
            "load_s": load_s, "first_call_s": first_s,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from openeo.udf.run_code import load_module_from_string

    from s2sr import engine
    from s2sr.udf import udf_source

    udf = load_module_from_string(udf_source())
    weights = str(engine.resolve_weights({}))
    margin = engine.read_metadata(weights)["margin"]
    inputs = load_inputs(args.inputs)
    cuda = args.device.startswith("cuda")
    n = 8192 if cuda else 512
    res: Dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else args.device, "torch": torch.__version__,
        "cuda": torch.version.cuda, "weights": Path(weights).name, "margin_px": margin,
        "matmul_tflops": {"fp32": matmul_peak(args.device, torch.float32, n), "bf16": matmul_peak(args.device, torch.bfloat16, n)},
        "rows": [], "accuracy": {}, "errors": [],
    }
    start = time.perf_counter()
    for window in args.windows:  # the UDP's window first: what matters most if the budget runs out
        for dates in args.dates:
            for path in args.paths:
                if time.perf_counter() - start > args.budget_s:
                    res["errors"].append(f"{path} {window} px x{dates}: not measured, past the {args.budget_s:.0f} s budget")
                    continue
                try:
                    row = measure(udf, path, window, dates, args, weights, margin, inputs["sample"])
                except Exception as exc:  # report it and go on (e.g. out of GPU memory): the device time is short
                    res["errors"].append(f"{path} {window} px x{dates}: {type(exc).__name__}: {str(exc)[:300]}")
                    print(res["errors"][-1], file=sys.stderr, flush=True)
                    if cuda:
                        torch.cuda.empty_cache()
                    continue
                res["rows"].append(row)
                print(f"{path} {window} px x{dates}: {row['s_per_window']:.3f} s, {row['mpix_per_s']:.2f} MP/s, "
                      f"tile {row['full_tile_minutes']:.2f} min", file=sys.stderr, flush=True)
    for precision in args.accuracy:
        try:
            res["accuracy"][precision] = accuracy_on(weights, {"precision": precision, "device": args.device}, inputs["sample"][None],
                                                     inputs["wald_x"][None], inputs["wald_ref"])
        except Exception as exc:
            res["errors"].append(f"accuracy {precision}: {type(exc).__name__}: {exc}")
    udf_rows = [r for r in res["rows"] if r["path"] == "udf"]
    best = min(udf_rows, key=lambda r: r["full_tile_minutes"], default=None)
    res["summary"] = {"full_tile_minutes": best and best["full_tile_minutes"], "window": best and best["window"],
                      "dates": best and best["dates"], "precision": best and best["precision"],
                      "mpix_per_s": best and best["mpix_per_s"]}
    return res


def to_markdown(res: Dict[str, Any], command: str) -> str:
    s = res["summary"]
    lines = [
        "# GPU benchmark", "", f"Command: `{command}`  ",
        f"Device: {res['device']}; torch {res['torch']} (CUDA {res['cuda']}); weights `{res['weights']}` (margin {res['margin_px']} px).", "",
        f"Matmul peak: FP32 (no TF32) {res['matmul_tflops']['fp32']:.1f} TFLOP/s, bf16 {res['matmul_tflops']['bf16']:.1f} TFLOP/s.", "",
        "| path | precision | window (kept) | dates | s / window | output MP/s | full tile min | peak GPU GiB | load s | first call s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        gib = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        lines.append(f"| {r['path']} | {r['precision'] or 'fp32'} | {r['window']} ({r['size']}) | {r['dates']} | {r['s_per_window']:.3f} | "
                     f"{r['mpix_per_s']:.2f} | {r['full_tile_minutes']:.2f} | {gib} | {r['load_s']:.1f} | {r['first_call_s']:.2f} |")
    if s["full_tile_minutes"] is not None:
        lines += ["", f"Default UDF path (`auto` -> {s['precision']}): a full 10980 x 10980 tile in **{s['full_tile_minutes']:.2f} min** "
                  f"({s['window']} px windows, {s['dates']} date(s) per pass, {s['mpix_per_s']:.2f} MP/s)."]
    lines += ["", "Accuracy against FP32 eager on the CPU (max |diff| on the sample scene away from its border; PSNR drop "
              "on the Wald test split):", "", "| precision on the GPU | max abs diff (reflectance) | PSNR drop dB |", "|---|---:|---:|"]
    for name, a in res["accuracy"].items():
        lines.append(f"| {name} | {a['max_abs_reflectance_vs_fp32']:.2e} | {a['psnr_drop_db_vs_fp32']:+.4f} |")
    lines += [f"\nFailed: {e}" for e in res["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--windows", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--dates", type=int, nargs="+", default=[1, 4])
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--accuracy", nargs="*", default=["fp32", "bf16"], help="precisions whose error to measure")
    p.add_argument("--budget-s", type=float, default=300.0, help="measure no further windows after this many seconds")
    p.add_argument("--inputs", type=Path, help="folder written by --prepare (else read with rasterio)")
    p.add_argument("--prepare", type=Path, metavar="FOLDER", help="write the inputs there and stop")
    p.add_argument("--out", type=Path, default=REPO / "docs", help="folder for benchmarks_gpu.md / .json")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return 0
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "benchmarks_gpu.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "benchmarks_gpu.md").write_text(to_markdown(res, command))
    print(json.dumps(res["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
