"""s2sr.engine.onednn: torch's CPU graph rewrites: oneDNN fusions and int8 (static weights, dynamic activations)."""

import functools
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from s2sr.engine.torch_runtime import cause

QUANTIZED_ENGINE = "onednn"  # the engine the int8 weights were calibrated and packed for

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- oneDNN fusion
# Each conv followed by a LeakyReLU, or added to another tensor, becomes one oneDNN primitive
# with a post-op (what torch.compile's inductor emits on CPU, without its C++ compiler): the
# activation or the sum is applied while the conv's output is still in cache, instead of one
# more pass over a 256-channel tensor in memory.  Same arithmetic (float32 accumulator).
_CONV = "%y = aten::conv2d(%x, %w, %b, %stride, %padding, %dilation, %groups)"
_FUSED_LRELU = (
    f"""graph(%x, %w, %b, %stride, %padding, %dilation, %groups, %slope):
  {_CONV}
  %z = aten::leaky_relu(%y, %slope)
  return (%z)""",
    """graph(%x, %w, %b, %stride, %padding, %dilation, %groups, %slope):
  %attr : str = prim::Constant[value="leaky_relu"]()
  %scalars : Scalar?[] = prim::ListConstruct(%slope)
  %none : str? = prim::Constant()
  %z = mkldnn::_convolution_pointwise(%x, %w, %b, %padding, %stride, %dilation, %groups, %attr, %scalars, %none)
  return (%z)""",
)


def _fused_add(conv_first: bool) -> Tuple[str, str]:
    operands = "%y, %other" if conv_first else "%other, %y"
    return (
        f"""graph(%x, %w, %b, %stride, %padding, %dilation, %groups, %other, %alpha):
  {_CONV}
  %z = aten::add({operands}, %alpha)
  return (%z)""",
        """graph(%x, %w, %b, %stride, %padding, %dilation, %groups, %other, %alpha):
  %attr : str = prim::Constant[value="add"]()
  %none : str? = prim::Constant()
  %scalars : Scalar?[] = prim::ListConstruct()
  %z = mkldnn::_convolution_pointwise(%x, %other, %w, %b, %padding, %stride, %dilation, %groups, %attr, %alpha, %none, %scalars, %none)
  return (%z)""",
    )


ONEDNN_FUSIONS = (_FUSED_LRELU, _fused_add(True), _fused_add(False))


def fuse_onednn(module: Any, probe: torch.Tensor, reference: torch.Tensor) -> Any:
    """A frozen copy of a float TorchScript ``module`` with conv + LeakyReLU and conv + add fused
    (CPU, oneDNN), or ``module`` itself where that fails or changes the result.

    ``reference``: the float32 output of the unconverted module for ``probe``.  The fused copy
    must be as close to it as ``module`` is (plus 1e-5 of its range; in float32 the two agree
    bit for bit on the CPUs measured): otherwise it is dropped, with a warning.
    """
    try:
        fused = torch.jit.freeze(module)
        for pattern, replacement in ONEDNN_FUSIONS:
            torch._C._jit_pass_custom_pattern_based_rewrite_graph(pattern, replacement, fused.graph)
        with torch.inference_mode():
            plain_error = float((module(probe).float() - reference).abs().max())
            fused_error = float((fused(probe).float() - reference).abs().max())
    except Exception as exc:  # no oneDNN, an older torch, a CPU without the precision's kernels
        log.info("s2sr: oneDNN fusion unavailable, unfused graph (%s)", cause(exc))
        return module
    tolerance = 1.5 * plain_error + 1e-5 * float(reference.abs().max())
    if not fused_error <= tolerance:  # also catches NaN
        log.warning("s2sr: oneDNN fusion changed the result (max |diff| %.3g > %.3g): unfused graph", fused_error, tolerance)
        return module
    # No load-time timing here: the gain shows only on real windows (Zen 3, FP32, 2 threads:
    # 1.28x at 256 px, none at 64 px), and a small timing chose at random between the two.
    log.info("s2sr: oneDNN fusion on")
    return fused


# --------------------------------------------------------------------------- dynamic int8
# Every 3 x 3 conv of the trunk (not the head, which reads the radiometry, nor the tail, which
# writes it) becomes: this call's activation range -> uint8 with that range (it cannot clip,
# whatever the scene), per-channel int8 weights, oneDNN's int8 conv with a float32 output.  The
# 1 x 1 convs stay float32: they read the residual stream's wide sums (quantized, the PSNR drop
# was 0.15 dB instead of 0.025 with 7-bit activations) and are too light to gain from int8 (the
# net was 5 % faster without them).  The residual stream, activations and sums stay float32.
# The weights' quantization and packing depend on constants only: constant propagation runs
# them once, at load.
_DYN_INT8_SOURCE = """
def conv(x: Tensor, w: Tensor, b: Optional[Tensor], stride: List[int], padding: List[int], dilation: List[int], groups: int) -> Tensor:
    if w.size(0) == BANDS or w.size(1) == BANDS or (w.size(2) == 1 and w.size(3) == 1):
        return torch.conv2d(x, w, b, stride, padding, dilation, groups)
    w_scale = torch.clamp(w.abs().amax(dim=[1, 2, 3]), min=1e-30) / 127.0
    qw = torch.round(w / w_scale.view(-1, 1, 1, 1)).to(torch.int8)
    packed = torch.ops.onednn.qconv_prepack(qw, w_scale, 1.0, 0, stride, padding, dilation, groups, None)
    # min and max in one pass over the memory as it lies (channels-last): a reshape of the NCHW
    # view would copy the whole tensor first (half the time of the net, measured)
    lo, hi = torch.aminmax(x.permute(0, 2, 3, 1).reshape(-1))
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / LEVELS, min=1e-30)
    zero = torch.round(-lo / scale)
    qx = torch.quantize_per_tensor(x, scale, zero.to(torch.int64), torch.quint8).int_repr()
    return torch.ops.onednn.qconv2d_pointwise(qx, scale, zero.to(torch.int32), packed, w_scale,
        torch.zeros(w_scale.shape, dtype=torch.int64), b, stride, padding, dilation, groups,
        1.0, 0, torch.float32, "none", [], None)
"""
_CONV_ONLY = f"""graph(%x, %w, %b, %stride, %padding, %dilation, %groups):
  {_CONV}
  return (%y)"""


