"""s2sr.engine.threads: how many threads a worker may use."""

import math
import os
from pathlib import Path
from typing import Any, Dict, Optional

#: a container's CPU quota: cgroup v2 ("<quota|max> <period>"), else v1 (quota, period in us; -1: none)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _cgroup_cpus() -> Optional[float]:
    """The CPUs a cgroup quota allows this process (v2, else v1), None where there is none."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota, period = (int(f.read_text()) for f in CGROUP_V1_QUOTA)
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this worker may use: its affinity, capped by a cgroup CPU quota (v2 or v1) and by
    ``OMP_NUM_THREADS`` where set.  Spark sets that to the task's cores in its executors and
    Python workers (SPARK-28843, SPARK-41188), where the affinity is the whole node's: without
    it, every task on a 32-core node would start 32 threads."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2": nested levels, the first counts
    if omp.isdigit() and int(omp) > 0:
        count = min(count, int(omp))
    return max(1, count)


_CURRENT = {"threads": None}


def set_threads(context: Dict[str, Any]) -> int:
    """The thread count for this context: ``threads``, capped to the CPUs this worker may use
    (more would only make OpenMP threads fight for them), default all of those; set in torch
    where the worker has it (ncnn and onnxruntime take it at load)."""
    from s2sr.engine.runtimes import torch_available

    cpus = available_cpus()
    asked = context.get("threads")
    threads = cpus if asked is None else min(int(asked), cpus)
    if threads < 1:
        raise ValueError(f"context key 'threads' must be an integer >= 1, got {asked!r}")
    if torch_available():
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    _CURRENT["threads"] = threads
    return threads


def current_threads() -> int:
    """The thread count models load for: torch's own where the worker has torch (what its
    kernels really use), else the count ``set_threads`` set last, else the CPUs available."""
    from s2sr.engine.runtimes import torch_available

    if torch_available():
        import torch

        return torch.get_num_threads()
    return _CURRENT["threads"] or available_cpus()
