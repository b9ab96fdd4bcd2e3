"""Inference benchmark: the s2sr UDF path beside the reference runtime (onnxruntime) and eager torch.

Same weights (the shipped default), same windows, in one run, alternating:

  (a) ``udf``: the UDF as a backend runs it (window in, 2x window out, overlap included, the
      cached model, the UDF's default precision ``auto``, called like the Python-Jep runtime);
  (b) ``onnxruntime``: the same weights exported to ONNX, run by onnxruntime on the CPU with the
      reference tool's settings (intra/inter-op threads = threads, deterministic compute);
      full run only: ``onnxruntime_int8``, the int8 peer (onnxruntime's own static int8 of that
      ONNX, ``quantize_onnx_int8``);
  (c) ``eager``: the bare network in torch eager FP32, for context;
  (d) ``udf_fp32``: the UDF with ``precision="fp32"`` on torch forced (the reference path), and
      ``udf_ncnn``: fp32 on the ncnn runtime forced (where ncnn is installed);
  (e) full run only: ``udf_ncnn_int8`` (int8_dynamic on ncnn: the 1 x 1 products in int8 with
      per-pixel scales, an ``auto`` candidate), ``udf_bf16`` and ``udf_ncnn_bf16`` (bf16 on
      torch / on ncnn, where the CPU has native bf16), ``udf_int8`` (opt-in static int8, its
      weights quantized for the run) and ``udf_int8_dynamic`` (opt-in, torch, quantized by the
      UDF at load);
  (f) full run, where ``auto`` runs ncnn: ``udf_strips`` / ``udf_tiles``, the udf path at the
      UDP's window on 2 threads with ncnn's window layout forced (``measure_layouts``);
  (g) ``tasks_side_by_side``: the ``udf`` path at the UDP's window on 1 thread in two processes at
      once, as a 2-core executor with task-cpus 1 runs two windows; each times its calls once both
      are warm.  The full tile's core-minutes are reported for that layout and for one window on 2
      threads; the target row reads the one the UDP deploys (``s2sr.deploy.udp.TASK_CPUS``).

Each measurement runs in its own subprocess (clean thread settings, its own peak RSS).
Throughput counts the useful output pixels of a window (the part the backend keeps: 2 x size
per axis, size = window - 2 x overlap), 10 bands each.  Also reported: FLOPs per output pixel,
the measured peak of a large FP32 matmul per thread count and the fraction of it reached,
one-time costs (model load, ONNX export), the UDF path's error against FP32 eager on the
sample scene and its PSNR drop on the held-out Wald test split, and the extrapolated time for a
full 10980 x 10980 tile.

    python benchmarks/inference.py [--quick] [--json] [--out docs/]   # docs/benchmarks_<cpu>.md

Needs the ``bench`` extra (``pip install -e ".[bench]"``: onnx, onnxruntime, matplotlib).
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
TILE_PX = 10980  # a full Sentinel-2 tile at 10 m
TASKS = 2  # windows at once on a 2-core executor with task-cpus 1
QUICK_WINDOW = 512  # --quick measures the UDP's window (issue 23), one round


#: The instruction sets that decide which precision pays (in /proc/cpuinfo's spelling).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    fields: Dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                break
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's name with its family/model and the ISA that matters here.

    Virtual machines often report a bare "AMD EPYC" for Zen 3 (AVX2 only) and Zen 4 (AVX-512 with
    bf16 and VNNI) alike; the figures differ by 2x between them, so the flags go in the name.
    """
    fields = _cpuinfo()
    if not fields:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    isa = "/".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"
    name = fields.get("model name", platform.processor() or "unknown")
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; {isa})"


def cpu_name(cpu: str) -> str:
    """The short name of a ``cpu_model()`` string that names its report, ``docs/benchmarks_<name>.md``.

    AMD family 25 is Zen 3 without AVX-512 and Zen 4 with it; family 26 is Zen 5; an Intel Xeon
    is ``xeon``; anything else its slug.
    """
    import re

    fam = re.search(r"family (\d+)", cpu)
    family = int(fam.group(1)) if fam else None
    if "AMD" in cpu and family == 25:
        return "zen4" if "avx512" in cpu else "zen3"
    if "AMD" in cpu and family == 26:
        return "zen5"
    if "Xeon" in cpu:
        return "xeon"
    return re.sub(r"[^a-z0-9]+", "_", cpu.lower()).strip("_") or "unknown"


def report_path(out: Path, cpu: str, weights: str = "") -> Path:
    """``out`` itself for a ``.md`` file name, else ``out/benchmarks_<cpu_name>.md`` in that folder,
    made if missing (one report per CPU; ``benchmarks_<cpu_name>_<model>.md`` for weights other
    than the default)."""
    from s2sr.engine.weights import DEFAULT_MODEL

    model = Path(weights).stem if weights else DEFAULT_MODEL
    name = f"benchmarks_{cpu_name(cpu)}" + ("" if model == DEFAULT_MODEL else f"_{model}")
    return out if out.suffix == ".md" else out / f"{name}.md"  # (argparse's Path drops a trailing "/")


def bf16_is_native() -> bool:
    """Whether this x86 CPU has bf16 arithmetic (AVX512-BF16 or AMX); elsewhere assume it may.

    Without it torch emulates bf16 (7x slower than FP32 on an AVX2-only Zen 3): the UDF's ``auto``
    timing never picks it there, and measuring the forced bf16 path would take hours.
    """
    flags = set(_cpuinfo().get("flags", "").split())
    return platform.machine() not in ("x86_64", "AMD64") or bool({"avx512_bf16", "amx_bf16"} & flags)


# ----------------------------------------------------------------------------- worker side

def _sample_window(window: int):
    """A [1, 10, window, window] float32 DN cube from the shipped sample scene (reflected if larger)."""
    from s2sr.training.data.sample_scene import sample_scene_input

    return tile_scene(sample_scene_input(), window)


def tile_scene(scene: Any, window: int):
    """``[10, H, W]`` -> ``[1, 10, window, window]`` float32, the scene reflected where smaller."""
    import numpy as np

    reps = math.ceil(window / scene.shape[-1])
    if reps > 1:
        scene = np.pad(scene, ((0, 0), (0, scene.shape[1] * (reps - 1)), (0, scene.shape[2] * (reps - 1))), mode="reflect")
    return np.ascontiguousarray(scene[None, :, :window, :window], dtype=np.float32)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _matmul_peak(dtype: Any, budget_s: float = 1.0) -> float:
    """GFLOP/s of a large square matmul in ``dtype`` (the core's practical peak).

    The size grows from 512 to 4096 while one product takes under ``budget_s / 4``: on a CPU
    without native bf16 (AVX2 only) torch emulates it some 50x slower, and a fixed 4096^3
    product would take minutes there.
    """
    import torch

    n = 512
    while True:
        a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
        torch.mm(a, b)  # warm-up
        t = time.perf_counter()
        torch.mm(a, b)
        one = time.perf_counter() - t
        if n >= 4096 or one > budget_s / 4:
            break
        n *= 2
    reps = max(1, min(3, int(budget_s / max(one, 1e-6))))
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return reps * 2 * n**3 / (time.perf_counter() - t) / 1e9


