"""s2sr.engine.onnx_runtime: the shipped network on onnxruntime, for workers without torch.

``<model>.onnx`` beside ``<model>.pt`` is the same TorchScript network exported as it is
(normalisation, zero-padded convolutions, bicubic skip and constraint inside; ``s2sr-export``
writes it), with the weights' metadata in the ONNX metadata (key ``s2sr_metadata``).  CDSE's
workers have no torch; the hosted ``onnx_deps`` archive brings onnxruntime, as ESA APEx's ML
UDFs use it.  fp32 only; within 1e-5 reflectance of torch (checked in the tests).
"""

import functools
import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from s2sr.engine.runtimes import MIN_NET_SIZE
from s2sr.engine.weights import metadata_cached, stat_key, verify_checksum

ONNX_METADATA_KEY = "s2sr_metadata"

log = logging.getLogger(__name__)


def onnx_companion(path: Path) -> Path:
    """``<model>.onnx`` beside ``<model>.pt`` (or the file itself where it is an ONNX)."""
    return path if path.suffix == ".onnx" else path.with_suffix(".onnx")


class OnnxModel:
    """An onnxruntime session called like the engine's other models, on numpy arrays:
    ``[B, bands, H, W]`` float32 in the model's input units -> ``[B, bands, fH, fW]``."""

    numpy_io = True  # s2sr.engine.tiling hands it numpy arrays, no torch involved

    def __init__(self, path: Path, meta: Dict[str, Any], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the arena keeps every window's peak for the next one: 5.3 GiB at 512 px with it,
        # 2.95 without (REFERENCES, measured on these workers)
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.factor, self.margin = int(meta["factor"]), int(meta["margin"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def embedded_metadata(self) -> Dict[str, Any]:
        text = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        return json.loads(text) if text else {}


@functools.lru_cache(maxsize=4)
def load_onnx(pt_path: str, size: int, mtime: float, threads: int) -> Tuple[OnnxModel, Dict[str, Any]]:
    """The ONNX companion of weights ``pt_path`` on onnxruntime, checked: checksum (manifest),
    the same metadata as the weights file, the probe (shape, finite values)."""
    path = Path(pt_path)
    meta = metadata_cached(pt_path, size, mtime)
    onnx_path = onnx_companion(path)
    if not onnx_path.is_file():
        raise ValueError(f"runtime 'onnxruntime' needs {onnx_path.name} beside {path.name} "
                         f"(write it with s2sr-export --onnx {path.name}); it is in the archive `s2sr-deploy archive` builds")
    verify_checksum(str(onnx_path), *stat_key(onnx_path))
    try:
        model = OnnxModel(onnx_path, meta, threads)
    except Exception as exc:  # onnxruntime raises its own types for broken files
        raise ValueError(f"weights file {onnx_path} is corrupt or not an ONNX model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    embedded = model.embedded_metadata()
    if embedded != meta:
        raise ValueError(f"{onnx_path.name} was not exported from {path.name}: its {ONNX_METADATA_KEY} differs "
                         "(re-export it with s2sr-export --onnx)")
    probe_numpy(model, meta, onnx_path)
    log.info("s2sr: loaded %s on onnxruntime, %d threads", onnx_path, threads)
    return model, meta


def probe_numpy(model: Any, meta: Dict[str, Any], path: Path) -> None:
    """The network once on a tiny input of the band means: its shape must agree with the
    metadata and its values be finite (torch_runtime.probe, without torch)."""
    n, f = len(meta["bands"]), int(meta["factor"])
    mean = np.asarray(meta["normalization"]["mean"], dtype=np.float32) * float(meta["input_scaling"]["scale"])
    x = np.ascontiguousarray(np.broadcast_to(mean.reshape(1, n, 1, 1), (1, n, MIN_NET_SIZE, MIN_NET_SIZE)))
    try:
        y = model(x)
    except Exception as exc:
        raise ValueError(f"weights file {path}: the network does not accept the {n} bands its metadata lists "
                         f"({type(exc).__name__})") from None
    expected = (1, n, f * MIN_NET_SIZE, f * MIN_NET_SIZE)
    if tuple(y.shape) != expected:
        raise ValueError(f"weights file {path}: the network maps {x.shape} to {tuple(y.shape)}, but its metadata "
                         f"says factor {f} ({expected})")
    if not np.isfinite(y).all():
        raise ValueError(f"weights file {path}: the network returns non-finite values (corrupt weights)")