def dynamic_int8(module: Any, bands: int, levels: int) -> Any:
    """A frozen copy of float TorchScript ``module`` with the trunk's convs in dynamic int8
    (activations over ``levels`` + 1 steps: 255 where the CPU sums int8 products exactly, 127
    where it saturates them in 16 bits, see ``int8_products_exact``)."""
    source = _DYN_INT8_SOURCE.replace("BANDS", str(int(bands))).replace("LEVELS", f"{float(levels)}")
    replacement = str(torch.jit.CompilationUnit(source).conv.graph)
    frozen = torch.jit.freeze(module)
    torch._C._jit_pass_custom_pattern_based_rewrite_graph(_CONV_ONLY, replacement, frozen.graph)
    torch._C._jit_pass_constant_propagation(frozen.graph)
    return frozen


def dynamic_int8_checked(module: Any, meta: Dict[str, Any], path: Path, texture: torch.Tensor, reference: torch.Tensor) -> Any:
    """``dynamic_int8`` of a loaded model, run once on ``texture``: within 10 % of the float32
    ``reference``'s range, or a clear error.  A check against broken kernels, not a measure of
    accuracy: on this random texture (the hardest input for rounding) 7-bit activations are
    ~2 % off, where real scenes are 0.03 reflectance off at most (docs/speed_notes.md)."""
    levels = 255 if int8_products_exact() else 127
    try:
        quantized = dynamic_int8(module, len(meta["bands"]), levels)
        with torch.inference_mode():
            error = float((quantized(texture) - reference).abs().max())
    except Exception as exc:  # an older torch without the oneDNN int8 ops, a CPU without int8 kernels
        raise ValueError(f"precision 'int8_dynamic' is unavailable with this torch / CPU for {path.name} "
                         f"({cause(exc)}): use precision 'fp32'") from None
    bound = 0.1 * float(reference.abs().max())
    if not error <= bound:  # also catches NaN
        raise ValueError(f"precision 'int8_dynamic' is off by {error:.4g} (> {bound:.4g}) on {path.name}'s "
                         "check input: use precision 'fp32'")
    log.info("s2sr: dynamic int8 with %d-bit activations (max |diff| %.3g on the check input)", 8 if levels == 255 else 7, error)
    return quantized



def set_quantized_engine(path: Path) -> None:
    if QUANTIZED_ENGINE not in torch.backends.quantized.supported_engines:
        raise ValueError(f"int8 weights {path.name} need torch's {QUANTIZED_ENGINE!r} quantized engine; this torch "
                         f"has {torch.backends.quantized.supported_engines}: use precision 'fp32'")
    torch.backends.quantized.engine = QUANTIZED_ENGINE


@functools.lru_cache(maxsize=None)
def int8_products_exact() -> bool:
    """Whether the quantized engine sums uint8 x int8 products exactly on this CPU.

    With VNNI (AVX512-VNNI, AVX-VNNI) or AMX, oneDNN accumulates in 32 bits.  Without it
    (AVX2 only, e.g. Zen 3) it uses ``vpmaddubsw``, which adds pairs of products in a saturating
    16-bit integer: two 255 x 127 products (64770) clip to 32767.  A grouped 3 x 3 conv like the
    trunk's (16 input channels per group) of all-255 activations and all-127 weights tells them
    apart: exact, the centre output is 200 (its scale is the exact sum / 200); saturated, ~101.
    """
    if QUANTIZED_ENGINE not in torch.backends.quantized.supported_engines:
        return False
    from torch.ao.nn.quantized import functional as qF

    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = QUANTIZED_ENGINE
    try:
        x = torch.quantize_per_tensor(torch.full((1, 64, 5, 5), 255.0), 1.0, 0, torch.quint8)
        w = torch.quantize_per_tensor(torch.full((64, 16, 3, 3), 127.0), 1.0, 0, torch.qint8)
        exact = 16 * 9 * 255 * 127
        y = qF.conv2d(x, w, bias=torch.zeros(64), padding=1, groups=4, scale=exact / 200, zero_point=0)
        return int(y.int_repr().max()) == 200
    except RuntimeError as exc:  # no quantized conv at all: int8 weights cannot load here either
        log.info("s2sr: int8 probe failed (%s)", exc)
        return False
    finally:
        torch.backends.quantized.engine = previous
