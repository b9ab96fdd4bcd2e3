"""s2sr.engine.torch_runtime: loading a TorchScript weights file and running it on torch.

The checks every runtime shares live here too: the load-time probe (shape and finiteness on a
tiny input), the seeded texture the converted networks are compared on, the timing helper."""

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from s2sr.engine.runtimes import MIN_NET_SIZE
from s2sr.engine.weights import METADATA_FILE, metadata_cached, verify_checksum


log = logging.getLogger(__name__)


def cause(exc: Exception) -> str:
    """``Type: last non-empty line`` of an exception: TorchScript puts the cause last, after its trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def load_torchscript(path_str: str, size: int, mtime: float, device: str) -> Tuple[Any, Dict[str, Any]]:
    """The weights file's TorchScript module as exported (eval mode, probed) and its metadata."""
    path = Path(path_str)
    verify_checksum(path_str, size, mtime)
    meta = metadata_cached(path_str, size, mtime)
    try:
        module = torch.jit.load(path_str, map_location=device, _extra_files={METADATA_FILE: ""})
    except Exception as exc:  # torch raises RuntimeError and friends for broken archives
        raise ValueError(
            f"weights file {path} is corrupt or truncated: TorchScript cannot load it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    module.eval()
    probe(module, meta, path, device)
    return module, meta




def texture(meta: Dict[str, Any], device: str, size: int = 32) -> torch.Tensor:
    """A seeded ``[1, bands, size, size]`` input in the model's units: the band means with
    +-30 % texture (a constant input would not tell a fused graph from a wrong one)."""
    n, scale = len(meta["bands"]), float(meta["input_scaling"]["scale"])
    mean = torch.tensor(meta["normalization"]["mean"], dtype=torch.float32).view(1, n, 1, 1) * scale
    noise = torch.rand(1, n, size, size, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.7
    return (mean * noise).to(device)



def probe(module: Any, meta: Dict[str, Any], path: Path, device: str) -> None:
    """Run the net once on a tiny input: its shape must agree with the metadata."""
    n, f = len(meta["bands"]), meta["factor"]
    mean = torch.tensor(meta["normalization"]["mean"], dtype=torch.float32, device=device)
    x = (mean * float(meta["input_scaling"]["scale"])).view(1, n, 1, 1).expand(1, n, MIN_NET_SIZE, MIN_NET_SIZE)
    try:
        with torch.inference_mode():
            y = module(x.contiguous())
    except Exception as exc:
        raise ValueError(
            f"weights file {path}: the network does not accept the {n} bands its metadata lists "
            f"({type(exc).__name__})"
        ) from None
    expected = (1, n, f * MIN_NET_SIZE, f * MIN_NET_SIZE)
    if tuple(y.shape) != expected:
        raise ValueError(
            f"weights file {path}: the network maps {tuple(x.shape)} to {tuple(y.shape)}, but its "
            f"metadata says factor {f} ({expected})"
        )
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"weights file {path}: the network returns non-finite values (corrupt weights)")



def min_time(module: Any, x: torch.Tensor, runs: int = 2) -> float:
    """The fastest of ``runs`` timed calls after one warm-up (seconds)."""
    import time

    best = math.inf
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)  # GPU calls return before they finish
    with torch.inference_mode():
        module(x)
        sync()
        for _ in range(runs):
            start = time.perf_counter()
            module(x)
            sync()
            best = min(best, time.perf_counter() - start)
    return best



def gpu_flags(device: str) -> Any:
    """The cuDNN settings of a forward pass on ``device`` (a context manager; none on the CPU).

    float32 stays float32: cuDNN's default TensorFloat-32 rounds a conv's inputs to 10 bits of
    mantissa (~1e-3 relative), which would break the fp32 contract (seams within 1e-5); bf16
    models do not use it.  ``benchmark``: cuDNN times its algorithms once per window shape, and
    a backend's windows all have one shape.
    """
    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=False)


def run_torch(module: Any, x: Any, device: str) -> Any:
    """A TorchScript module (or an NcnnModel) on numpy ``[B, C, H, W]`` -> numpy float32:
    channels-last on the CPU for oneDNN, NCHW for ncnn (``nchw``), cuDNN's flags on a GPU."""
    import numpy as np

    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    if device == "cpu" and not getattr(module, "nchw", False):
        xt = xt.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), gpu_flags(device):
        return module(xt).float().cpu().contiguous().numpy()
