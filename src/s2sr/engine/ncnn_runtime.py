"""s2sr.engine.ncnn_runtime: the backbone of a TorchScript weights file converted to an ncnn network at load."""

import functools
import logging
import math
import queue
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from s2sr.engine.torch_runtime import cause, load_torchscript, texture
from s2sr.engine.weights import weights_precision

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- ncnn runtime
# ncnn (Tencent's inference library, BSD-3, ``pip install ncnn``) runs every 3 x 3 conv with
# stride 1 as a Winograd F(4x4, 3x3) product: 4x fewer multiplications than the direct
# convolution oneDNN runs, at float32 (its products and sums stay float32; the transforms round
# differently, ~1e-6 of the range).  On Zen 3 (AVX2), 2 threads, per layer: the grouped 3 x 3
# convs of the trunk 2.0x oneDNN, the dense up-sampling conv 3.0x, the 1 x 1 convs 1.2x; the
# backbone 1.5-1.8x (docs/speed_notes.md).  The UDF converts the frozen TorchScript backbone of
# the weights file into an ncnn network at load (no second weights file: the same tensors), and
# keeps normalisation, skip, constraint and denormalisation in TorchScript.  Optional: where the
# worker has no ncnn, ``runtime: "auto"`` runs torch.  In bf16 ncnn stores activations and
# weights in bfloat16 and multiplies them with AVX512-BF16 where the CPU has it (Winograd too);
# ``auto`` runs it only where the CPU table says so (``precision.table_choice``).  Zen 3
# (emulated): 0.007 reflectance at most from FP32 on the sample scene, no PSNR loss.
# The 1 x 1 convs (27 % of the MACs, but about half of the time once the 3 x 3 ones run as
# Winograd) are ncnn Gemm layers on views of the tensors (``_pointwise_gemm``); in int8_dynamic
# their products are int8 with per-pixel activation scales (exact integer sums on AVX2 too).
# Zen 3, 512 px window, the backbone: 1.16x the fp32 network on 2 threads, 1.18x on 1.
NCNN_TILE_PIXELS = 60_000
"""Most input pixels per ncnn call where two or more 1-thread networks run a window's tiles at
once (``tiles``): a 512 px window as 3 x 2 tiles of 199 x 277 px, two at a time, peaks 0.15-0.18
GiB above its 3 strips of 199 x 512 in turn (docs/speed_notes.md, *Tiles on 1-thread networks*)."""

NCNN_STRIP_PIXELS = 110_000
"""Most input pixels per ncnn call: larger windows run in row strips of one common height, each
with at least the model's margin of context per side.  ncnn keeps a call's buffers in pools for
the next call, some ten 256-channel tensors' worth: a 512 px window in 3 strips of 199 rows
computes 17 % more input rows than one call (~9 % more per layer with unpadded convs), and the
UDF peaks at 1.43-1.47 GiB after one window, 1.48-1.51 after five (padded convs: 1.53 after one,
growing by ~15 MB per window to level off at 1.71 after 11).  2 strips: no faster within this
VM's noise with unpadded convs (6-10 % with padded ones: ncnn's time per row hardly depends on
the strip's height) but 1.81-1.86 GiB after five windows and growing, too close to the 2 GiB
per worker target; one call: ncnn alone 2.6-3.1 GiB.  Equal heights: the pools' buffers fit
every strip (unequal ones: 2.6 GiB)."""

_NCNN_ACTIVATIONS = {"aten::leaky_relu", "aten::relu"}


class NcnnUnsupported(ValueError):
    """The backbone holds an operation the ncnn conversion does not know."""


def _const(value: Any) -> Any:
    ivalue = value.toIValue()
    if ivalue is None and value.node().kind() != "prim::Constant":
        raise NcnnUnsupported(f"{value.node().kind()} where a constant was expected")
    return ivalue


def _scalar(value: Any) -> Optional[float]:
    """The value as a Python float when it is a constant number or one-element tensor."""
    if value.node().kind() != "prim::Constant":
        return None
    ivalue = value.toIValue()
    if isinstance(ivalue, torch.Tensor):
        return float(ivalue) if ivalue.numel() == 1 else None
    return float(ivalue) if isinstance(ivalue, (int, float)) else None


