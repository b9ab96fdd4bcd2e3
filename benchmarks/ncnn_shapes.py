"""Probes behind the 1-thread window's remaining levers on ncnn (docs/speed_notes.md).

    python benchmarks/ncnn_shapes.py [--threads 1] [--reps 25]

1. One group of the default network's grouped 3 x 3 conv (64 -> 64 channels, leaky ReLU fused,
   valid) on a 199 x 512 strip, alone in an ncnn network: float32 (ncnn's Winograd), int8 with
   static scales (ncnn's ``int8_scale_term``: per output channel for the weights, one per tensor
   for the input) and bf16 storage.  Median seconds per call and the max error relative to the
   float32 output's maximum.
2. The shipped default's backbone (int8_dynamic, as ``auto`` runs it on VNNI CPUs) on one call of
   each strip or block shape: seconds per call and microseconds per output pixel it computes
   (unpadded convs: ``(2h - 2 shrink) x (2w - 2 shrink)``).

Prints one line per measurement; the figures are for comparing shapes side by side in one run.
"""
import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, Tuple

import numpy as np

C, H, W = 64, 199, 512


def _median_s(call: Callable[[], object], reps: int) -> float:
    call()  # the first call packs the weights and fills ncnn's pools
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _conv_net(w: np.ndarray, x: np.ndarray, threads: int, mode: str) -> Tuple[object, bytes]:
    """An ncnn network of one 3 x 3 conv in ``mode`` (fp32, int8, bf16) and its weight bytes
    (ncnn may read them in place: keep them referenced)."""
    import ncnn
    from s2sr.engine.ncnn_runtime import NCNN_F32_TAG, NCNN_INT8_TAG

    net = ncnn.Net()
    opt = net.opt
    opt.num_threads, opt.use_vulkan_compute = threads, False
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = opt.use_bf16_packed = mode == "bf16"
    opt.use_int8_inference = True
    params = f"0={C} 1=3 11=3 5=1 6={w.size} 9=2 -23310=1,1.0e-1"
    bias = np.zeros(C, np.float32).tobytes()  # untagged: ncnn reads the bias as raw float32
    if mode == "int8":
        w_scale = 127.0 / np.abs(w.reshape(C, -1)).max(1)
        q = np.clip(np.round(w.reshape(C, -1) * w_scale[:, None]), -127, 127).astype(np.int8).tobytes()
        x_scale = np.array([127.0 / np.abs(x).max()], np.float32)
        blob = np.array([NCNN_INT8_TAG], "<u4").tobytes() + q + bytes(-len(q) % 4) + bias + w_scale.astype(np.float32).tobytes() + x_scale.tobytes()
        params += " 8=1"
    else:
        blob = NCNN_F32_TAG + w.tobytes() + bias
    if net.load_param_mem(f"7767517\n2 2\nInput in 0 1 in\nConvolution conv 1 1 in out {params}\n") != 0:
        raise RuntimeError("ncnn did not accept the conv")
    net.load_model_mem(blob)
    return net, blob


def _extract(net: object, x: np.ndarray) -> np.ndarray:
    import ncnn

    extractor = net.create_extractor()
    extractor.input("in", ncnn.Mat(x))
    _, y = extractor.extract("out")
    return np.array(y)


def conv_variants(threads: int, reps: int) -> None:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((C, C, 3, 3)) * 0.05).astype(np.float32)
    x = rng.standard_normal((C, H, W)).astype(np.float32)
    reference = None
    for mode in ("fp32", "int8", "bf16"):
        net, _blob = _conv_net(w, x, threads, mode)
        y = _extract(net, x)
        reference = y if reference is None else reference
        error = float(np.abs(y - reference).max() / np.abs(reference).max())
        print(f"conv 3x3 {C}->{C} on {H} x {W}, {mode}: {_median_s(lambda: _extract(net, x), reps):.4f} s, "
              f"max error {100 * error:.2f} % of the max", flush=True)


def backbone_shapes(threads: int, reps: int) -> None:
    from s2sr.engine.ncnn_runtime import load_ncnn
    from s2sr.engine.weights import resolve_weights

    path = Path(resolve_weights({}))
    model, _ = load_ncnn(str(path), path.stat().st_size, path.stat().st_mtime, threads, "int8_dynamic")
    s = model.shrink
    rng = np.random.default_rng(0)
    shapes = [(h, 512) for h in (128, 160, 199, 256)] + [(199, w) for w in (128, 192, 256)] + [(128, 128)]
    for h, w in shapes:
        x = rng.standard_normal((10, h, w)).astype(np.float32)
        seconds = _median_s(lambda: model._run(x), max(3, reps // 8))
        out = (2 * h - 2 * s) * (2 * w - 2 * s)
        print(f"backbone int8_dynamic on {h} x {w}: {seconds:.3f} s, {seconds / out * 1e6:.2f} us per output pixel",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=25)
    args = parser.parse_args()
    conv_variants(args.threads, args.reps)
    backbone_shapes(args.threads, args.reps)


if __name__ == "__main__":
    main()