#: each UDF path's context beside weights, threads and overlap
UDF_CONTEXT = {"udf": {}, "udf_fp32": {"precision": "fp32", "runtime": "torch"}, "udf_ncnn": {"precision": "fp32", "runtime": "ncnn"},
               "udf_bf16": {"precision": "bf16", "runtime": "torch"}, "udf_ncnn_bf16": {"precision": "bf16", "runtime": "ncnn"}, "udf_int8": {"precision": "int8"}, "udf_int8_dynamic": {"precision": "int8_dynamic", "runtime": "torch"},
               "udf_ncnn_int8": {"precision": "int8_dynamic", "runtime": "ncnn"}, "udf_strips": {}, "udf_tiles": {}}
UDF_LAYOUTS = {"udf_strips": "strips", "udf_tiles": "tiles"}  # the udf path with ncnn's window layout forced (S2SR_NCNN_LAYOUT)
LAYOUT_ROUNDS = 3


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    threads, window, reps, path = spec["threads"], spec["window"], spec["reps"], spec["path"]
    udf = None
    if path in UDF_LAYOUTS:
        from s2sr.engine.precision import LAYOUT_ENV  # no torch: the UDF text still loads first

        os.environ[LAYOUT_ENV] = UDF_LAYOUTS[path]
    if path in UDF_CONTEXT:
        # the UDF text first, as a backend runs it: it sets OMP_WAIT_POLICY before torch loads
        from openeo.udf.run_code import load_module_from_string

        from s2sr.udf import udf_source

        udf = load_module_from_string(udf_source())
    import torch

    torch.set_num_threads(threads)
    x = _sample_window(window)
    if spec.get("valid"):  # a window over the tile's edge: no-data past its valid rows and columns, as backends fill it
        rows, cols = spec["valid"]
        x[..., rows:, :] = float("nan")
        x[..., :, cols:] = float("nan")
    t0 = time.perf_counter()
    chosen = runtime = None
    if udf is not None:
        import xarray
        from openeo.udf import XarrayDataCube

        from s2sr import engine
        from s2sr.training.bands import BANDS

        cube = XarrayDataCube(xarray.DataArray(x, dims=("t", "bands", "y", "x"), coords={"bands": list(BANDS)}))
        ctx = {"overlap": spec["overlap"], "threads": threads, "weights": spec["weights"], **UDF_CONTEXT[path]}
        run = lambda: udf["apply_datacube"](cube, ctx).get_array().values  # noqa: E731
        model = engine.load_model(ctx)[0]  # load, probe and (auto) the timing: one-time costs
        _, chosen, runtime = engine.choose_path(Path(spec["weights"]).resolve(), ctx.get("precision", "auto"), "cpu",
                                                ctx.get("runtime", "auto"))
    elif path in ("onnxruntime", "onnxruntime_int8"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = threads
        opts.use_deterministic_compute = True
        session = ort.InferenceSession(spec["onnx_int8" if path == "onnxruntime_int8" else "onnx"], sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        run = lambda: session.run(None, {"input": x})[0]  # noqa: E731
    elif path == "eager":
        model = _eager_model(spec["weights"])
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                return model(xt).numpy()
    elif path == "quantize_onnx_int8":  # in a process of its own: the parent's peak memory would pass to every worker
        return quantize_onnx_int8(spec["onnx"], Path(spec["folder"]))
    elif path in ("peak", "peak_bf16"):
        return {"gflops": _matmul_peak(torch.bfloat16 if path == "peak_bf16" else torch.float32)}
    else:
        raise ValueError(path)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    run()  # warm-up (first-call costs counted apart)
    first_s = time.perf_counter() - t1
    if spec.get("barrier"):  # tasks side by side: each times its calls once all are loaded and warm
        _wait_for_all(Path(spec["barrier"]), spec["tasks"])
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    layout = getattr(model, "layout", None) if udf is not None else None  # ncnn's, as the model runs it
    return {"load_s": load_s, "first_s": first_s, "s": statistics.median(times), "peak_rss_gib": _peak_rss_gib(),
            "precision": chosen, "runtime": runtime, "layout": layout}


def _wait_for_all(folder: Path, tasks: int, timeout_s: float = 600.0) -> None:
    """A file barrier: this process's mark in ``folder``, then wait until ``tasks`` are there."""
    (folder / str(os.getpid())).touch()
    end = time.monotonic() + timeout_s
    while len(list(folder.iterdir())) < tasks:
        if time.monotonic() > end:
            raise TimeoutError(f"{tasks} tasks did not all reach the barrier in {folder}")
        time.sleep(0.01)


def _eager_model(weights: str):
    """The eager network of exported float weights, as trained (``export.model_from_weights``)."""
    from s2sr.training.export import model_from_weights

    return model_from_weights(weights)[0]


# ----------------------------------------------------------------------------- parent side

def _spawn(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One worker process for ``spec``; its result."""
    return _run_workers(spec, 1)[0]


def _spawn_together(spec: Dict[str, Any], tasks: int) -> List[Dict[str, Any]]:
    """``tasks`` workers of ``spec`` at once, as an executor with ``tasks`` task slots runs its
    windows: each loads and warms up, then all time their calls together (a file barrier)."""
    barrier = Path(tempfile.mkdtemp(prefix="s2sr-barrier-"))
    return _run_workers({**spec, "barrier": str(barrier), "tasks": tasks}, tasks)


def _run_workers(spec: Dict[str, Any], count: int) -> List[Dict[str, Any]]:
    """``count`` worker processes of ``spec`` started together; their results, in order."""
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.get("threads", 1)))
    # torch tensors on huge pages in every worker, as the UDF sets it for itself: the eager
    # baseline then differs from the UDF path by the graph work alone (channels-last, fusion),
    # not by 3.5 M page faults per 512 px pass.  onnxruntime's arena does not use torch's allocator.
    env.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(count)]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"worker {spec} failed:\n{err[-2000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def export_onnx(weights: str, folder: Path) -> Dict[str, Any]:
    """The fair reference: the network the UDF runs, the shipped TorchScript exported as it is
    (zero padding; s2sr-export --onnx, what workers without torch run), not an eager rebuild with
    reflection padding (42 Pad nodes and their copies: 20-25 % slower, issue 23)."""
    import onnxruntime

    from s2sr.training.onnx_export import export_onnx as export_shipped

    t = time.perf_counter()
    path = export_shipped(Path(weights), folder / "model.onnx")
    return {"path": str(path), "export_s": time.perf_counter() - t, "onnxruntime": onnxruntime.__version__,
            "export": "the shipped TorchScript as it is (training/onnx_export.py)"}


#: The convs the int8 peer keeps in float32: the head reads the bands' own scales, the tail
#: writes them (quantized, they cost 0.3-0.9 dB on the Wald test split; Zen 4, 2026-12-07).
ONNX_INT8_FLOAT_NODES = ("/backbone/head/Conv", "/backbone/tail/Conv")


def quantize_onnx_int8(onnx_path: str, folder: Path) -> Dict[str, Any]:
    """The int8 peer (issue 23): onnxruntime's own static int8, QDQ format, at its best fair
    configuration found: uint8 activations x int8 per-channel weights (the VNNI pairing), the
    trunk's convs only (``ONNX_INT8_FLOAT_NODES`` stay float32), activation ranges calibrated
    on 8 crops of 128 px of the sample window by the 99.999th percentile (on 16 crops: min/max
    ranges lose 0.30 dB, percentile ones 0.07), 7-bit weights where the CPU has no VNNI
    (onnxruntime's advice for its AVX2 kernels).  Returns its path and the calibration's seconds."""
    import numpy as np
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from s2sr.engine import int8_products_exact

    x = _sample_window(QUICK_WINDOW)
    # a checkerboard of 8 crops: the percentile calibrator holds every activation of every crop (16 crops: 19.6 GiB)
    crops = [{"input": np.ascontiguousarray(x[..., i:i + 128, j:j + 128])}
             for i in range(0, 512, 128) for j in range(0, 512, 128) if (i + j) // 128 % 2 == 0]

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(crops)

        def get_next(self) -> Any:
            return next(self.items, None)

    t = time.perf_counter()
    pre, out = folder / "model_pre.onnx", folder / "model_int8.onnx"
    quant_pre_process(onnx_path, str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Crops(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    nodes_to_exclude=list(ONNX_INT8_FLOAT_NODES), calibrate_method=CalibrationMethod.Percentile,
                    reduce_range=not int8_products_exact())  # 7-bit weights where pairs of products saturate (no VNNI)
    return {"path": str(out), "quantize_s": time.perf_counter() - t}


def onnx_accuracy(weights: str, onnx_path: str, reference: Any = None) -> Dict[str, float]:
    """``accuracy`` for an ONNX file run by onnxruntime as it is (the peers), against FP32 eager,
    or against the float ONNX ``reference`` on onnxruntime (weights of an unregistered architecture)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from s2sr.training.data.wald import build_wald_split

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    if reference is None:
        eager = _eager_model(weights)
        run_reference = lambda x: eager(torch.from_numpy(x)).numpy()  # noqa: E731
    else:
        fp32 = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
        run_reference = lambda x: fp32.run(None, {"input": x})[0]  # noqa: E731

    def both(x: Any) -> Tuple[Any, Any]:
        with torch.inference_mode():
            return session.run(None, {"input": x})[0], run_reference(x)

    wald_x, wald_ref = build_wald_split("test")
    return _compare(both, _sample_window(256), np.ascontiguousarray(wald_x[None].numpy(), dtype=np.float32), wald_ref.numpy())


def flops_per_output_pixel(weights: str) -> float:
    """Multiply-adds x 2 of every conv, per output pixel, counted with forward hooks."""
    import torch

    model = _eager_model(weights)
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * k

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        y = model(torch.rand(1, 10, 64, 64) * 3000)
    return total[0] / (y.shape[-1] * y.shape[-2])


def accuracy(weights: str, precision: str = "fp32", runtime: str = "torch") -> Dict[str, float]:
    """UDF path vs FP32 eager: max |diff| on the sample scene; PSNR drop on the Wald test split."""
    from s2sr.training.data.wald import build_wald_split

    x, ref = build_wald_split("test")
    return accuracy_on(weights, {"precision": precision, "runtime": runtime}, _sample_window(256), x[None].numpy(), ref.numpy())


def accuracy_on(weights: str, ctx: Dict[str, Any], sample: Any, wald_x: Any, wald_ref: Any) -> Dict[str, float]:
    """``accuracy`` on given inputs (``[1, 10, H, W]`` DN, the Wald pair): the UDF with ``ctx``
    (precision, runtime, device) against FP32 eager on the CPU."""
    import torch
    import xarray
    from openeo.udf import XarrayDataCube
    from openeo.udf.run_code import load_module_from_string

    from s2sr.udf import udf_source

    module = load_module_from_string(udf_source())
    eager = _eager_model(weights)

    def both(x):
        cube = XarrayDataCube(xarray.DataArray(x, dims=("t", "bands", "y", "x")))
        # the network's arithmetic alone: the SWIR cap after it is one numpy step for every path
        a = module["apply_datacube"](cube, {"weights": weights, "swir_cap": 0, **ctx}).get_array().values
        with torch.inference_mode():
            b = eager(torch.from_numpy(x)).numpy()
        return a, b

    return _compare(both, sample, wald_x, wald_ref)


def _compare(both: Any, sample: Any, wald_x: Any, wald_ref: Any) -> Dict[str, float]:
    """The accuracy figures of a path against its reference, ``both(x) -> (path's, reference's)``
    outputs (DN): max |diff| on ``sample``, PSNR drop on the Wald pair."""
    import numpy as np

    from s2sr.training.metrics import psnr_per_band

    a, b = both(sample)
    m = 21
    inner = (Ellipsis, slice(2 * m, -2 * m), slice(2 * m, -2 * m))  # away from the border padding
    max_abs = float(np.abs(a[inner] - b[inner]).max() / 10000.0)
    a, b = both(wald_x)
    c = 2 * m  # compare away from the image border, where the UDF's no-data fill and eager's reflection differ
    r = wald_ref[:, c:-c, c:-c] / 10000.0
    drop = float(np.mean(psnr_per_band(b[0][:, c:-c, c:-c] / 10000.0, r)) - np.mean(psnr_per_band(a[0][:, c:-c, c:-c] / 10000.0, r)))
    return {"max_abs_reflectance_vs_fp32": max_abs, "psnr_drop_db_vs_fp32": drop}


def _int8_weights(weights: str, folder: Path) -> Dict[str, Any]:
    """The opt-in int8 companion, built for this run beside a copy of the weights (one-time cost)."""
    import shutil

    from s2sr.training.export import export_int8

    base = folder / Path(weights).name
    shutil.copy(weights, base)
    t = time.perf_counter()
    export_int8(base, max_psnr_drop_db=None)
    return {"weights": str(base), "quantize_s": time.perf_counter() - t}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from s2sr import engine

    weights = str(engine.resolve_weights({"model": args.model} if args.model else {}))
    meta = engine.read_metadata(weights)
    from s2sr.engine.nodata import required_overlap

    margin = required_overlap(meta)  # the UDP's overlap: the receptive field's margin + the no-data fill's reach
    windows = [QUICK_WINDOW] if args.quick else sorted({128, 256, 512, default_window()})
    threads = [2] if args.quick else [1, 2]
    reps = 1 if args.quick else 2
    tmp = Path(tempfile.mkdtemp(prefix="s2sr-bench-"))
    onnx = export_onnx(weights, tmp)
    # --quick: the figures the JSON line needs (eager is context only; under two minutes on the slowest CPU seen)
    paths = ["udf", "onnxruntime", "udf_fp32"] if args.quick else ["udf", "onnxruntime", "onnxruntime_int8", "eager", "udf_fp32", "udf_ncnn", "udf_ncnn_int8", "udf_bf16", "udf_ncnn_bf16", "udf_int8", "udf_int8_dynamic"]
    skipped = []
    for name in ("udf_ncnn", "udf_ncnn_int8", "udf_ncnn_bf16"):
        if name in paths and not engine.ncnn_available():
            paths.remove(name)
            skipped.append(f"{name}: the ncnn package is not installed (pip install ncnn)")
    native_bf16 = bf16_is_native()
    for name, why in (("udf_bf16", "torch emulates it far slower than FP32"), ("udf_ncnn_bf16", "ncnn converts it back to FP32")):
        if name in paths and not native_bf16:
            paths.remove(name)
            skipped.append(f"{name}: this CPU has no native bf16 (AVX512-BF16 / AMX); {why}")
    if not args.quick and not engine.int8_products_exact():
        paths = [p for p in paths if p not in ("udf_int8", "udf_int8_dynamic")]
        skipped.append("udf_int8, udf_int8_dynamic: this CPU's int8 products saturate (no VNNI): they would time an arithmetic "
                       "that is not the one calibrated (7-bit activations for int8_dynamic; speed notes: on Zen 3 at 512 px "
                       "1.0-1.4x onnxruntime, at or below FP32 on ncnn)")
    int8 = _int8_weights(weights, tmp) if "udf_int8" in paths else None
    onnx_int8 = _spawn({"path": "quantize_onnx_int8", "threads": 2, "window": 0, "reps": 0, "onnx": onnx["path"], "folder": str(tmp)}) if "onnxruntime_int8" in paths else None
    result: Dict[str, Any] = {"cpu": cpu_model(), "machine": platform.machine(), "weights": Path(weights).name,
                              "architecture": meta["architecture"], "margin_px": margin, "onnx_export_s": onnx["export_s"],
                              "onnxruntime_version": onnx["onnxruntime"], "onnx_export": onnx["export"],
                              "int8_quantize_s": int8["quantize_s"] if int8 else None,
                              "onnx_int8_quantize_s": onnx_int8["quantize_s"] if onnx_int8 else None,
                              "int8_products_exact": engine.int8_products_exact(),
                              "flops_per_output_pixel": flops_per_output_pixel(weights), "rows": [], "skipped": skipped}
    result["peak_gflops"] = {t: _spawn({"path": "peak", "threads": t, "window": 0, "reps": 0})["gflops"] for t in threads}
    result["peak_gflops_bf16"] = {t: _spawn({"path": "peak_bf16", "threads": t, "window": 0, "reps": 0})["gflops"] for t in threads}
    for w in windows:
        size = w - 2 * margin
        for t in (threads if not args.quick else [1, 2]):  # --quick: the udf path on 1 thread too (the 1-core tile)
            # alternating the paths within one window size and thread count; the two the ratio
            # compares once more, minutes later: this VM's times move by up to a quarter
            for rnd in range(1 if args.quick else 2):
                for path in (paths if rnd == 0 else ["udf", "onnxruntime"]) if not (args.quick and t == 1) else ["udf"]:
                    spec = {"path": path, "threads": t, "window": w, "reps": reps, "overlap": margin, "onnx": onnx["path"], "onnx_int8": onnx_int8 and onnx_int8["path"],
                            "weights": int8["weights"] if path == "udf_int8" else weights}
                    r = _spawn(spec)
                    print(f"{path} window {w} threads {t}: {r['s']:.2f} s", file=sys.stderr, flush=True)  # progress
                    _add_row(result["rows"], r, path, w, size, t)
    if not args.quick:  # the UDF's windows over the tile's last row and column: their own time, measured
        w = default_window()
        size = w - 2 * margin
        valid = tile_layout(size, margin)[1] - margin
        result["edge_windows"] = {}
        for t in threads:
            edges = {}
            for side, shape in (("right", (w, valid)), ("bottom", (valid, w)), ("corner", (valid, valid))):
                r = _spawn({"path": "udf", "threads": t, "window": w, "reps": reps, "overlap": margin, "weights": weights,
                            "valid": list(shape)})
                print(f"udf {side} edge window {w} threads {t}: {r['s']:.2f} s", file=sys.stderr, flush=True)  # progress
                edges[side] = r["s"]
            result["edge_windows"][t] = edges
    if not args.quick and any(r["path"] == "udf" and r.get("runtime") == "ncnn" for r in result["rows"]):
        result["ncnn_layouts"] = measure_layouts(weights, margin, reps)
    # task-cpus 1: two windows of 1 thread at once on the 2 cores, each slowed by the other (shared caches, memory)
    w = default_window()
    if any(r["path"] == "udf" and r["threads"] == 1 and r["window"] == w for r in result["rows"]):
        side = _spawn_together({"path": "udf", "threads": 1, "window": w, "reps": max(reps, 2), "overlap": margin,
                                "weights": weights}, TASKS)
        print(f"udf window {w}, {TASKS} tasks of 1 thread side by side: " + ", ".join(f"{r['s']:.2f}" for r in side) + " s",
              file=sys.stderr, flush=True)  # progress
        result["tasks_side_by_side"] = {"tasks": TASKS, "threads": 1, "window": w, "s": [r["s"] for r in side],
                                        "peak_rss_gib": [r["peak_rss_gib"] for r in side]}
    chosen = next(r for r in result["rows"] if r["path"] == "udf")
    if args.quick and chosen.get("runtime") == "ncnn":  # the default path's own figures only: under two minutes
        result["accuracy"] = {f"{chosen['precision']} on ncnn": accuracy(weights, chosen["precision"], "ncnn")}
    else:
        result["accuracy"] = {"fp32": accuracy(weights, "fp32")}
    if not args.quick and any(r.get("runtime") == "ncnn" for r in result["rows"]):
        result["accuracy"]["fp32 on ncnn"] = accuracy(weights, "fp32", "ncnn")
    if native_bf16 or any(r["precision"] == "bf16" and r.get("runtime") != "ncnn" for r in result["rows"]):
        result["accuracy"]["bf16"] = accuracy(weights, "bf16")
    if engine.ncnn_available() and (native_bf16 or any(r["precision"] == "bf16" and r.get("runtime") == "ncnn" for r in result["rows"])):
        result["accuracy"]["bf16 on ncnn"] = accuracy(weights, "bf16", "ncnn")
    if not args.quick and ("udf_ncnn_int8" in paths or any(r["precision"] == "int8_dynamic" and r.get("runtime") == "ncnn" for r in result["rows"])):
        result["accuracy"]["int8_dynamic on ncnn"] = accuracy(weights, "int8_dynamic", "ncnn")
    if int8:
        result["accuracy"]["int8"] = accuracy(int8["weights"], "int8")
    if "udf_int8_dynamic" in paths:
        result["accuracy"]["int8_dynamic"] = accuracy(weights, "int8_dynamic")
    if onnx_int8:
        result["accuracy"][ONNX_INT8_ACCURACY] = onnx_accuracy(weights, onnx_int8["path"])
    result["summary"] = summarize(result, max(threads))
    return result


def measure_layouts(weights: str, margin: int, reps: int) -> Dict[str, Any]:
    """The udf path at the UDP's window on 2 threads with ncnn's two window layouts forced
    (``S2SR_NCNN_LAYOUT``: row strips on one 2-thread network in turn, or tiles on two 1-thread
    networks at once), alternating for ``LAYOUT_ROUNDS`` rounds: the evidence for the CPU
    table's ``ncnn_layout``."""
    w = default_window()
    out = {"window": w, "threads": 2, "s": {}, "peak_rss_gib": {}}
    for rnd in range(LAYOUT_ROUNDS):
        for path in (("udf_strips", "udf_tiles") if rnd % 2 == 0 else ("udf_tiles", "udf_strips")):
            r = _spawn({"path": path, "threads": 2, "window": w, "reps": reps, "overlap": margin, "weights": weights})
            print(f"{path} window {w} threads 2: {r['s']:.2f} s", file=sys.stderr, flush=True)  # progress
            out["s"].setdefault(UDF_LAYOUTS[path], []).append(r["s"])
            out["peak_rss_gib"][UDF_LAYOUTS[path]] = max(out["peak_rss_gib"].get(UDF_LAYOUTS[path], 0.0), r["peak_rss_gib"])
    out["strips_over_tiles"] = [a / b for a, b in zip(out["s"]["strips"], out["s"]["tiles"])]
    return out


def _add_row(rows: List[Dict[str, Any]], r: Dict[str, Any], path: str, window: int, size: int, threads: int) -> None:
    """One row per path, window and threads: a second round's median replaces the first where
    faster (``s_rounds`` keeps both), its peak memory only where higher."""
    row = next((x for x in rows if (x["path"], x["window"], x["threads"]) == (path, window, threads)), None)
    if row is None:
        row = {"path": path, "precision": r.get("precision"), "runtime": r.get("runtime"), "layout": r.get("layout"), "window": window, "size": size,
               "threads": threads, "s_rounds": [], "peak_rss_gib": 0.0, "load_s": r["load_s"], "first_call_s": r["first_s"]}
        rows.append(row)
    row["s_rounds"].append(r["s"])
    row["peak_rss_gib"] = max(row["peak_rss_gib"], r["peak_rss_gib"])
    s = min(row["s_rounds"])
    row.update(s_per_window=s, mpix_per_s=(2 * size) ** 2 / s / 1e6, full_tile_minutes=tile_minutes_by_area(s, window, size))


def tile_minutes_by_area(s: float, window: int, size: int) -> float:
    """A full tile's minutes from a full window's ``s``, the windows over the tile's edge counted
    by the area they compute (``tile_layout``; the UDF's are measured too: ``edge_windows``)."""
    n, last = tile_layout(size, (window - size) // 2)
    return s * ((n - 1) * window + last) ** 2 / window ** 2 / 60


def tile_layout(size: int, overlap: int) -> Tuple[int, int]:
    """(windows per axis, pixels the last one computes per axis) over a ``TILE_PX`` tile cut into
    ``size`` px windows with ``overlap`` px more per side: the last one holds the tile's last
    ``TILE_PX - (n - 1) * size`` px after its overlap, no-data past them (backends fill a window
    past the cube's edge so); the UDF computes those and the margin (= overlap) after them only."""
    n = math.ceil(TILE_PX / size)
    return n, min(size + 2 * overlap, TILE_PX - (n - 1) * size + 2 * overlap)


def tile_minutes_measured(s: float, edges: Dict[str, float], size: int) -> float:
    """A full tile's minutes from a full window's ``s`` and the measured edge windows' seconds."""
    n = math.ceil(TILE_PX / size)
    return ((n - 1) ** 2 * s + (n - 1) * (edges["right"] + edges["bottom"]) + edges["corner"]) / 60


def default_window() -> int:
    """The UDP's window (input pixels, overlap included): the default chunk."""
    from s2sr.deploy.udp import WINDOW_PX

    return WINDOW_PX


def _row(res: Dict[str, Any], path: str, threads: int, window: int) -> Dict[str, Any]:
    return next(r for r in res["rows"] if r["path"] == path and r["window"] == window and r["threads"] == threads)


def summarize(res: Dict[str, Any], threads: int) -> Dict[str, Any]:
    """The issue's figures at the default window (the UDP's)."""
    measured = {r["window"] for r in res["rows"]}
    window = default_window() if default_window() in measured else max(measured)
    default, ref = _row(res, "udf", threads, window), _row(res, "onnxruntime", threads, window)
    fp32 = _row(res, "udf_fp32", threads, window)
    precision = default["precision"]
    peaks = res["peak_gflops_bf16"] if precision == "bf16" else res["peak_gflops"]
    peak = peaks[threads] if threads in peaks else peaks[str(threads)]  # str keys after a JSON round trip
    one_core = [r for r in res["rows"] if r["path"] == "udf" and r["threads"] == 1]
    runtime = default.get("runtime") or "torch"
    acc = res["accuracy"].get(precision + (" on ncnn" if runtime == "ncnn" else "")) or res["accuracy"]["fp32"]
    ncnn = next((r for r in res["rows"] if r["path"] == "udf_ncnn" and r["threads"] == threads and r["window"] == window), None)
    peer = next((r for r in res["rows"] if r["path"] == "onnxruntime_int8" and r["threads"] == threads and r["window"] == window), None)
    return {
        "mpix_per_s": default["mpix_per_s"], "precision": precision, "runtime": runtime,
        "onnxruntime_mpix_per_s": ref["mpix_per_s"],
        "speedup_vs_onnxruntime": default["mpix_per_s"] / ref["mpix_per_s"],
        "fp32_speedup_vs_onnxruntime": fp32["mpix_per_s"] / ref["mpix_per_s"],
        "ncnn_speedup_vs_onnxruntime": ncnn["mpix_per_s"] / ref["mpix_per_s"] if ncnn else None,
        # the int8 peer: onnxruntime's own static int8 (QDQ), and its quality
        "speedup_vs_onnxruntime_int8": default["mpix_per_s"] / peer["mpix_per_s"] if peer else None,
        "onnxruntime_int8_psnr_drop_db": (res["accuracy"].get(ONNX_INT8_ACCURACY) or {}).get("psnr_drop_db_vs_fp32"),
        "peak_fraction": default["mpix_per_s"] * 1e6 * res["flops_per_output_pixel"] / (peak * 1e9),
        # the same counting every pixel the net computes, the overlap included: how much of the
        # core is left for faster arithmetic of the same precision to win
        "peak_fraction_computed": default["mpix_per_s"] * 1e6 * res["flops_per_output_pixel"] / (peak * 1e9)
        * (window / default["size"]) ** 2,
        "full_tile_minutes_1core": _measured_tile(res, one_core, window, 1),
        "full_tile_minutes_1core_best_window": min((r["full_tile_minutes"] for r in one_core), default=None),
        "full_tile_minutes_2cores": _measured_tile(res, [default], window, 2) if threads == 2 else None,
        "peak_memory_gib": default["peak_rss_gib"],
        "onnxruntime_peak_memory_gib": ref["peak_rss_gib"],
        "psnr_drop_db_vs_fp32": acc["psnr_drop_db_vs_fp32"],
        "max_abs_reflectance_vs_fp32": acc["max_abs_reflectance_vs_fp32"],
        "threads": threads, "window": window, "cpu": res["cpu"],
        **backend_tile(res, _measured_tile(res, [default], window, 2) if threads == 2 else None),
    }


ONNX_INT8_ACCURACY = "onnxruntime int8 (QDQ, the peer)"

#: Issue 23's targets at the UDP's window on 2 threads.
TARGETS = {"speedup_vs_onnxruntime": 2.0, "psnr_drop_db_vs_fp32": 0.1, "peak_memory_gib": 2.0, "full_tile_core_minutes_backend": 90.0}


def backend_tile(res: Dict[str, Any], minutes_2cores: Any) -> Dict[str, Any]:
    """A full tile in core-minutes on 2 cores, with the per-window cost measured on the backend's
    path (``backend_windows.py``: a window in a fresh interpreter against a warm call, and the
    worker's one-time load) where this CPU has that measurement; None figures otherwise.

    Two ways an executor of 2 cores runs the UDP: one window at a time on 2 threads (task-cpus 2),
    or two windows at once on 1 thread each (task-cpus 1; timed side by side, ``tasks_side_by_side``).
    ``full_tile_core_minutes_backend`` is the one the UDP deploys (``s2sr.deploy.udp.TASK_CPUS``)."""
    out: Dict[str, Any] = {"backend_window_over_warm": None, "full_tile_core_minutes_backend_2threads": None,
                           "backend_window_over_warm_1thread": None, "tasks_s_per_window": None,
                           "full_tile_core_minutes_backend_1thread_tasks": None}
    backend = _backend_result(res["cpu"], 2, res["weights"])
    if minutes_2cores is not None and backend is not None:
        ratio = backend["later_over_warm"]
        out.update(backend_window_over_warm=ratio,
                   full_tile_core_minutes_backend_2threads=2 * (minutes_2cores * ratio + backend["one_time_cost_s"] / 60))
    side, backend1 = res.get("tasks_side_by_side"), _backend_result(res["cpu"], 1, res["weights"])
    if side is not None and backend1 is not None:
        one = _row(res, "udf", 1, side["window"])  # measured before the tasks: run() times them only then
        # each task's windows at the speed measured side by side; the tile's windows shared by 2 tasks on 2 cores
        s_side = max(side["s"])
        core_minutes = _measured_tile(res, [one], side["window"], 1) * s_side / one["s_per_window"]
        ratio1 = backend1["later_over_warm"]
        out.update(backend_window_over_warm_1thread=ratio1, tasks_s_per_window=s_side,
                   full_tile_core_minutes_backend_1thread_tasks=core_minutes * ratio1 + 2 * backend1["one_time_cost_s"] / 60)
    task_cpus = deployed_task_cpus()
    deployed = "full_tile_core_minutes_backend_1thread_tasks" if task_cpus == 1 else "full_tile_core_minutes_backend_2threads"
    out.update(task_cpus=task_cpus, full_tile_core_minutes_backend=out[deployed])
    return out


def deployed_task_cpus() -> int:
    """The UDP's task-cpus: the threads of one window (its executors have 2 cores)."""
    from s2sr.deploy.udp import TASK_CPUS

    return TASK_CPUS


def _backend_result(cpu: str, threads: int = 2, weights: str = "") -> Any:
    """``backend_windows.py``'s result for this CPU and threads: the model's own where measured,
    else the default model's (its ``context`` says which)."""
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))
    import backend_windows  # the per-window figures on the backend's path, measured separately

    for path in (backend_windows.result_path(cpu, threads, Path(weights).stem if weights else ""),
                 backend_windows.result_path(cpu, threads)):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def targets_markdown(s: Dict[str, Any]) -> List[str]:
    """Issue 23's targets against this run's figures."""
    rows = [("speed against onnxruntime (512 px, 2 threads)", "speedup_vs_onnxruntime", ">= 2x", lambda v: f"{v:.2f}x", True),
            ("PSNR drop against fp32", "psnr_drop_db_vs_fp32", "<= 0.1 dB", lambda v: f"{v:.4f} dB", False),
            ("peak memory", "peak_memory_gib", "<= 2 GiB", lambda v: f"{v:.2f} GiB", False),
            (f"full tile, core-minutes (task-cpus {s.get('task_cpus', 2)}), with the backend's per-window cost",
             "full_tile_core_minutes_backend", "<= 90", lambda v: f"{v:.0f}", False)]
    other_cpus, other = ((2, s.get("full_tile_core_minutes_backend_2threads")) if s.get("task_cpus") == 1
                         else (1, s.get("full_tile_core_minutes_backend_1thread_tasks")))
    lines = ["| target | goal | measured | met |", "|---|---|---:|---|"]
    for label, key, goal, fmt, higher in rows:
        v = s.get(key)
        met = "" if v is None else ("yes" if (v >= TARGETS[key] if higher else v <= TARGETS[key]) else "no")
        shown = fmt(v) if v is not None else "not measured" + (
            f" (task-cpus {other_cpus}: {other:.0f})" if key == "full_tile_core_minutes_backend" and other else "")
        lines.append(f"| {label} | {goal} | {shown} | {met} |")
    return lines


def _measured_tile(res: Dict[str, Any], rows: List[Dict[str, Any]], window: int, threads: int) -> Any:
    """The udf path's full tile minutes at ``window`` on ``threads``: from its measured edge
    windows where the run has them (at the default window), else by their area; None if unmeasured."""
    row = next((r for r in rows if r["window"] == window and r["threads"] == threads), None)
    edges = (res.get("edge_windows") or {})
    edges = edges.get(threads, edges.get(str(threads)))  # str keys after a JSON round trip
    if row is None or edges is None or window != default_window():
        return row and row["full_tile_minutes"]
    return tile_minutes_measured(row["s_per_window"], edges, row["size"])


def to_markdown(res: Dict[str, Any], command: str) -> str:
    s = res["summary"]
    lines = [
        "# Inference benchmark", "",
        f"Command: `{command}`  ", f"CPU: {res['cpu']} ({res['machine']}); weights `{res['weights']}` "
        f"({res['architecture']}, margin {res['margin_px']} px); {res['flops_per_output_pixel'] / 1e6:.2f} MFLOP per output pixel.", "",
        "Large matmul peak: FP32 " + ", ".join(f"{t} thread(s) {g:.0f}" for t, g in res["peak_gflops"].items())
        + " GFLOP/s; bf16 " + ", ".join(f"{t} thread(s) {g:.0f}" for t, g in res["peak_gflops_bf16"].items()) + " GFLOP/s.", "",
        "Paths: `udf` = the UDF as backends run it with its default precision (`auto`; the chosen one in brackets); "
        "`udf_fp32` / `udf_bf16` / `udf_int8` / `udf_int8_dynamic` = the UDF with that precision forced (on torch); `udf_ncnn` = "
        "fp32 on the ncnn runtime forced, `udf_ncnn_int8` int8_dynamic on it (1 x 1 products in int8, per-pixel scales), "
        "`udf_ncnn_bf16` bf16 on it; `onnxruntime` = the reference "
        "runtime (ONNX of the same weights, CPU provider, intra/inter-op threads = threads); "
        + ("`onnxruntime_int8` = the int8 peer, onnxruntime's own static int8 of that ONNX (QDQ, uint8 activations x int8 "
           "per-channel weights, head and tail in float32, ranges calibrated on the sample window by percentile; its quality "
           "in the accuracy table); " if any(r["path"] == "onnxruntime_int8" for r in res["rows"]) else "")
        + "`eager` = the bare "
        "network in torch eager FP32 (default OpenMP settings; torch tensors on huge pages, as in the UDF).", "",
        "onnxruntime's network: " + (f"{res['onnx_export']}, onnxruntime {res.get('onnxruntime_version')}." if res.get("onnx_export")
                                     else "exported from the eager network with reflection padding (42 Pad nodes; this run "
                                          "predates the fair export of the network the UDF runs, which is 20-25 % faster)."), "",
    ]
    if any(len(r.get("s_rounds", [])) > 1 for r in res["rows"]):
        lines += ["`udf` and `onnxruntime` ran twice per window and threads, the second round after all paths (minutes apart: "
                  "this VM's times move by up to a quarter): `s / window` is the faster round's median of two calls, `rounds` both.", ""]
    lines += [
        "| path | window (kept) | threads | s / window | rounds s | output MP/s | peak RSS GiB | load s | first call s | full tile min |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        name = r["path"] + (f" ({r['precision']}{', ' + r['runtime'] if r.get('runtime') else ''}"
                            f"{', ' + r['layout'] if r.get('layout') and r['threads'] > 1 else ''})"
                            if r["path"] == "udf" and r.get("precision") else "")
        rounds = ", ".join(f"{x:.2f}" for x in r.get("s_rounds", [])) if len(r.get("s_rounds", [])) > 1 else ""
        lines.append(f"| {name} | {r['window']} ({r['size']}) | {r['threads']} | {r['s_per_window']:.2f} | {rounds} | {r['mpix_per_s']:.4f} | "
                     f"{r['peak_rss_gib']:.2f} | {r['load_s']:.2f} | {r['first_call_s']:.2f} | {r['full_tile_minutes']:.0f} |")
    lines += ["", "Full tile: 10980 x 10980 px in windows of the kept size, the last row and column of windows over the tile's "
              "edge (no-data past it, as backends fill them); the column counts those by the area they compute (their "
              "valid part and the margin; the UDF computes no more, the reference tool's edge chunks are smaller too)."]
    for t, e in (res.get("edge_windows") or {}).items():
        lines.append(f"The UDF's edge windows at the default window, {t} thread(s), measured: right {e['right']:.2f} s, bottom "
                     f"{e['bottom']:.2f} s, corner {e['corner']:.2f} s (the summary's full tile figures use these).")
    lines += [f"\nNot measured: {note}." for note in res.get("skipped", [])]
    lines += ["", f"One-time: ONNX export {res['onnx_export_s']:.1f} s"
              + (f"; int8 quantization (calibration) {res['int8_quantize_s']:.0f} s" if res.get("int8_quantize_s") else "")
              + (f"; onnxruntime int8 quantization {res['onnx_int8_quantize_s']:.0f} s" if res.get("onnx_int8_quantize_s") else "")
              + "; the UDF's model load (and the `auto` timing) is the `load s` column.", ""]
    lines += [
        f"At the {'default ' if s['window'] == default_window() else ''}window ({s['window']} px, {s['threads']} threads): UDF path "
        f"({s['precision']}{', ' + s['runtime'] if s.get('runtime') else ''}) {s['mpix_per_s']:.4f} MP/s, onnxruntime "
        f"{s['onnxruntime_mpix_per_s']:.4f} MP/s, ratio **{s['speedup_vs_onnxruntime']:.2f}x**; the forced FP32 path on torch "
        f"{s['fp32_speedup_vs_onnxruntime']:.2f}x"
        + (f", on ncnn {s['ncnn_speedup_vs_onnxruntime']:.2f}x" if s.get("ncnn_speedup_vs_onnxruntime") else "")
        + (f"; against the int8 peer (onnxruntime int8, {s['onnxruntime_int8_psnr_drop_db']:.3f} dB drop) "
           f"{s['speedup_vs_onnxruntime_int8']:.2f}x" if s.get("speedup_vs_onnxruntime_int8") else "")
        + f"; {100 * s['peak_fraction']:.0f} % of the {'bf16' if s['precision'] == 'bf16' else 'fp32'} matmul peak "
        f"({100 * s['peak_fraction_computed']:.0f} % counting the overlap pixels it computes too"
        + ("; FLOPs of the direct convolution: ncnn's Winograd 3 x 3 convolutions do 4x fewer multiplications"
           if s.get("runtime") == "ncnn" else "") + "); "
        f"peak memory {s['peak_memory_gib']:.2f} GiB (onnxruntime {s['onnxruntime_peak_memory_gib']:.2f} GiB); "
        f"full 10980 x 10980 tile: {s['full_tile_minutes_1core'] or float('nan'):.0f} min on 1 core "
        f"({s['full_tile_minutes_1core_best_window'] or float('nan'):.0f} min at the best window), "
        f"{s['full_tile_minutes_2cores'] or float('nan'):.0f} min on 2.", "",
        "Accuracy of the UDF path against FP32 eager (max |diff| on the sample scene away from its border; PSNR drop on the "
        "held-out Wald test split, mean of the per-band PSNRs):", "",
        "| precision | max abs diff (reflectance) | PSNR drop dB |", "|---|---:|---:|",
    ]
    for name, a in res["accuracy"].items():
        lines.append(f"| {name} | {a['max_abs_reflectance_vs_fp32']:.2e} | {a['psnr_drop_db_vs_fp32']:+.4f} |")
    if "int8" in res["accuracy"] and res.get("int8_products_exact") is not None:
        lines += ["", "int8 products on this CPU: " + ("exact (VNNI / AMX: 32-bit sums)." if res["int8_products_exact"] else
                  "saturating (no VNNI: pairs of uint8 x int8 products summed in 16 bits), so the int8 error above "
                  "includes that; a VNNI CPU runs the same weights closer to their calibration.")]
    lines += tasks_markdown(res) + layouts_markdown(res)
    lines += ["", "Issue 23's targets (the UDP's window; speed, accuracy and memory on 2 threads; the tile in core-minutes on "
              f"2 cores as the UDP deploys it, task-cpus {s.get('task_cpus', 2)}, each window "
              "costing what it costs in a fresh interpreter on the backend's path, plus the worker's one-time load):", "",
              *targets_markdown(s)]
    png = report_path(Path("."), res["cpu"], res["weights"]).with_suffix(".png").name
    lines += ["", f"![benchmark]({png})", "",
              "What was tried, kept and left: [speed notes](speed_notes.md). "
              "Runs on other CPUs: `docs/benchmarks_*.md` (e.g. [Zen 3](benchmarks_zen3.md), [Zen 4](benchmarks_zen4.md)).", ""]
    backends = [b for b in (_backend_result(res["cpu"], t, res["weights"]) for t in (2, 1)) if b is not None]  # task-cpus 2, then 1
    if backends:
        import backend_windows

        from s2sr.engine.weights import DEFAULT_MODEL

        model = Path(res["weights"]).stem
        if any((b["context"].get("model") or DEFAULT_MODEL) != model for b in backends):
            lines += ["Where the backend's path below names no model it was measured with the default one "
                      "(`backend_windows.py`); the tile figures above take its per-window cost, a ratio to a warm "
                      "call, for this model's windows.", ""]
        lines += [backend_windows.section(backends[0])] + [backend_windows.to_markdown(b) + "\n" for b in backends[1:]]
    return "\n".join(lines)


def layouts_markdown(res: Dict[str, Any]) -> List[str]:
    """ncnn's two window layouts side by side (where measured: ``measure_layouts``)."""
    lay = res.get("ncnn_layouts")
    if lay is None:
        return []
    ratios = lay["strips_over_tiles"]
    return ["", f"ncnn's window layout, the udf path at {lay['window']} px on {lay['threads']} threads, alternating "
            f"(`S2SR_NCNN_LAYOUT`; the CPU table's `ncnn_layout` picks): row strips on one 2-thread network in turn "
            + ", ".join(f"{x:.2f}" for x in lay["s"]["strips"]) + " s, tiles on two 1-thread networks at once "
            + ", ".join(f"{x:.2f}" for x in lay["s"]["tiles"]) + f" s; strips / tiles per round "
            + ", ".join(f"{x:.2f}" for x in ratios) + f" (median {statistics.median(ratios):.2f}x); peak memory "
            f"{lay['peak_rss_gib']['strips']:.2f} / {lay['peak_rss_gib']['tiles']:.2f} GiB."]


def tasks_markdown(res: Dict[str, Any]) -> List[str]:
    """The two ways a 2-core executor runs the UDP's windows, side by side (where measured)."""
    side, s = res.get("tasks_side_by_side"), res["summary"]
    if side is None:
        return []
    alone = _row(res, "udf", 1, side["window"])["s_per_window"]
    line = (f"Two windows at once on 1 thread each (task-cpus 1 on a 2-core executor): "
            + ", ".join(f"{x:.2f}" for x in side["s"]) + f" s per window, against {alone:.2f} s for one alone "
            f"({max(side['s']) / alone:.2f}x: the tasks share caches and memory bandwidth); peak memory "
            + ", ".join(f"{x:.2f}" for x in side["peak_rss_gib"]) + " GiB per task.")
    both = [(1, s.get("full_tile_core_minutes_backend_1thread_tasks")), (2, s.get("full_tile_core_minutes_backend_2threads"))]
    if all(v is not None for _, v in both):
        line += (" A full tile on the backend's path: " + ", ".join(f"task-cpus {t} {v:.0f} core-minutes" for t, v in both)
                 + f"; the UDP deploys task-cpus {s['task_cpus']}.")
    return ["", line]


def plot(res: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    paths = list(dict.fromkeys(r["path"] for r in res["rows"]))
    markers = "osv^<>dpP*hX"
    for i, p in enumerate(paths):  # one colour and marker per path; dashed: 1 thread
        for t in sorted(int(t) for t in res["peak_gflops"]):
            rows = [r for r in res["rows"] if r["path"] == p and r["threads"] == t]
            ax.plot([r["window"] for r in rows], [r["mpix_per_s"] for r in rows], marker=markers[i % len(markers)],
                    color=f"C{i}", linestyle="-" if t > 1 else "--", label=f"{p}, {t} thread(s)")
    ax.set_xlabel("input window (px, overlap included)")
    ax.set_ylabel("output MP/s (10 bands)")
    ax.set_title(res["cpu"], fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one window, 2 threads, one round (< 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--out", type=Path,
                        help="write a markdown report, its JSON and a plot: a file, or a folder (docs/) for "
                             "benchmarks_<cpu>.md in it (zen3, zen4, zen5, xeon)")
    parser.add_argument("--model", help="a shipped model other than the default (its report: benchmarks_<cpu>_<model>.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, metavar="JSON", help="re-render --out from a saved result (no measuring)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.render:
        res = json.loads(args.render.read_text())
        for r in res["rows"]:  # derived figures as this version derives them
            r["full_tile_minutes"] = tile_minutes_by_area(r["s_per_window"], r["window"], r["size"])
        res["summary"] = summarize(res, max(int(t) for t in res["peak_gflops"]))
        command = res.get("command", "python benchmarks/inference.py")
    else:
        res = run(args)
        command = "python benchmarks/inference.py" + (" --quick" if args.quick else "") + (f" --model {args.model}" if args.model else "")
        res["command"] = command
    if args.out:
        out = report_path(args.out, res["cpu"], res["weights"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_markdown(res, command))
        plot(res, out.with_suffix(".png"))
        (out.with_suffix(".json")).write_text(json.dumps(res, indent=1) + "\n")
    print(to_markdown(res, command))
    if args.json:
        print(json.dumps(res["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