def _ncnn_ops(graph: Any, split_groups: bool = False, int8_pointwise: bool = False) -> List[Tuple[str, str, List[Any], Any, str, bytes]]:
    """The graph's tensor operations as (ncnn type, name, input values, output value, params,
    weight bytes), with each conv -> (leaky) ReLU fused into one conv layer, and each plain
    1 x 1 conv as a matrix product (``_pointwise_gemm``).

    ``split_groups``: a grouped conv (up to MAX_SPLIT_GROUPS groups) as one conv per group
    between channel crops and a concatenation, for bf16: ncnn's grouped-conv layer has no
    bf16 kernels (it would run in float32 between two casts).
    ``int8_pointwise``: the 1 x 1 products in int8 with per-pixel activation scales.
    """
    lists: Dict[Any, List[Any]] = {}  # tensor lists (loops are unrolled: their contents are known)
    nodes = [n for n in graph.nodes() if n.kind() != "prim::Constant"]
    ops: List[Tuple[str, str, List[Any], Any, str, bytes]] = []
    fused: set = set()  # the activation nodes fused into the conv before them
    for i, node in enumerate(nodes):
        kind, ins, name = node.kind(), list(node.inputs()), f"op{i}"
        if kind == "prim::ListConstruct":
            lists[node.output()] = ins
        elif kind == "aten::append" and ins[0] in lists:
            lists[ins[0]].append(ins[1])
        elif kind == "aten::conv2d":
            weight, bias = _const(ins[1]), _const(ins[2])
            (sh, sw), (ph, pw), (dh, dw), groups = _const(ins[3]), _const(ins[4]), _const(ins[5]), _const(ins[6])
            cout, _, kh, kw = weight.shape
            params = (f"0={cout} 1={kw} 11={kh} 2={dw} 12={dh} 3={sw} 13={sh} 4={pw} 14={ph} "
                      f"5={int(bias is not None)} 6={weight.numel()}" + (f" 7={groups}" if groups > 1 else ""))
            out = node.output()
            users = [u.user for u in out.uses()]
            activated = len(users) == 1 and users[0].kind() in _NCNN_ACTIVATIONS
            if activated:
                act = users[0]
                slope = _const(list(act.inputs())[1]) if act.kind() == "aten::leaky_relu" else 0.0
                params += f" 9=2 -23310=1,{float(slope):.9e}"
                fused.add(act)
                out = act.output()
            if (kh, kw, sh, sw, ph, pw, dh, dw, groups) == (1, 1, 1, 1, 0, 0, 1, 1, 1) and not activated:
                ops += _pointwise_gemm(name, ins[0], out, weight, bias, int8_pointwise)
            elif split_groups and 1 < groups <= MAX_SPLIT_GROUPS:
                ops += _conv_per_group(name, ins[0], out, weight, bias, groups, params)
            else:
                ops.append(("ConvolutionDepthWise" if groups > 1 else "Convolution", name, [ins[0]], out, params,
                            _conv_blob(weight, bias)))
        elif node in fused:
            continue
        elif kind in _NCNN_ACTIVATIONS:
            slope = _const(ins[1]) if kind == "aten::leaky_relu" else 0.0
            ops.append(("ReLU", name, [ins[0]], node.output(), f"0={float(slope):.9e}", b""))
        elif kind in ("aten::add", "aten::mul"):
            if kind == "aten::add" and _const(ins[2]) != 1:
                raise NcnnUnsupported("aten::add with alpha != 1")
            op_type = 0 if kind == "aten::add" else 2
            scalars = [_scalar(v) for v in ins[:2]]
            if scalars[0] is None and scalars[1] is None:
                ops.append(("BinaryOp", name, ins[:2], node.output(), f"0={op_type}", b""))
            else:
                tensor, number = (ins[0], scalars[1]) if scalars[1] is not None else (ins[1], scalars[0])
                ops.append(("BinaryOp", name, [tensor], node.output(), f"0={op_type} 1=1 2={number:.9e}", b""))
        elif kind == "aten::cat":
            if _const(ins[1]) not in (1, -3):
                raise NcnnUnsupported("aten::cat along another dimension than channels")
            ops.append(("Concat", name, list(lists[ins[0]]), node.output(), "0=0", b""))
        elif kind == "aten::pixel_shuffle":
            ops.append(("PixelShuffle", name, [ins[0]], node.output(), f"0={int(_const(ins[1]))}", b""))
        elif kind in ("aten::pad", "aten::reflection_pad2d", "aten::replication_pad2d"):
            left, right, top, bottom = _const(ins[1])
            mode = {"aten::reflection_pad2d": "reflect", "aten::replication_pad2d": "replicate"}.get(kind) or _const(ins[2])
            types = {"constant": 0, "replicate": 1, "reflect": 2}
            value = (_const(ins[3]) or 0.0) if kind == "aten::pad" and mode == "constant" else 0.0
            if mode not in types:
                raise NcnnUnsupported(f"padding mode {mode!r}")
            ops.append(("Padding", name, [ins[0]], node.output(),
                        f"0={top} 1={bottom} 2={left} 3={right} 4={types[mode]} 5={float(value):.9e}", b""))
        else:
            raise NcnnUnsupported(f"operation {kind}")
    return ops


MAX_SPLIT_GROUPS = 16  # more groups (depthwise convs) would be as many tiny layers


def _f32(tensor: Any) -> bytes:
    """A tensor's or array's values as raw little-endian float32 bytes."""
    values = tensor.float().contiguous().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    return values.astype("<f4").tobytes()


NCNN_F32_TAG = np.zeros(1, "<u4").tobytes()  # ncnn's weight-blob tag: float32 values follow


