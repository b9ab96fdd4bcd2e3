"""ONNX of a weights file, for workers without torch (s2sr.engine.onnx_runtime).

The network exactly as shipped: the TorchScript module itself is exported (normalisation,
zero-padded convolutions, bicubic skip and constraint inside; no re-built eager network with
other padding), with the weights' metadata as the ONNX metadata entry ``s2sr_metadata``.
"""

import io
import json
import warnings
from pathlib import Path
from typing import Optional

import torch

from s2sr.engine.onnx_runtime import ONNX_METADATA_KEY
from s2sr.engine.weights import read_metadata

OPSET = 17


def export_onnx(weights: Path, out: Optional[Path] = None) -> Path:
    """Write ``<stem>.onnx`` beside ``weights`` (or at ``out``): dynamic batch, height and width,
    input ``input`` ``[b, bands, h, w]`` in the model's units, output ``output`` ``[b, bands, fh, fw]``."""
    import onnx

    weights = Path(weights)
    out = Path(out) if out else weights.with_suffix(".onnx")
    meta = read_metadata(weights)
    module = torch.jit.load(str(weights), map_location="cpu").eval()
    n = len(meta["bands"])
    x = torch.full((1, n, 32, 32), float(meta["input_scaling"]["scale"]) * 0.1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter on purpose (dynamo cannot trace a ScriptModule): its deprecation
        # notices and "no signature found" say nothing about this export
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx|s2sr|training")
        warnings.filterwarnings("ignore", message="no signature found for <torch.ScriptMethod")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(module, (x,), buffer, input_names=["input"], output_names=["output"], opset_version=OPSET,
                          dynamo=False, dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "output": {0: "b", 2: "fh", 3: "fw"}})
    model = onnx.load_from_string(buffer.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(meta, sort_keys=True)
    model.producer_name = "s2sr-export"
    tmp = out.with_suffix(".onnx.tmp")
    tmp.write_bytes(model.SerializeToString(deterministic=True))
    tmp.replace(out)
    return out
