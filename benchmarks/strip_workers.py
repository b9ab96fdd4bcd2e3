"""A window's ncnn strips on one multi-thread network in turn, or on 1-thread networks at once.

One configuration per process (peak memory is the process's), e.g. on 2 vCPUs, in turn:

    python benchmarks/strip_workers.py --plan turn --strips 3
    python benchmarks/strip_workers.py --plan together --strips 4

``turn``: the strips one after another on one network of ``--threads`` threads (the UDF's way).
``together``: ``--threads`` 1-thread networks, each running its share of the strips in a Python
thread of its own (ncnn's ``extract`` releases the GIL).  Prints the median seconds of a window's
backbone and the peak resident memory.  Results: docs/speed_notes.md.
"""

import argparse
import os
import resource
import statistics
import threading
import time
from typing import Callable

import numpy as np


def plan(model: str, how: str, n: int, threads: int, window: int, precision: str) -> Callable[[], None]:
    """A call that runs one window's backbone as ``how`` says."""
    from s2sr import engine
    from s2sr.engine import ncnn_runtime

    weights = str(engine.resolve_weights({"model": model}))
    st = os.stat(weights)
    margin = int(engine.read_metadata(weights)["margin"])
    z = np.random.default_rng(0).standard_normal((10, window, window)).astype(np.float32)
    parts = [np.ascontiguousarray(z[:, start:stop]) for start, stop, _, _ in ncnn_runtime.strips(window, window, margin, n)]

    def run_strips(net, mine) -> None:
        for p in mine:
            net._run(p)

    if how == "turn":
        net = ncnn_runtime.load_ncnn(weights, st.st_size, st.st_mtime, threads, precision)[0]
        return lambda: run_strips(net, parts)
    # one network per worker (the mtime offset keeps load_ncnn's cache from sharing one)
    nets = [ncnn_runtime.load_ncnn(weights, st.st_size, st.st_mtime + k * 1e-6, 1, precision)[0] for k in range(threads)]

    def together() -> None:
        workers = [threading.Thread(target=run_strips, args=(nets[k], parts[k::threads])) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return together


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", choices=["turn", "together"], required=True)
    parser.add_argument("--strips", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="carn_3x3x64g4sw")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--precision", default="int8_dynamic")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    run = plan(args.model, args.plan, args.strips, args.threads, args.window, args.precision)
    run()  # warm-up
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.model} {args.plan} {args.strips} strips, {args.threads} threads: median {statistics.median(times):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)}); peak RSS {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