def _conv_blob(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bytes:
    """A conv's weights as ncnn reads them: a zero tag (float32 follows), weights, bias (untagged)."""
    return NCNN_F32_TAG + _f32(weight) + (_f32(bias) if bias is not None else b"")


CHANNEL_CROP = "-23309=1,{} -23310=1,{} -23311=1,0"  # ncnn Crop params: channels [start, stop)

NCNN_INT8_TAG = 0x000D4B38  # ncnn's weight-blob tag: int8 values follow (padded to 4 bytes)


def _pointwise_gemm(name: str, x: Any, out: Any, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    int8: bool = False) -> List[Tuple[str, str, List[Any], Any, str, bytes]]:
    """A 1 x 1 conv ``[C, H, W] -> [N, H, W]`` as ncnn's Gemm on the pixels: ``x`` viewed as
    ``[C, 1, H * W]``, the product written as ``[N, 1, H * W]`` (``output_N1M``), viewed back
    with ``x``'s height and width (a shape expression).  Both views share the packed memory:
    no copy (a 2-D reshape repacks, 33 ms per 256-channel 199 x 512 strip).  In float32 it is
    the Convolution layer's product, 7-9 % faster (Zen 3, 1 and 2 threads).

    ``int8``: each pixel's C values quantized by their own absolute maximum (ncnn's Gemm with
    a dynamic A takes per-row scales; the rows are the pixels), the weights by the tensor's,
    products summed in int32 and scaled back to float32.  A pixel's rounding depends on its own
    values only, so on no chunking, and no range can be exceeded.
    """
    cout, cin = weight.shape[:2]
    flat, product = (name, "flat"), (name, "gemm")  # blobs of their own, not graph values
    w = weight.reshape(cout, cin).float().contiguous().numpy()
    params = f"2=1 3=1 5=1 8={cout} 9={cin} 11=1 14=1"  # A = x transposed (pixels x C), B = W [N x C]
    if int8:
        scale = 127.0 / max(float(np.abs(w).max()), 1e-30)
        q = np.clip(np.round(w * scale), -127, 127).astype(np.int8).tobytes()
        blob = np.array([NCNN_INT8_TAG], "<u4").tobytes() + q + bytes(-len(q) % 4)
        params += " 18=2"
    else:
        blob = NCNN_F32_TAG + _f32(w)
    if bias is not None:  # C: one value per output channel (broadcast type 4: along N), tagged
        params += " 6=1 10=4"
        blob += NCNN_F32_TAG + _f32(bias)
    if int8:
        blob += _f32([scale])  # B's scale, raw float32
    return [("Reshape", f"{name}_flat", [x], flat, "0=-1 1=1 2=0", b""),
            ("Gemm", name, [flat], product, params, blob),
            ("Reshape", f"{name}_view", [product, x], out, '6="1w,1h,0c"', b"")]


def _conv_per_group(name: str, x: Any, out: Any, weight: torch.Tensor, bias: Optional[torch.Tensor], groups: int,
                    params: str) -> List[Tuple[str, str, List[Any], Any, str, bytes]]:
    """A grouped conv as ``groups`` crops of the input's channels, a conv on each, a concatenation."""
    cin, cout = weight.shape[1], weight.shape[0] // groups  # per group
    params = params.replace(f"0={weight.shape[0]} ", f"0={cout} ", 1).replace(f" 7={groups}", "")
    params = params.replace(f" 6={weight.numel()}", f" 6={weight.numel() // groups}")
    ops, parts = [], []
    for k in range(groups):
        crop, conv_out = (name, "crop", k), (name, "conv", k)  # blobs of their own, not graph values
        ops.append(("Crop", f"{name}_crop{k}", [x], crop, CHANNEL_CROP.format(k * cin, (k + 1) * cin), b""))
        ops.append(("Convolution", f"{name}_g{k}", [crop], conv_out, params,
                    _conv_blob(weight[k * cout:(k + 1) * cout], None if bias is None else bias[k * cout:(k + 1) * cout])))
        parts.append(conv_out)
    return ops + [("Concat", name, parts, out, "0=0", b"")]


def _channel_crop(op: Tuple[str, str, List[Any], Any, str, bytes]) -> Optional[Tuple[int, int]]:
    """(start, stop) channels of a crop ``_conv_per_group`` made (``CHANNEL_CROP``), else None."""
    found = re.fullmatch(CHANNEL_CROP.replace("{}", r"(\d+)"), op[4]) if op[0] == "Crop" else None
    return (int(found[1]), int(found[2])) if found else None


def _layer_params(params: str) -> Dict[str, str]:
    """An ncnn layer's params text ("0=256 1=3 ...") as {id: value}."""
    return dict(token.split("=", 1) for token in params.split())


def _keep_groups_apart(ops: List[Tuple[str, str, List[Any], Any, str, bytes]], output: Any) -> List[Tuple[str, str, List[Any], Any, str, bytes]]:
    """Split grouped convs feeding split grouped convs with the same channel groups: the second
    reads the first's per-group outputs, without the concatenation and crops between them.

    In a CARN unit (grouped 3 x 3 -> grouped 3 x 3) that drops one concatenation and four crops
    of a 256-channel tensor per unit: 2 of the 4 copies ``split_groups`` adds.
    """
    made = {op[3]: op for op in ops}
    uses = _reads(ops, output)
    readers: Dict[Any, List[Tuple[str, str, List[Any], Any, str, bytes]]] = {}
    for op in ops:
        for value in op[2]:
            readers.setdefault(value, []).append(op)
    renamed: Dict[Any, Any] = {}
    dropped: set = set()
    for op in ops:
        if op[0] != "Concat" or not all(isinstance(p, tuple) and p[1:2] == ("conv",) for p in op[2]):
            continue  # not the concatenation of a split grouped conv
        crops = readers.get(op[3], [])
        sizes = [int(_layer_params(made[p][4])["0"]) for p in op[2]]
        bounds = [(sum(sizes[:k]), sum(sizes[:k + 1])) for k in range(len(sizes))]
        if len(crops) != uses.get(op[3], 0) or sorted(_channel_crop(c) or (-1, -1) for c in crops) != bounds:
            continue  # read whole somewhere, or cropped across the groups
        for crop in crops:
            renamed[crop[3]] = op[2][bounds.index(_channel_crop(crop))]
            dropped.add(crop[1])
        dropped.add(op[1])
    return [(t, n, [renamed.get(v, v) for v in ins], o, p, b) for t, n, ins, o, p, b in ops if n not in dropped]


def _reads(ops: List[Tuple[str, str, List[Any], Any, str, bytes]], output: Any) -> Dict[Any, int]:
    """How many times each value is read: by the ops, and once as the network's output."""
    uses: Dict[Any, int] = {output: 1}
    for op in ops:
        for value in op[2]:
            uses[value] = uses.get(value, 0) + 1
    return uses


def _reassociate_sums(ops: List[Tuple[str, str, List[Any], Any, str, bytes]], output: Any) -> List[Tuple[str, str, List[Any], Any, str, bytes]]:
    """``a + (c + d)`` -> ``(a + c) + d`` where ``c + d`` is read once and ``d`` is the newer operand.

    ncnn computes a layer's inputs in the order they are listed, on demand, and frees a blob
    after its last reader.  In a CARN unit ``acc + (x + conv3(...))`` then sums ``acc + x``
    before the unit's convs, and the unit's input ``x`` dies after its first conv: one
    256-channel tensor fewer held through each unit (with the in-place pre- and post-processing,
    the UDF's peak at 512 px after two windows went from 1.76 to 1.53-1.55 GiB).  Float sums in
    another order: ~1e-7 relative.
    """
    def is_sum(op: Tuple[str, str, List[Any], Any, str, bytes]) -> bool:
        return op[0] == "BinaryOp" and op[4] == "0=0" and len(op[2]) == 2

    made = {op[3]: i for i, op in enumerate(ops)}
    uses = _reads(ops, output)
    out = list(ops)
    for i, op in enumerate(ops):
        inner = made.get(op[2][1]) if is_sum(op) else None
        if inner is None or not is_sum(ops[inner]) or uses[op[2][1]] != 1 or not isinstance(out[inner], tuple):
            continue  # not a sum of a sum read once, or that sum was rewritten already (a chain)
        c, d = sorted(ops[inner][2], key=lambda v: made.get(v, -1))  # d: made last (the unit's conv)
        first = ("BinaryOp", ops[inner][1], [op[2][0], c], ops[inner][3], "0=0", b"")
        out[inner] = None  # both sums where the outer one was: every operand exists by then
        out[i] = [first, ("BinaryOp", op[1], [ops[inner][3], d], op[3], "0=0", b"")]
    flat: List[Tuple[str, str, List[Any], Any, str, bytes]] = []
    for item in out:
        flat += item if isinstance(item, list) else [item] if item is not None else []
    return flat


def _valid_convs(ops: List[Tuple[str, str, List[Any], Any, str, bytes]], source: Any,
                 output: Any) -> Tuple[List[Tuple[str, str, List[Any], Any, str, bytes]], int]:
    """The network with unpadded ("valid") convolutions, and its output's shrink.

    Each tensor is then the original one less ``shrink`` pixels on every side: a k x k conv
    adds its padding to it, a pixel shuffle multiplies it by its factor, and a sum or
    concatenation crops its less shrunk inputs to the most shrunk one.  Pixels the zero padding
    could reach are never computed: only those the UDF keeps, which lie ``margin`` pixels or more
    inside the window.  NcnnUnsupported for strided, asymmetric or explicit padding.
    """
    shrink: Dict[Any, int] = {source: 0}
    made: List[Tuple[str, str, List[Any], Any, str, bytes]] = []
    for kind, name, ins, out, params, blob in ops:
        if kind in ("Convolution", "ConvolutionDepthWise"):
            p = _layer_params(params)
            k, kh, d, dh = int(p["1"]), int(p["11"]), int(p["2"]), int(p["12"])
            pad, pad_h = int(p["4"]), int(p["14"])
            if p["3"] != "1" or p["13"] != "1" or pad != pad_h or 2 * pad != d * (k - 1) or 2 * pad_h != dh * (kh - 1):
                raise NcnnUnsupported(f"valid convolutions: {name} is strided or not padded to its own size")
            params = params.replace(f" 4={pad} 14={pad} ", " 4=0 14=0 ", 1)
            shrink[out] = shrink[ins[0]] + pad
        elif kind == "Padding":
            raise NcnnUnsupported("valid convolutions: an explicit padding layer")
        elif kind == "PixelShuffle":
            shrink[out] = shrink[ins[0]] * int(params.split("=", 1)[1])
        elif len(ins) > 1:  # a sum, product or concatenation: all its inputs the same size
            target = max(shrink[v] for v in ins)
            cropped = []
            for j, v in enumerate(ins):
                if shrink[v] < target:
                    e = target - shrink[v]
                    crop = (v, "valid", target)  # a blob of its own
                    made.append(("Crop", f"{name}_valid{j}", [v], crop, f"-23309=2,{e},{e} -23310=2,{-e},{-e} -23311=2,1,2", b""))
                    shrink[crop] = target
                    v = crop
                cropped.append(v)
            ins, shrink[out] = cropped, target
        else:
            shrink[out] = shrink[ins[0]]
        made.append((kind, name, ins, out, params, blob))
    return made, shrink[output]


class NcnnNetwork(NamedTuple):
    param: str  # ncnn's param text
    weights: bytes
    shrink: int  # output pixels lost on each side (unpadded convs), 0 where the convs pad


def ncnn_network(backbone: Any, split_groups: bool = False, valid: bool = False, int8_pointwise: bool = False) -> NcnnNetwork:
    """The float32 TorchScript ``backbone`` as an ncnn network: (param text, weight bytes, shrink).

    Input blob ``in`` and output blob ``out``, ``[C, H, W]`` without the batch dimension.
    Converted: conv2d (any groups, stride, dilation; a LeakyReLU / ReLU after it fused in), LeakyReLU,
    ReLU, add, multiplication by a constant, concatenation over channels (lists built in
    unrolled loops too), pixel shuffle, padding.  NcnnUnsupported (a ValueError) names the first
    other operation (e.g. ESRGAN's ``F.interpolate``, whose rank branches TorchScript keeps).
    ``split_groups``: grouped convs as one conv per group (``_ncnn_ops``), for bf16; a split
    grouped conv reads the one before it per group where their groups match (``_keep_groups_apart``:
    a 199 x 512 strip in float32 4.75 s against 5.47 s with a concatenation and crops between
    them, as fast as ncnn's grouped layer, 4.76 s; Zen 3, 2 threads, medians of 5).
    ``valid``: unpadded convolutions (``_valid_convs``) where every layer allows them (else
    padded, logged: explicit reflection padding, weights exported before zero padding): the
    output is the padded network's less ``shrink`` pixels on each side, equal to it wherever the
    padding does not reach.  A 199 x 512 px strip of the default model in 4.2-5.1 s instead of
    5.1-5.8 s (Zen 3, 2 threads; 1.19x by the medians): the layers compute 14 % fewer pixels and
    skip the padding copy before each 3 x 3 conv, for 12 crops where sums meet.
    """
    graph = torch.jit.freeze(backbone.eval()).graph
    torch._C._jit_pass_inline(graph)
    inputs, outputs = list(graph.inputs())[1:], list(graph.outputs())
    if len(inputs) != 1 or len(outputs) != 1:
        raise NcnnUnsupported(f"a backbone with {len(inputs)} inputs and {len(outputs)} outputs")
    ops = _ncnn_ops(graph, split_groups, int8_pointwise)
    if split_groups:
        ops = _keep_groups_apart(ops, outputs[0])
    ops = _reassociate_sums(ops, outputs[0])
    shrink = 0
    if valid:
        try:
            ops, shrink = _valid_convs(ops, inputs[0], outputs[0])
        except NcnnUnsupported as exc:
            log.info("s2sr: ncnn with padded convs (%s)", exc)
    names = {inputs[0]: "in", outputs[0]: "out"}
    uses = _reads(ops, outputs[0])
    layers = ["Input input 0 1 in"]
    pending: Dict[Any, List[str]] = {}

    def produce(value: Any) -> None:
        # ncnn feeds each blob to one layer: a blob read n times goes through a Split (references)
        name = names.setdefault(value, f"b{len(names)}")
        if uses.get(value, 0) > 1:
            copies = [f"{name}_{k}" for k in range(uses[value])]
            layers.append(f"Split split_{name} 1 {len(copies)} {name} {' '.join(copies)}")
            pending[value] = copies

    def consume(value: Any) -> str:
        return pending[value].pop() if value in pending else names[value]

    produce(inputs[0])
    weights = []
    for op_type, name, ins, out, params, blob in ops:
        sources = " ".join(consume(v) for v in ins)
        layers.append(f"{op_type} {name} {len(ins)} 1 {sources} {names.setdefault(out, f'b{len(names)}')} {params}")
        produce(out)
        weights.append(blob)
    blobs = {tok for line in layers for tok in _layer_outputs(line)}
    return NcnnNetwork(f"7767517\n{len(layers)} {len(blobs)}\n" + "\n".join(layers) + "\n", b"".join(weights), shrink)


def _layer_outputs(line: str) -> List[str]:
    parts = line.split()
    n_in, n_out = int(parts[2]), int(parts[3])
    return parts[4 + n_in:4 + n_in + n_out]


def strips(h: int, w: int, margin: int, count: Optional[int] = None, budget: Optional[int] = None) -> List[Tuple[int, int, int, int]]:
    """Row strips of an ``h x w`` input: (start, stop) rows computed, (top, bottom) rows kept.

    The fewest strips of one common height with at most ``budget`` (default
    ``NCNN_STRIP_PIXELS``) pixels each (one strip where the margins would not fit), or ``count``
    strips, evenly spaced; each kept row lies ``margin`` rows or more inside its strip, or at the
    input's own edge.  Kept rows tile ``[0, h)``.
    """
    budget = NCNN_STRIP_PIXELS if budget is None else budget
    n, height = 1, h
    if count is not None:
        n, height = count, math.ceil((h + 2 * margin * (count - 1)) / count)
    while count is None and height * w > budget:
        taller = math.ceil((h + 2 * margin * n) / (n + 1))  # n + 1 strips overlapping by 2 x margin
        if taller <= 2 * margin or taller >= height:
            break  # the margins would eat the strips: no gain from more
        n, height = n + 1, taller
    if n == 1:
        return [(0, h, 0, h)]
    starts = [round(i * (h - height) / (n - 1)) for i in range(n)]
    cuts = [0] + [(starts[i] + starts[i - 1] + height) // 2 for i in range(1, n)] + [h]
    return [(starts[i], starts[i] + height, cuts[i], cuts[i + 1]) for i in range(n)]


Span = Tuple[int, int, int, int]  # computed [start, stop), kept [top, bottom), along one axis


def tiles(h: int, w: int, margin: int, workers: int = 1) -> List[Tuple[Span, Span]]:
    """(rows, columns) tiles of an ``h x w`` input for ``workers`` networks that run at once.

    One worker: full-width row strips (``strips``).  More: tiles of one common size with at
    most ``NCNN_TILE_PIXELS`` pixels each, over 1-4 column spans; the plan whose rounds of
    ``workers`` tiles compute the fewest pixels (a 512 px window with a 21 px margin: 3 x 2
    tiles of 199 x 277).  Kept rows and columns tile the input, each ``margin`` or more inside
    its tile or at the input's edge, as for strips.
    """
    if workers <= 1:
        return [(rows, (0, w, 0, w)) for rows in strips(h, w, margin)]
    best: Optional[Tuple[int, List[Tuple[Span, Span]]]] = None
    for n_cols in range(1, 5):
        cols = strips(w, h, margin, n_cols)
        width = cols[0][1] - cols[0][0]
        if n_cols > 1 and width <= 2 * margin + n_cols:
            break  # the margins would eat the columns
        rows = strips(h, width, margin, budget=NCNN_TILE_PIXELS)
        plan = [(r, c) for r in rows for c in cols]
        cost = math.ceil(len(plan) / workers) * (rows[0][1] - rows[0][0]) * width  # rounds x pixels per tile
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    return best[1]


class NcnnModel:
    """A weights file's SuperResolver with its backbone on ncnn, called like the TorchScript
    module: ``[B, bands, H, W]`` in the model's input units -> ``[B, bands, fH, fW]``, float32.

    ``precision``: what the network was built for (``fp32``, ``int8_dynamic``: its int8
    products are in its layers; ``bf16``: ncnn stores the backbone's activations and weights in
    bfloat16, its AVX512-BF16 kernels multiply them where the CPU has them, products summed in
    float32).  The input, the skip, constraint and output stay float32.
    """

    nchw = True  # the converted network reads NCHW (no channels-last round trip)

    def __init__(self, module: Any, network: NcnnNetwork, meta: Dict[str, Any], threads: int, precision: str = "fp32",
                 layout: str = "strips") -> None:
        self.module, self.factor, self.margin = module, int(meta["factor"]), int(meta["margin"])
        self.global_skip, self.hard_constraint = bool(module.global_skip), bool(module.hard_constraint)
        self.precision = precision
        self.shrink = network.shrink
        if self.shrink > self.factor * self.margin:
            raise NcnnUnsupported(f"unpadded convs lose {self.shrink} output pixels per side, more than the margin")
        self._weights = network.weights  # ncnn may reference weight bytes in place (int8 ones) until it packs them
        # tiles: one 1-thread network per thread, each on its own tiles at once; strips: one
        # network of ``threads`` threads that splits every layer (see ``tiles``)
        nets, per_net = (threads, 1) if layout == "tiles" and threads > 1 else (1, threads)
        self.layout = "tiles" if nets > 1 else "strips"  # what runs: one network cuts a window in strips
        import ncnn  # optional: only this runtime needs it

        self._mat = ncnn.Mat
        self.pools: List[Any] = []  # each network's (blob, workspace) pools: ncnn holds no reference to them
        self.nets = [self._network(network, per_net, precision == "bf16") for _ in range(nets)]

    def _network(self, network: NcnnNetwork, threads: int, bf16: bool) -> Any:
        import ncnn  # optional: only this runtime needs it

        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = threads  # fixed at load: ncnn packs the weights for its thread count
        opt.use_vulkan_compute = False
        # float32 unless bf16 is asked: ncnn may otherwise keep activations in fp16 / bf16 where the CPU has them
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = opt.use_bf16_packed = bf16
        # ncnn keeps the buffers of a call in pools for the next; reusing one for requests down to
        # half its size held the least (277 x 512 px strip: 1.34 GiB; ncnn's own pools 1.6, 0.99: 1.7)
        pools = (ncnn.PoolAllocator(), ncnn.PoolAllocator())
        for pool in pools:
            pool.set_size_compare_ratio(0.5)
        opt.blob_allocator, opt.workspace_allocator = pools
        self.pools.append(pools)
        if net.load_param_mem(network.param) != 0:
            raise NcnnUnsupported("ncnn did not accept the converted network")
        net.load_model_mem(self._weights)
        return net

    def release(self) -> None:
        """Give back the buffers the pools keep from earlier calls (e.g. the load-time check's and
        timing's small windows, which a 512 px window's strips could not reuse: ~0.15 GiB)."""
        for pools in self.pools:
            for pool in pools:
                pool.clear()

    def _run(self, x: np.ndarray, worker: int = 0) -> np.ndarray:
        """normalised ``[C, h, w]`` float32 -> ``[C, fh, fw]`` through the ncnn backbone."""
        extractor = self.nets[worker].create_extractor()
        extractor.input("in", self._mat(x))  # a view of x: x stays referenced until extract returns
        status, y = extractor.extract("out")  # releases the GIL: the workers' tiles run at once
        if status != 0:
            raise RuntimeError(f"ncnn failed on a {x.shape} input (status {status})")
        return np.array(y)

    def backbone(self, z: torch.Tensor) -> torch.Tensor:
        """normalised ``[B, C, H, W]`` -> ``[B, C, fH, fW]``, in tiles (``tiles``): row strips
        on one network, or tiles shared out among the 1-thread networks, which run at once.

        Unpadded convs (``shrink``): only the output pixels ``shrink`` or more inside the window
        are computed (those whose receptive field lies in it; the UDF keeps those ``factor x
        margin`` or more inside), the backbone's output is zero nearer the edge (the output
        there is the bicubic skip alone, in the window's overlap, which the UDF or the backend
        crops).
        """
        b, c, h, w = z.shape
        f, s = self.factor, self.shrink
        z = z.float().contiguous().numpy()
        out = (np.zeros if s else np.empty)((b, c, f * h, f * w), dtype=np.float32)
        if f * min(h, w) <= 2 * s:
            return torch.from_numpy(out)  # no pixel has its receptive field inside
        plan = tiles(h, w, self.margin, len(self.nets))
        work = queue.SimpleQueue()  # each network takes the next tile: a vCPU a neighbour stalls holds up fewer
        for i in range(b):
            for rows, cols in plan:
                work.put((i, rows, cols))

        def run(worker: int) -> None:
            while True:
                try:
                    i, rows, cols = work.get_nowait()
                except queue.Empty:
                    return
                self._tile(z[i], out[i], rows, cols, worker)

        if len(self.nets) == 1:
            run(0)
        else:
            with ThreadPoolExecutor(len(self.nets)) as pool:
                for done in [pool.submit(run, k) for k in range(len(self.nets))]:
                    done.result()  # an ncnn failure in a worker is raised here
        return torch.from_numpy(out)

    def _tile(self, z: np.ndarray, out: np.ndarray, rows: Span, cols: Span, worker: int) -> None:
        """One tile of ``z`` ``[C, h, w]`` through network ``worker`` into its kept part of ``out``."""
        f, s = self.factor, self.shrink
        (r0, r1, top, bottom), (c0, c1, left, right) = rows, cols
        # output rows / columns [lo, hi) from this tile: the kept ones it computes
        lo, hi = max(f * top, f * r0 + s), min(f * bottom, f * r1 - s)
        west, east = max(f * left, f * c0 + s), min(f * right, f * c1 - s)
        if lo < hi and west < east:
            y = self._run(np.ascontiguousarray(z[:, r0:r1, c0:c1]), worker)
            out[:, lo:hi, west:east] = y[:, lo - f * r0 - s:hi - f * r0 - s, west - f * c0 - s:east - f * c0 - s]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.module.normalize(x.float())
        y = self.backbone(z)
        if self.global_skip:  # in place: y is this call's own
            y += torch.nn.functional.interpolate(z, scale_factor=float(self.factor), mode="bicubic", align_corners=False)
        if self.hard_constraint:
            y = self.module.constraint(y, z)
        return self.module.denormalize(y)


@functools.lru_cache(maxsize=4)
def load_ncnn(path_str: str, size: int, mtime: float, threads: int, precision: str = "fp32",
              layout: str = "strips") -> Tuple[NcnnModel, Dict[str, Any]]:
    """The weights' model with its backbone converted to ncnn for ``threads`` threads, in
    ``precision`` (``fp32``, ``bf16`` or ``int8_dynamic``), its windows cut as ``layout`` says
    (``strips`` or ``tiles``: ``NcnnModel``; ``precision.ncnn_layout()`` is this worker's choice).

    ValueError (NcnnUnsupported) where the backbone does not convert or the converted network
    is not the same function (checked on a seeded texture against TorchScript float32: within
    1e-5 of its range in fp32; bf16 and int8_dynamic, built from the checked fp32 network, within
    their ``NCNN_REDUCED`` bound).
    """
    if precision in NCNN_REDUCED:
        return _load_ncnn_reduced(path_str, size, mtime, threads, precision, layout)
    path = Path(path_str)
    module, meta = load_torchscript(path_str, size, mtime, "cpu")
    if weights_precision(meta) != "fp32":
        raise NcnnUnsupported(f"runtime 'ncnn' runs float weights, {path.name} holds {weights_precision(meta)} ones")
    try:
        model = NcnnModel(module, ncnn_network(module.backbone, valid=True), meta, threads, layout=layout)
        error, bound = _ncnn_error(model, module, meta)
    except NcnnUnsupported as exc:
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name}: {exc}") from None
    except Exception as exc:  # an ncnn build that fails on this CPU, a module without the structure
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name} ({cause(exc)})") from None
    # Winograd rounds differently from a direct convolution: ~1e-6 of the range (measured)
    if not error <= 1e-5 * bound:  # also catches NaN
        raise NcnnUnsupported(f"runtime 'ncnn' is off by {error:.4g} (> {1e-5 * bound:.4g}) on {path.name}'s check input")
    log.info("s2sr: ncnn backbone for %s, %d threads, %s (max |diff| %.3g on the check input)", path.name, threads, layout, error)
    return model, meta


BF16_CHECK = 3e-2
"""The most a bf16 ncnn network may differ from TorchScript float32 on the load-time check
input, relative to the output's range: the default weights differ by 0.8-0.9 % (bfloat16 keeps
8 bits of mantissa, and where the CPU has no bf16 conversion ncnn rounds toward zero: torch's
bf16 trunk, rounding to nearest, 0.2-0.4 %); a broken bf16 kernel by far more, or NaN."""

INT8_CHECK = 2e-2
"""The same bound for the ncnn network with int8 1 x 1 products (``int8_dynamic``): the
default weights differ by 0.33 % on the check input (bf16: 0.57 %); an int8 kernel that
saturated, or a scale read wrongly, by far more."""

NCNN_REDUCED = {"bf16": BF16_CHECK, "int8_dynamic": INT8_CHECK}  # precision -> load-time check bound


def _load_ncnn_reduced(path_str: str, size: int, mtime: float, threads: int, precision: str,
                       layout: str) -> Tuple[NcnnModel, Dict[str, Any]]:
    """The ncnn network in ``precision`` (``NCNN_REDUCED``), built from the fp32 conversion
    (itself checked within 1e-5) and checked against TorchScript float32 within its bound."""
    path = Path(path_str)
    fp32, meta = load_ncnn(path_str, size, mtime, threads, "fp32")  # the conversion, checked in float32 (one network)
    bf16, int8 = precision == "bf16", precision == "int8_dynamic"
    try:
        network = ncnn_network(fp32.module.backbone, split_groups=bf16, valid=True, int8_pointwise=int8)
        model = NcnnModel(fp32.module, network, meta, threads, precision, layout)
        error, bound = _ncnn_error(model, fp32.module, meta)
    except NcnnUnsupported as exc:
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name} in {precision}: {exc}") from None
    except Exception as exc:  # an ncnn build without bf16 storage or int8 products for some layer
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name} in {precision} ({cause(exc)})") from None
    limit = NCNN_REDUCED[precision]
    if not error <= limit * bound:
        raise NcnnUnsupported(f"runtime 'ncnn' in {precision} is off by {error:.4g} (> {limit * bound:.4g}) "
                              f"on {path.name}'s check input")
    log.info("s2sr: ncnn %s backbone for %s, %d threads, %s (max |diff| %.3g on the check input)", precision, path.name,
             threads, layout, error)
    return model, meta


def _ncnn_error(model: NcnnModel, module: Any, meta: Dict[str, Any]) -> Tuple[float, float]:
    """(max |ncnn - TorchScript float32|, max |TorchScript|) on the seeded texture, input units,
    over the pixels the UDF keeps (``margin`` or more inside where the convs are unpadded).
    The model's pools are emptied after it: a window's strips could not reuse these buffers."""
    m = model.margin if model.shrink else 0
    check = texture(meta, "cpu", 32 + 2 * m)
    with torch.inference_mode():
        reference, result = module(check), model(check)
    model.release()
    if result.shape != reference.shape:
        raise NcnnUnsupported(f"the converted network maps {tuple(check.shape)} to {tuple(result.shape)}, "
                              f"TorchScript to {tuple(reference.shape)}")
    e = model.factor * m
    kept = (..., slice(e, result.shape[-2] - e), slice(e, result.shape[-1] - e))  # shapes equal: checked above
    result, reference = result[kept], reference[kept]
    return float((result - reference).abs().max()), float(reference.abs().max())
