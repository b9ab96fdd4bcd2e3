"""s2sr openEO UDF: Sentinel-2 10 / 20 m bands super-resolved to 5 m.

Self-contained (numpy, xarray, torch, openeo; ncnn where the worker has it): an openEO backend
runs this file as text inside ``apply_neighborhood``.  ``apply_datacube`` takes a window
``[t, bands, y, x]`` (or ``[bands, y, x]``) of the ten bands B02 B03 B04 B08 B05 B06 B07 B8A B11
B12 on the 10 m grid and returns it at 5 m, overlap included (the backend crops it);
``apply_metadata`` halves the cube's spatial step.  Works under the ``Python-Jep`` runtime (the one that lets
``apply_neighborhood`` change resolution) and under plain ``Python`` / ``run_code``.

Context keys (all optional; an empty context runs the default model):

==================  ======================================================================
``model``           model name, e.g. ``"carn_3x3x64g4sw"``; looked up as ``<model>.pt`` in
                    ``weights_dir``, ``$S2SR_WEIGHTS_DIR``, ``./s2sr_weights`` (the folder of
                    the job's ``udf-dependency-archives`` entry) and the installed s2sr package
``weights``         explicit path of a weights file (overrides ``model``)
``weights_dir``     extra folder searched first for ``<model>.pt``
``device``          ``"cpu"`` (default), ``"cuda"`` or ``"auto"`` (on a GPU ``precision:
                    "auto"`` times fp32 against bf16, and fp32 is float32: cuDNN without
                    TensorFloat-32)
``threads``         threads for torch and ncnn (default: the CPUs this worker may use: its
                    affinity, capped by a cgroup CPU quota and by ``OMP_NUM_THREADS``, which
                    Spark sets to the task's cores)
``batch``           dates per forward pass (default 1: bounded memory)
``precision``       ``"auto"`` (default: fp32, bf16 or int8_dynamic on ncnn, whichever a one-off
                    timing on this worker finds faster, a reduced precision only where >= 1.1x
                    faster than fp32, bf16 only timed where the CPU multiplies bf16 natively),
                    ``"fp32"`` (the reference path), ``"bf16"`` (the network's trunk in
                    bfloat16; normalisation, skip and constraint in float32; PSNR within 0.01 dB
                    of fp32) or ``"int8"`` (opt-in, CPU only: ``<model>_int8.pt`` made by
                    ``s2sr-export --int8-from``; PSNR within 0.1 dB, but static activation scales
                    clip at bright point targets, so ``auto`` never picks it) or
                    ``"int8_dynamic"`` (CPU only, int8 products with activation scales taken
                    from the data, so nothing can clip; on ncnn: the 1 x 1 convs' products, each
                    pixel scaled by its own largest channel, the weights per tensor, float32
                    elsewhere; a pixel's rounding follows no chunking: PSNR drop 0.006 dB, 0.005
                    reflectance at most on the sample scene, and an ``auto`` candidate.  On torch
                    (opt-in): the trunk's 3 x 3 convs, each activation over its own range in each
                    call, 8-bit where the CPU sums int8 exactly (VNNI; PSNR drop 0.004 dB,
                    emulated), 7-bit elsewhere (0.025 dB, 0.011 reflectance at most); the rounding
                    follows the window (and the dates in its ``batch``), so a pixel depends on
                    the chunking, within the sum of the two chunkings' errors, and ``auto`` never
                    picks it)
``runtime``         ``"auto"`` (default: where the worker has the ``ncnn`` package, the
                    precision runs on torch or on ncnn, whichever a one-off timing finds
                    faster), ``"torch"`` or ``"ncnn"`` (CPU only: the backbone converted at load
                    from the same weights into an ncnn network, whose Winograd 3 x 3
                    convolutions do 4x fewer multiplications; in fp32 float32 throughout, within
                    1e-5 of torch; in bf16 activations and weights stored in bfloat16, products
                    summed in float32, PSNR within 0.01 dB of fp32; in int8_dynamic as above;
                    its convolutions unpadded: each layer computes only what the kept pixels
                    need, and output pixels nearer the window's edge than the receptive field,
                    in the overlap the backend crops, are the bicubic interpolation)
``scale``           input units per unit of reflectance (default 10000: L2A digital numbers)
``offset``          added to input values before scaling: reflectance = (value + offset) /
                    scale (default 0; -1000 for L1C / L2A of processing baseline >= 04.00
                    when the backend did not remove it)
``nodata``          an input value meaning no-data, besides NaN (default none)
``output_dtype``    ``"float32"`` (default; input units, NaN no-data) or ``"int16"``
                    (rounded, no-data -10000)
``overlap``         the ``apply_neighborhood`` overlap in input pixels; the UDF pads the
                    window itself only by what the overlap lacks of the model's margin (the
                    outer ``overlap`` pixels of the result are returned for the backend to crop)
``factor``          expected upscaling factor; an error if the weights differ
``resolution``      input pixel size, only needed for windows one pixel wide
==================  ======================================================================

No-data: a NaN (or ``nodata``) input value stays no-data in the output over exactly the
``factor x factor`` pixels it covers; the network sees the band's mean reflectance there (a
fill that depends on nothing but the pixel, so that results do not depend on the chunking).
The network runs only on the box around the window's valid pixels widened by the margin
(``valid_extent``): a window over the scene's edge, which backends fill with no-data, costs
what its valid part costs (the last row and column of windows over a Sentinel-2 tile; a small
area in one large window).
"""

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

# Idle OpenMP threads must sleep, not spin: on the 2-vCPU workers measured, spinning threads took
# the core from the working one, so 2 threads ran the net slower than 1 (FP32 2.6 s vs 2.3 s per
# 128 px window; passive: 1.65 s).  Read once, when torch loads OpenMP: set before importing it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tensors of 2 MB and more on transparent huge pages (torch's allocator madvises them; the
# kernel's THP mode "madvise", the common default).  Every activation of the net is a fresh
# allocation that the kernel maps and zeroes page by page: with 4 KB pages a 512 px window took
# 3.5 million page faults and 12 s of system time per forward pass.  Huge pages: 38 thousand
# faults, the pass 28.1 s -> 24.0 s (Zen 3, 2 threads), same peak memory.  Read when torch
# makes its first tensor: set before importing it (admins can set it in the worker's environment).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray  # noqa: E402
from openeo.metadata import CollectionMetadata  # noqa: E402
from openeo.udf import XarrayDataCube  # noqa: E402

UDF_VERSION = "0.1.0"
WEIGHTS_FORMAT = "s2sr-weights"
WEIGHTS_FORMAT_VERSION = 1
METADATA_FILE = "s2sr_metadata.json"
MANIFEST_FILE = "manifest.json"
DEFAULT_MODEL = "carn_3x3x64g4sw"
ARCHIVE_DIR = "s2sr_weights"
INT16_NODATA = -10000
#: reflectances outside this range are not physical: masked, and an error when they dominate
REFLECTANCE_RANGE = (-1.0, 3.0)
CONTEXT_KEYS = (
    "model", "weights", "weights_dir", "device", "threads", "batch", "precision", "scale",
    "offset", "nodata", "output_dtype", "overlap", "factor", "resolution", "runtime",
)
PRECISIONS = ("fp32", "bf16", "int8", "int8_dynamic", "auto")
RUNTIMES = ("auto", "torch", "ncnn")
#: ``auto`` times a bf16 model only where one bf16 conv runs at least this fast relative to FP32
#: (~2x where the CPU has bf16 arithmetic, ~0.15x where torch emulates it); the model-level
#: timing then asks for 1.1x
BF16_MIN_SPEEDUP = 0.8
INT8_SUFFIX = "_int8"  # <model>_int8.pt: the int8 weights made from <model>.pt (s2sr-export --int8-from)
QUANTIZED_ENGINE = "onednn"  # the engine the int8 weights were calibrated and packed for
TIME_DIMS = ("t", "time")
SPATIAL_DIMS = ("y", "x")
MIN_NET_SIZE = 8  # the smallest input the net runs on (reflection padding needs > 1 px)

log = logging.getLogger("s2sr.udf")


# --------------------------------------------------------------------------- weights

def canonical_band(name: Any) -> str:
    """'B2', 'b02', 'B8a', 'B08' -> 'B02', 'B02', 'B8A', 'B08'."""
    text = str(name).strip().upper()
    match = re.fullmatch(r"B0?(\d{1,2})(A?)", text)
    if not match:
        return text
    return f"B{int(match.group(1)):02d}" if not match.group(2) else f"B{int(match.group(1))}A"


def _read_metadata_bytes(path: Path) -> bytes:
    """The metadata JSON stored in a TorchScript archive, without unpickling the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + METADATA_FILE)]
            if not names:
                raise ValueError(
                    f"weights file {path} has no {METADATA_FILE}: not an s2sr weights file "
                    "(export it with s2sr.training.export)"
                )
            return archive.read(names[0])
    except zipfile.BadZipFile as exc:
        raise ValueError(f"weights file {path} is corrupt or truncated (not a TorchScript archive: {exc})") from None


def validate_metadata(meta: Any, path: Path) -> Dict[str, Any]:
    """Check the self-description of a weights file; ValueError naming what is wrong."""
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"weights file {path}: metadata is not in the {WEIGHTS_FORMAT!r} format")
    if meta.get("format_version") != WEIGHTS_FORMAT_VERSION:
        raise ValueError(
            f"weights file {path}: format version {meta.get('format_version')!r}, this UDF reads "
            f"version {WEIGHTS_FORMAT_VERSION}"
        )
    missing = [k for k in ("architecture", "bands", "factor", "margin", "input_scaling", "normalization") if k not in meta]
    if missing:
        raise ValueError(f"weights file {path}: metadata lacks {missing}")
    bands = meta["bands"]
    if not isinstance(bands, list) or not bands or len(set(map(canonical_band, bands))) != len(bands):
        raise ValueError(f"weights file {path}: metadata 'bands' must list distinct band names, got {bands!r}")
    factor, margin = meta["factor"], meta["margin"]
    if not isinstance(factor, int) or factor < 2:
        raise ValueError(f"weights file {path}: metadata 'factor' must be an integer >= 2, got {factor!r}")
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"weights file {path}: metadata 'margin' must be an integer >= 0, got {margin!r}")
    scaling, norm = meta["input_scaling"], meta["normalization"]
    if not (isinstance(scaling, dict) and float(scaling.get("scale", 0)) > 0):
        raise ValueError(f"weights file {path}: metadata 'input_scaling' needs a positive 'scale'")
    if not (isinstance(norm, dict) and len(norm.get("mean", [])) == len(bands)):
        raise ValueError(f"weights file {path}: metadata 'normalization' needs one 'mean' per band")
    return meta


def read_metadata(path: Any) -> Dict[str, Any]:
    """The validated metadata of a weights file (cheap: reads one entry of the archive)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        meta = json.loads(_read_metadata_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"weights file {path}: metadata is not valid JSON ({exc})") from None
    return validate_metadata(meta, path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _verify_checksum(path_str: str, size: int, mtime: float) -> None:
    """If a manifest lies beside the weights and lists them, their sha256 must match it."""
    path = Path(path_str)
    manifest_path = path.parent / MANIFEST_FILE
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest.get("models", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"weights manifest {manifest_path} is not valid JSON ({exc})") from None
    for entry in entries.values():
        if isinstance(entry, dict) and entry.get("file") == path.name:
            actual = sha256_file(path)
            if actual != entry.get("sha256"):
                raise ValueError(
                    f"weights file {path} fails its checksum: sha256 {actual} but {manifest_path} "
                    f"lists {entry.get('sha256')} (corrupt or altered weights)"
                )
            return


def _package_weights_dir() -> Optional[Path]:
    """The weights shipped inside an installed s2sr package, located without importing it."""
    try:
        spec = importlib.util.find_spec("s2sr")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights"
        if candidate.is_dir():
            return candidate
    return None


def weights_search_dirs(context: Dict[str, Any]) -> List[Path]:
    """Folders searched for ``<model>.pt``, first match wins."""
    dirs = []
    if context.get("weights_dir"):
        dirs.append(Path(str(context["weights_dir"])))
    if os.environ.get("S2SR_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["S2SR_WEIGHTS_DIR"]))
    dirs.append(Path.cwd() / ARCHIVE_DIR)
    package_dir = _package_weights_dir()
    if package_dir is not None:
        dirs.append(package_dir)
    return dirs


def _default_model_name(dirs: Sequence[Path]) -> str:
    for folder in dirs:
        manifest = folder / MANIFEST_FILE
        if manifest.is_file():
            try:
                name = json.loads(manifest.read_text()).get("default")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(name, str) and name:
                return name
    return DEFAULT_MODEL


def resolve_weights(context: Dict[str, Any]) -> Path:
    """The weights file the context asks for (``weights``, else ``model``, else the default)."""
    if context.get("weights"):
        path = Path(str(context["weights"]))
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist")
        return path
    dirs = weights_search_dirs(context)
    name = context.get("model") or _default_model_name(dirs)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"invalid model name {name!r}")
    for folder in dirs:
        candidate = folder / f"{name}.pt"
        if candidate.is_file():
            return candidate
    available = sorted({p.stem for folder in dirs if folder.is_dir() for p in folder.glob("*.pt")})
    raise ValueError(
        f"unknown model {name!r}: no {name}.pt in {[str(d) for d in dirs]}; available models: {available}"
    )


def weights_precision(meta: Dict[str, Any]) -> str:
    """``"int8"`` for quantized weights, else ``"fp32"`` (float weights run as fp32 or bf16)."""
    return "int8" if meta.get("precision") == "int8" else "fp32"


def _load_torchscript(path_str: str, size: int, mtime: float, device: str) -> Tuple[Any, Dict[str, Any]]:
    """The weights file's TorchScript module as exported (eval mode, probed) and its metadata."""
    path = Path(path_str)
    _verify_checksum(path_str, size, mtime)
    meta = _metadata_cached(path_str, size, mtime)
    try:
        module = torch.jit.load(path_str, map_location=device, _extra_files={METADATA_FILE: ""})
    except Exception as exc:  # torch raises RuntimeError and friends for broken archives
        raise ValueError(
            f"weights file {path} is corrupt or truncated: TorchScript cannot load it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    module.eval()
    _probe(module, meta, path, device)
    return module, meta


@functools.lru_cache(maxsize=8)
def _load_cached(path_str: str, size: int, mtime: float, device: str, precision: str = "fp32") -> Tuple[Any, Dict[str, Any]]:
    path = Path(path_str)
    _verify_checksum(path_str, size, mtime)
    meta = _metadata_cached(path_str, size, mtime)
    if precision == "int8":
        if weights_precision(meta) != "int8":
            raise ValueError(f"weights file {path} holds float weights, not int8 ones")
        _set_quantized_engine(path)  # int8 weights are repacked for the engine while loading
        if not int8_products_exact():
            log.warning("s2sr: this CPU's int8 convolutions saturate (no VNNI: pairs of uint8 x int8 "
                        "products summed in 16 bits), so %s runs with more error than it was "
                        "calibrated for (Zen 3: up to 11 LSB on a layer's outputs); precision 'fp32' "
                        "has no such error", path.name)
    if precision == "int8_dynamic":
        if weights_precision(meta) == "int8":
            raise ValueError(f"weights file {path} holds int8 weights; 'int8_dynamic' quantizes float weights itself")
        _set_quantized_engine(path)
    module, meta = _load_torchscript(path_str, size, mtime, device)
    fusable = device == "cpu" and precision in ("fp32", "bf16")  # oneDNN fusion: float graphs on the CPU
    if fusable or precision == "int8_dynamic":
        texture = _texture(meta, device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            reference = module(texture)  # the float32 result the fused graph must keep
    if precision == "bf16":
        if not hasattr(module, "backbone") or not hasattr(module.backbone, "compute_dtype"):
            raise ValueError(f"weights file {path} predates the bf16 path (no backbone.compute_dtype): use precision 'fp32'")
        module.backbone.to(torch.bfloat16)  # the trunk only: radiometry stays float32
        _probe(module, meta, path, device)
    if device == "cpu":
        module.to(memory_format=torch.channels_last)  # NHWC convolutions are faster on CPU (oneDNN)
    if fusable:
        module = fuse_onednn(module, texture, reference)
    if precision == "int8_dynamic":
        module = _dynamic_int8_checked(module, meta, path, texture, reference)
    log.info("s2sr: loaded %s (%s, x%d, margin %d px) on %s, %s", path, meta["architecture"], meta["factor"], meta["margin"], device, precision)
    return module, meta


def _texture(meta: Dict[str, Any], device: str, size: int = 32) -> torch.Tensor:
    """A seeded ``[1, bands, size, size]`` input in the model's units: the band means with
    +-30 % texture (a constant input would not tell a fused graph from a wrong one)."""
    n, scale = len(meta["bands"]), float(meta["input_scaling"]["scale"])
    mean = torch.tensor(meta["normalization"]["mean"], dtype=torch.float32).view(1, n, 1, 1) * scale
    noise = torch.rand(1, n, size, size, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.7
    return (mean * noise).to(device)


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


def _cause(exc: Exception) -> str:
    """``Type: last non-empty line`` of an exception: TorchScript puts the cause last, after its trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


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
        log.info("s2sr: oneDNN fusion unavailable, unfused graph (%s)", _cause(exc))
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


def _dynamic_int8_checked(module: Any, meta: Dict[str, Any], path: Path, texture: torch.Tensor, reference: torch.Tensor) -> Any:
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
                         f"({_cause(exc)}): use precision 'fp32'") from None
    bound = 0.1 * float(reference.abs().max())
    if not error <= bound:  # also catches NaN
        raise ValueError(f"precision 'int8_dynamic' is off by {error:.4g} (> {bound:.4g}) on {path.name}'s "
                         "check input: use precision 'fp32'")
    log.info("s2sr: dynamic int8 with %d-bit activations (max |diff| %.3g on the check input)", 8 if levels == 255 else 7, error)
    return quantized


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
# ``auto`` times it only where the CPU multiplies bf16 natively (``bf16_conv_speedup``).  Zen 3
# (emulated): 0.007 reflectance at most from FP32 on the sample scene, no PSNR loss.
# The 1 x 1 convs (27 % of the MACs, but about half of the time once the 3 x 3 ones run as
# Winograd) are ncnn Gemm layers on views of the tensors (``_pointwise_gemm``); in int8_dynamic
# their products are int8 with per-pixel activation scales (exact integer sums on AVX2 too).
# Zen 3, 512 px window, the backbone: 1.16x the fp32 network on 2 threads, 1.18x on 1.
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


def strips(h: int, w: int, margin: int) -> List[Tuple[int, int, int, int]]:
    """Row strips of an ``h x w`` input: (start, stop) rows computed, (top, bottom) rows kept.

    The fewest strips of one common height with at most ``NCNN_STRIP_PIXELS`` pixels each (one
    strip where the margins would not fit), evenly spaced; each kept row lies ``margin`` rows
    or more inside its strip, or at the input's own edge.  Kept rows tile ``[0, h)``.
    """
    n, height = 1, h
    while height * w > NCNN_STRIP_PIXELS:
        taller = math.ceil((h + 2 * margin * n) / (n + 1))  # n + 1 strips overlapping by 2 x margin
        if taller <= 2 * margin or taller >= height:
            break  # the margins would eat the strips: no gain from more
        n, height = n + 1, taller
    if n == 1:
        return [(0, h, 0, h)]
    starts = [round(i * (h - height) / (n - 1)) for i in range(n)]
    cuts = [0] + [(starts[i] + starts[i - 1] + height) // 2 for i in range(1, n)] + [h]
    return [(starts[i], starts[i] + height, cuts[i], cuts[i + 1]) for i in range(n)]


class NcnnModel:
    """A weights file's SuperResolver with its backbone on ncnn, called like the TorchScript
    module: ``[B, bands, H, W]`` in the model's input units -> ``[B, bands, fH, fW]``, float32.

    ``precision``: what the network was built for (``fp32``, ``int8_dynamic``: its int8
    products are in its layers; ``bf16``: ncnn stores the backbone's activations and weights in
    bfloat16, its AVX512-BF16 kernels multiply them where the CPU has them, products summed in
    float32).  The input, the skip, constraint and output stay float32.
    """

    def __init__(self, module: Any, network: NcnnNetwork, meta: Dict[str, Any], threads: int, precision: str = "fp32") -> None:
        import ncnn  # optional: only this runtime needs it

        self.module, self.factor, self.margin = module, int(meta["factor"]), int(meta["margin"])
        self.global_skip, self.hard_constraint = bool(module.global_skip), bool(module.hard_constraint)
        self.precision, bf16 = precision, precision == "bf16"
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = threads  # fixed at load: ncnn packs the weights for its thread count
        opt.use_vulkan_compute = False
        # float32 unless bf16 is asked: ncnn may otherwise keep activations in fp16 / bf16 where the CPU has them
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = opt.use_bf16_packed = bf16
        # ncnn keeps the buffers of a call in pools for the next; reusing one for requests down to
        # half its size held the least (277 x 512 px strip: 1.34 GiB; ncnn's own pools 1.6, 0.99: 1.7)
        self.pools = (ncnn.PoolAllocator(), ncnn.PoolAllocator())
        for pool in self.pools:
            pool.set_size_compare_ratio(0.5)
        opt.blob_allocator, opt.workspace_allocator = self.pools
        self.shrink = network.shrink
        if self.shrink > self.factor * self.margin:
            raise NcnnUnsupported(f"unpadded convs lose {self.shrink} output pixels per side, more than the margin")
        if self.net.load_param_mem(network.param) != 0:
            raise NcnnUnsupported("ncnn did not accept the converted network")
        self._weights = network.weights  # ncnn may reference weight bytes in place (int8 ones) until it packs them
        self.net.load_model_mem(self._weights)
        self._mat = ncnn.Mat

    def release(self) -> None:
        """Give back the buffers the pools keep from earlier calls (e.g. the load-time check's and
        timing's small windows, which a 512 px window's strips could not reuse: ~0.15 GiB)."""
        for pool in self.pools:
            pool.clear()

    def _run(self, x: np.ndarray) -> np.ndarray:
        """normalised ``[C, h, w]`` float32 -> ``[C, fh, fw]`` through the ncnn backbone."""
        extractor = self.net.create_extractor()
        extractor.input("in", self._mat(x))  # a view of x: x stays referenced until extract returns
        status, y = extractor.extract("out")
        if status != 0:
            raise RuntimeError(f"ncnn failed on a {x.shape} input (status {status})")
        return np.array(y)

    def backbone(self, z: torch.Tensor) -> torch.Tensor:
        """normalised ``[B, C, H, W]`` -> ``[B, C, fH, fW]``, in row strips (``strips``).

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
        for i in range(b):
            for start, stop, top, bottom in strips(h, w, self.margin):
                # output rows [lo, hi) from this strip: the kept ones it computes
                lo, hi = max(f * top, f * start + s), min(f * bottom, f * stop - s)
                if lo < hi:
                    y = self._run(np.ascontiguousarray(z[i, :, start:stop]))
                    out[i, :, lo:hi, s:f * w - s] = y[:, lo - f * start - s:hi - f * start - s]
        return torch.from_numpy(out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.module.normalize(x.float())
        y = self.backbone(z)
        if self.global_skip:  # in place: y is this call's own
            y += torch.nn.functional.interpolate(z, scale_factor=float(self.factor), mode="bicubic", align_corners=False)
        if self.hard_constraint:
            y = self.module.constraint(y, z)
        return self.module.denormalize(y)


def ncnn_available() -> bool:
    return importlib.util.find_spec("ncnn") is not None


@functools.lru_cache(maxsize=4)
def _load_ncnn(path_str: str, size: int, mtime: float, threads: int, precision: str = "fp32") -> Tuple[NcnnModel, Dict[str, Any]]:
    """The weights' model with its backbone converted to ncnn for ``threads`` threads, in
    ``precision`` (``fp32`` or ``bf16``).

    ValueError (NcnnUnsupported) where the backbone does not convert or the converted network
    is not the same function (checked on a seeded texture against TorchScript float32: within
    1e-5 of its range in fp32; bf16 and int8_dynamic, built from the checked fp32 network, within
    their ``NCNN_REDUCED`` bound).
    """
    if precision in NCNN_REDUCED:
        return _load_ncnn_reduced(path_str, size, mtime, threads, precision)
    path = Path(path_str)
    module, meta = _load_torchscript(path_str, size, mtime, "cpu")
    if weights_precision(meta) != "fp32":
        raise NcnnUnsupported(f"runtime 'ncnn' runs float weights, {path.name} holds {weights_precision(meta)} ones")
    try:
        model = NcnnModel(module, ncnn_network(module.backbone, valid=True), meta, threads)
        error, bound = _ncnn_error(model, module, meta)
    except NcnnUnsupported as exc:
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name}: {exc}") from None
    except Exception as exc:  # an ncnn build that fails on this CPU, a module without the structure
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name} ({_cause(exc)})") from None
    # Winograd rounds differently from a direct convolution: ~1e-6 of the range (measured)
    if not error <= 1e-5 * bound:  # also catches NaN
        raise NcnnUnsupported(f"runtime 'ncnn' is off by {error:.4g} (> {1e-5 * bound:.4g}) on {path.name}'s check input")
    log.info("s2sr: ncnn backbone for %s, %d threads (max |diff| %.3g on the check input)", path.name, threads, error)
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


def _load_ncnn_reduced(path_str: str, size: int, mtime: float, threads: int, precision: str) -> Tuple[NcnnModel, Dict[str, Any]]:
    """The ncnn network in ``precision`` (``NCNN_REDUCED``), built from the fp32 conversion
    (itself checked within 1e-5) and checked against TorchScript float32 within its bound."""
    path = Path(path_str)
    fp32, meta = _load_ncnn(path_str, size, mtime, threads, "fp32")  # the conversion, checked in float32
    bf16, int8 = precision == "bf16", precision == "int8_dynamic"
    try:
        network = ncnn_network(fp32.module.backbone, split_groups=bf16, valid=True, int8_pointwise=int8)
        model = NcnnModel(fp32.module, network, meta, threads, precision)
        error, bound = _ncnn_error(model, fp32.module, meta)
    except NcnnUnsupported as exc:
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name} in {precision}: {exc}") from None
    except Exception as exc:  # an ncnn build without bf16 storage or int8 products for some layer
        raise NcnnUnsupported(f"runtime 'ncnn' cannot run {path.name} in {precision} ({_cause(exc)})") from None
    limit = NCNN_REDUCED[precision]
    if not error <= limit * bound:
        raise NcnnUnsupported(f"runtime 'ncnn' in {precision} is off by {error:.4g} (> {limit * bound:.4g}) "
                              f"on {path.name}'s check input")
    log.info("s2sr: ncnn %s backbone for %s, %d threads (max |diff| %.3g on the check input)", precision, path.name, threads, error)
    return model, meta


def _ncnn_error(model: NcnnModel, module: Any, meta: Dict[str, Any]) -> Tuple[float, float]:
    """(max |ncnn - TorchScript float32|, max |TorchScript|) on the seeded texture, input units,
    over the pixels the UDF keeps (``margin`` or more inside where the convs are unpadded).
    The model's pools are emptied after it: a window's strips could not reuse these buffers."""
    m = model.margin if model.shrink else 0
    texture = _texture(meta, "cpu", 32 + 2 * m)
    with torch.inference_mode():
        reference, result = module(texture), model(texture)
    model.release()
    if result.shape != reference.shape:
        raise NcnnUnsupported(f"the converted network maps {tuple(texture.shape)} to {tuple(result.shape)}, "
                              f"TorchScript to {tuple(reference.shape)}")
    e = model.factor * m
    kept = (..., slice(e, result.shape[-2] - e), slice(e, result.shape[-1] - e))  # shapes equal: checked above
    result, reference = result[kept], reference[kept]
    return float((result - reference).abs().max()), float(reference.abs().max())


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


def _set_quantized_engine(path: Path) -> None:
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


def int8_companion(path: Path) -> Optional[Path]:
    """``<model>_int8.pt`` beside float weights ``<model>.pt``, when present and made from them.

    A companion made from other weights (the float ones were retrained since) is ignored.
    """
    candidate = path.with_name(path.stem + INT8_SUFFIX + ".pt")
    if not candidate.is_file():
        return None
    meta = _metadata_cached(str(candidate), *_stat(candidate))
    base = meta.get("quantization", {}).get("base_sha256")
    if weights_precision(meta) != "int8" or base != _sha256_cached(str(path), *_stat(path)):
        log.warning("s2sr: ignoring %s: not int8 weights made from %s", candidate, path.name)
        return None
    return candidate


def _stat(path: Path) -> Tuple[int, float]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime


@functools.lru_cache(maxsize=16)
def _sha256_cached(path_str: str, size: int, mtime: float) -> str:
    return sha256_file(Path(path_str))


@functools.lru_cache(maxsize=16)
def _metadata_cached(path_str: str, size: int, mtime: float) -> Dict[str, Any]:
    """``read_metadata`` once per file version: ``load_model`` runs for every window."""
    return read_metadata(Path(path_str))


def choose_path(path: Path, precision: str, device: str, runtime: str = "auto") -> Tuple[Path, str, str]:
    """The weights file, the precision and the runtime to run: the context's resolved.

    Float weights: ``fp32`` / ``bf16`` as asked, ``int8`` through the int8 companion, ``auto``
    by timing the candidates.  Int8 weights run only as ``int8`` (or ``auto``).  Runtime: torch,
    or ncnn for float weights on the CPU (``auto``: whichever a one-off timing finds faster,
    where the worker has ncnn).  ``auto`` offers bf16 (on both runtimes) only where one bf16
    conv runs about as fast as FP32 or faster (the CPU multiplies bf16 natively), and
    int8_dynamic on ncnn wherever ncnn runs (per-pixel scales: no clipping, no chunking effect).
    """
    meta = _metadata_cached(str(path), *_stat(path))
    if runtime == "ncnn":
        _check_ncnn(path, precision, device, weights_precision(meta))
    if weights_precision(meta) == "int8":
        if precision not in ("int8", "auto"):
            raise ValueError(f"weights file {path.name} holds int8 weights: precision must be 'int8' or 'auto', not {precision!r}")
        if device != "cpu":
            raise ValueError(f"int8 weights {path.name} run on the CPU only (device {device!r})")
        return path, "int8", "torch"
    if precision == "int8_dynamic" and device != "cpu":
        raise ValueError(f"precision 'int8_dynamic' runs on the CPU only (device {device!r})")
    if precision == "int8":
        if device != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only (device {device!r})")
        companion = int8_companion(path)
        if companion is None:
            raise ValueError(f"precision 'int8': no int8 weights made from {path.name} (expected "
                             f"{path.stem + INT8_SUFFIX}.pt beside it; make them with s2sr-export --int8-from {path.name})")
        return companion, "int8", "torch"
    cpu = device == "cpu"
    precisions = [precision] if precision != "auto" else ["fp32"]
    # bf16: a GPU's tensor cores; on a CPU only where it multiplies bf16 natively
    if precision == "auto" and (not cpu or bf16_conv_speedup(torch.get_num_threads()) >= BF16_MIN_SPEEDUP):
        precisions.append("bf16")
    runtimes = [runtime] if runtime != "auto" else ["torch"] + (["ncnn"] if cpu and ncnn_available() else [])
    pairs = [(p, r) for p in precisions for r in runtimes]
    # int8 on ncnn: its 1 x 1 products with per-pixel scales cannot clip and follow no chunking.
    # Never offered by itself: torch's int8 (static scales clip at bright point targets, 0.2
    # reflectance off on the sample scene's brightest roof; its dynamic scales follow the window)
    if precision == "auto" and "ncnn" in runtimes:
        pairs.append(("int8_dynamic", "ncnn"))
    stat = (str(path), *_stat(path))
    if len(pairs) == 1:
        return (path, *pairs[0])
    return (path, *_auto_precision(tuple((*pair, *stat) for pair in pairs), device, torch.get_num_threads()))


def _check_ncnn(path: Path, precision: str, device: str, weights: str) -> None:
    """ValueError unless ``runtime: "ncnn"`` can serve this request."""
    if device != "cpu":
        raise ValueError(f"runtime 'ncnn' runs on the CPU only (device {device!r})")
    if precision not in ("fp32", "bf16", "int8_dynamic", "auto") or weights == "int8":
        raise ValueError(f"runtime 'ncnn' runs float weights in precision 'fp32', 'bf16' or 'int8_dynamic' only (precision {precision!r}, "
                         f"{path.name} holds {weights} weights): use runtime 'torch'")
    if not ncnn_available():
        raise ValueError("runtime 'ncnn' needs the ncnn package on the worker (pip install ncnn): "
                         "use runtime 'auto' or 'torch'")


@functools.lru_cache(maxsize=None)
def bf16_conv_speedup(threads: int) -> float:
    """FP32 time / bf16 time of one grouped 3x3 conv like the trunk's (256 channels, 4 groups,
    32 x 32 px, channels-last): a 0.1 s screen before ``auto`` loads and times a whole bf16 model.

    Where the CPU has no bf16 arithmetic torch emulates it some 7x slower than FP32 (AVX2-only
    Zen 3); the full bf16 candidate cost 20 s of load and timing per worker there for nothing.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 256, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.rand(256, 64, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        conv = functools.partial(torch.nn.functional.conv2d, weight=w.to(dtype), padding=1, groups=4)
        try:
            times[dtype] = min_time(conv, x.to(dtype), runs=3)
        except RuntimeError as exc:  # a build or CPU with no bf16 convolution at all
            log.info("s2sr: bf16 conv screen failed (%s): fp32 only", exc)
            return 0.0
    speedup = times[torch.float32] / times[torch.bfloat16]
    log.info("s2sr: bf16 conv screen: %.2fx FP32 speed", speedup)
    return speedup


@functools.lru_cache(maxsize=8)
def _auto_precision(candidates: Tuple[Tuple[str, str, str, int, float], ...], device: str, threads: int) -> Tuple[str, str]:
    """The fastest (precision, runtime) on this worker (a timing, not the CPU flags); reduced
    precision only where it is at least 1.1x faster than the fastest fp32 runtime.
    ``candidates``: (precision, runtime, path, size, mtime); the first one's failure to load
    is an error (broken weights, a forced runtime that cannot run them), the others' a warning.

    128 px windows on the CPU: at 64 px ncnn's per-call costs hid its gain (1.2x, and torch won
    one benchmark's load by noise); at 128 px it is 1.5x (Zen 3), about 6 s of load per worker.
    512 px on a GPU, where a small window times kernel launches rather than arithmetic."""
    n = 128 if device == "cpu" else 512
    timings = {}
    for precision, runtime, path_str, size, mtime in candidates:
        try:
            module, meta = _load(path_str, size, mtime, device, precision, runtime, threads)
        except ValueError as exc:  # e.g. weights too old for bf16, a backbone ncnn cannot run
            if (precision, runtime) == candidates[0][:2]:
                raise  # the baseline: say so, whatever the precision
            log.warning("s2sr: %s on %s unavailable: %s", precision, runtime, exc)
            continue
        with gpu_flags(device):
            timings[precision, runtime] = min_time(module, _texture(meta, device, timing_window(module, n)).contiguous(memory_format=torch.channels_last))
        if isinstance(module, NcnnModel):
            module.release()  # the 128 px buffers: a real window's strips cannot reuse them
    choice = min(timings, key=timings.get)
    fp32 = [k for k in timings if k[0] == "fp32"]
    if fp32 and choice[0] != "fp32" and timings[choice] * 1.1 > min(timings[k] for k in fp32):
        choice = min(fp32, key=timings.get)
    log.info("s2sr: precision auto -> %s on %s (%s)", *choice, ", ".join(f"{p}/{r} {v:.3f} s" for (p, r), v in timings.items()))
    return choice


def timing_window(module: Any, n: int) -> int:
    """The window ``auto`` times ``module`` on, for ``n`` px on a padded network: an unpadded one
    (ncnn) computes layers that shrink to ``shrink`` output pixels less per side, on average
    about half that, so it gets that much more input: otherwise its small timing window would
    favour it (at 128 px its layers average 71 % of the window's area, at 512 px 92 %)."""
    shrink = getattr(module, "shrink", 0)
    return n + 2 * math.ceil(shrink / (2 * module.factor)) if shrink else n


def _load(path_str: str, size: int, mtime: float, device: str, precision: str, runtime: str, threads: int) -> Tuple[Any, Dict[str, Any]]:
    """The cached model for a resolved (precision, runtime): a TorchScript module or an NcnnModel."""
    if runtime == "ncnn":
        return _load_ncnn(path_str, size, mtime, threads, precision)
    return _load_cached(path_str, size, mtime, device, precision)


def _probe(module: Any, meta: Dict[str, Any], path: Path, device: str) -> None:
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


def load_model(context: Dict[str, Any]) -> Tuple[Any, Dict[str, Any], str]:
    """The cached model (TorchScript, or an NcnnModel), its metadata and the device for this context."""
    device = _device(context.get("device", "cpu"))
    path, precision, runtime = choose_path(resolve_weights(context).resolve(), context.get("precision", "auto"),
                                           device, context.get("runtime", "auto"))
    module, meta = _load(str(path), *_stat(path), device, precision, runtime, torch.get_num_threads())
    expected = context.get("factor")
    if expected is not None and int(expected) != meta["factor"]:
        raise ValueError(f"weights {path.name} upscale by {meta['factor']}, the context expects factor {expected}")
    return module, meta, device


def _device(name: Any) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if isinstance(name, str) and name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available on this worker")
        return name
    raise ValueError(f"unknown device {name!r}: use 'cpu', 'cuda' or 'auto'")


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


def _available_cpus() -> int:
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


def _set_threads(context: Dict[str, Any]) -> None:
    threads = context.get("threads")
    threads = _available_cpus() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- cube checks

def _check_context(context: Any) -> Dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ValueError(f"the UDF context must be a dict, got {type(context).__name__}")
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise ValueError(f"unknown context keys {unknown}; known keys: {list(CONTEXT_KEYS)}")
    precision = context.get("precision", "auto")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; available: {list(PRECISIONS)}")
    runtime = context.get("runtime", "auto")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; available: {list(RUNTIMES)}")
    if context.get("output_dtype", "float32") not in ("float32", "int16"):
        raise ValueError(f"output_dtype must be 'float32' or 'int16', got {context.get('output_dtype')!r}")
    if float(context.get("scale", 10000.0)) <= 0:
        raise ValueError(f"scale must be positive, got {context.get('scale')!r}")
    if int(context.get("overlap", 0)) < 0 or int(context.get("batch", 1)) < 1:
        raise ValueError("overlap must be >= 0 and batch >= 1")
    return context


def _dims(array: xarray.DataArray) -> Tuple[Optional[str], str]:
    """(time dim or None, band dim); ValueError unless the cube is [t,] bands, y, x."""
    for dim in SPATIAL_DIMS:
        if dim not in array.dims:
            raise ValueError(f"the cube needs dimensions 'y' and 'x', got {array.dims}")
    time_dims = [d for d in array.dims if d in TIME_DIMS]
    others = [d for d in array.dims if d not in TIME_DIMS and d not in SPATIAL_DIMS]
    if len(time_dims) > 1 or len(others) != 1:
        raise ValueError(f"the cube must have dimensions ([t,] bands, y, x), got {array.dims}")
    return (time_dims[0] if time_dims else None), others[0]


def _band_indices(array: xarray.DataArray, band_dim: str, bands: Sequence[str]) -> List[int]:
    """Index along the cube's band axis of each model band, in model order."""
    size = array.sizes[band_dim]
    labels = array.coords[band_dim].values.tolist() if band_dim in array.coords else None
    named = labels is not None and all(isinstance(v, str) for v in labels)
    if not named:
        if size != len(bands):
            raise ValueError(
                f"the cube has {size} bands without names along {band_dim!r}; label them or pass "
                f"exactly the {len(bands)} bands {list(bands)} in that order"
            )
        return list(range(size))
    names = [canonical_band(v) for v in labels]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate band names along {band_dim!r}: {labels}")
    wanted = [canonical_band(b) for b in bands]
    missing = [b for b in wanted if b not in names]
    if missing:
        raise ValueError(f"the cube lacks bands {missing} that the model needs (it has {labels}; needs {list(bands)})")
    extra = [labels[i] for i, n in enumerate(names) if n not in wanted]
    if extra:
        raise ValueError(
            f"unexpected bands {extra}: the model super-resolves exactly {list(bands)} (filter_bands first)"
        )
    return [names.index(b) for b in wanted]


def _axis_coords(values: np.ndarray, factor: int, axis: str, resolution: Any) -> np.ndarray:
    """Fine-grid pixel centres from coarse pixel centres: outer edge + (i + 0.5) * step / f."""
    coarse = np.asarray(values, dtype=np.float64)
    n = coarse.size
    if n >= 2:
        steps = np.diff(coarse)
        step = (coarse[-1] - coarse[0]) / (n - 1)
        if step == 0 or np.max(np.abs(steps - step)) > 1e-3 * abs(step):
            raise ValueError(f"the {axis} coordinates are not a regular grid")
    elif resolution is not None:
        step = float(resolution) if axis == "x" else -abs(float(resolution))
    else:
        raise ValueError(f"a window one pixel wide along {axis} needs the context key 'resolution'")
    edge = coarse[0] - step / 2.0
    return edge + (np.arange(n * factor, dtype=np.float64) + 0.5) * (step / factor)


# --------------------------------------------------------------------------- core

def _valid_mask(values: np.ndarray, context: Dict[str, Any]) -> np.ndarray:
    valid = np.isfinite(values)
    nodata = context.get("nodata")
    if nodata is not None:
        valid &= values != float(nodata)
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        log.warning("s2sr: %d infinite input values treated as no-data", n_inf)
    return valid


def _check_radiometry(refl: np.ndarray, valid: np.ndarray, bands: Sequence[str], context: Dict[str, Any]) -> np.ndarray:
    """Mask unphysical reflectances; ValueError when they dominate a band or the scale is off."""
    if not valid.any():
        return valid
    lo, hi = REFLECTANCE_RANGE
    absurd = valid & ((refl < lo) | (refl > hi))
    band_axis = refl.ndim - 3
    per_band_valid = valid.sum(axis=tuple(i for i in range(refl.ndim) if i != band_axis))
    per_band_absurd = absurd.sum(axis=tuple(i for i in range(refl.ndim) if i != band_axis))
    for band, n_valid, n_absurd in zip(bands, per_band_valid, per_band_absurd):
        if n_valid and n_absurd > 0.5 * n_valid:
            raise ValueError(
                f"band {band}: {n_absurd} of {n_valid} values are outside reflectance "
                f"[{lo}, {hi}] with scale {context.get('scale', 10000.0)} and offset "
                f"{context.get('offset', 0.0)}; check the input scaling"
            )
    scale = float(context.get("scale", 10000.0))
    vmax = float(np.abs(refl[valid]).max())
    if scale >= 100 and 0 < vmax * scale <= 2.0:
        raise ValueError(
            f"all input values lie within [-2, 2] while the scale is {scale}: the cube looks like "
            "reflectance in [0, 1]; pass context {'scale': 1}"
        )
    if absurd.any():
        log.warning("s2sr: %d values outside reflectance [%s, %s] treated as no-data", int(absurd.sum()), lo, hi)
    return valid & ~absurd


def _pad_fill(x: np.ndarray, pad: int, fill: np.ndarray) -> np.ndarray:
    """[T, C, H, W] -> [T, C, H+2p, W+2p] with the per-band fill value around it."""
    if pad == 0:
        return x
    t, c, h, w = x.shape
    out = np.empty((t, c, h + 2 * pad, w + 2 * pad), dtype=np.float32)
    out[...] = fill.reshape(1, c, 1, 1)
    out[:, :, pad:pad + h, pad:pad + w] = x
    return out


def valid_extent(valid: np.ndarray, pad: int, margin: int) -> Tuple[slice, slice]:
    """The rows and columns of the padded window (``pad`` px of fill around ``valid``'s
    ``[T, C, H, W]``) the network needs: the box around every valid pixel of any date and band,
    widened by the ``margin`` (their receptive field), within the padded window, at least
    ``MIN_NET_SIZE`` wide where the window is.  A window over the scene's edge (backends fill
    it with no-data) computes only the scene's part: what lies farther than the margin from
    every valid pixel reaches no kept output."""
    def extent(any_valid: np.ndarray) -> slice:
        n = any_valid.size + 2 * pad
        idx = np.flatnonzero(any_valid)
        lo, hi = max(int(idx[0]) + pad - margin, 0), min(int(idx[-1]) + 1 + pad + margin, n)
        least = min(MIN_NET_SIZE, n)  # the net's smallest input: grown upwards first, then down
        lo = max(0, min(lo, hi - least))
        return slice(lo, max(hi, lo + least))

    return extent(valid.any(axis=(0, 1, 3))), extent(valid.any(axis=(0, 1, 2)))


def _placed(span: slice, pad: int, n: int, f: int) -> Tuple[slice, slice]:
    """(output slice in the window, slice of the network's result) for the padded window's
    ``span`` of rows or columns: the part of ``f x`` its result that lies in the ``n`` px window."""
    lo, hi = max(span.start, pad), min(span.stop, pad + n)
    return slice(f * (lo - pad), f * (hi - pad)), slice(f * (lo - span.start), f * (hi - span.start))


def superresolve(values: np.ndarray, module: Any, meta: Dict[str, Any], context: Dict[str, Any], device: str = "cpu") -> np.ndarray:
    """Super-resolve ``[T, C, H, W]`` (model band order, input units) to ``[T, C, fH, fW]``.

    Output in the input's units, float32, NaN where the input was no-data.
    """
    f, margin = meta["factor"], meta["margin"]
    model_scale = float(meta["input_scaling"]["scale"])
    model_offset = float(meta["input_scaling"].get("offset", 0.0))
    scale = float(context.get("scale", 10000.0))
    offset = float(context.get("offset", 0.0))
    t, c, h, w = values.shape
    values = values.astype(np.float32, copy=False)
    valid = _valid_mask(values, context)
    refl = (values + offset) / scale
    valid = _check_radiometry(refl, valid, meta["bands"], context)
    if not valid.any():
        return np.full((t, c, f * h, f * w), np.nan, dtype=np.float32)  # all no-data: nothing to run
    fill = (np.asarray(meta["normalization"]["mean"], dtype=np.float32) * model_scale - model_offset)
    # the model's input in refl's own buffer: every array held here is held while the net runs
    x = refl.astype(np.float32, copy=False)
    x *= model_scale
    x -= model_offset
    np.copyto(x, np.broadcast_to(fill.reshape(1, c, 1, 1), x.shape), where=~valid)
    del refl
    pad = max(margin - int(context.get("overlap", 0)), 0)
    pad = max(pad, math.ceil(max(0, MIN_NET_SIZE - min(h, w)) / 2))
    x = _pad_fill(x, pad, fill)
    rows, cols = valid_extent(valid, pad, margin)
    x = x[:, :, rows, cols]
    batch = int(context.get("batch", 1))
    # the output rows and columns this computes (window coordinates), and where they lie in its result
    (oy, iy), (ox, ix) = _placed(rows, pad, h, f), _placed(cols, pad, w, f)
    covered = (oy.start, oy.stop, ox.start, ox.stop) == (0, f * h, 0, f * w)
    if pad == 0 and covered and batch >= t:
        out = None  # one pass gives the whole output: that pass's own array
    elif covered:
        out = np.empty((t, c, f * h, f * w), dtype=np.float32)  # its pages come as the results do
    else:  # past the valid extent (a window over the scene's edge): no-data, never computed
        out = np.full((t, c, f * h, f * w), np.nan, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, t, batch):
            stop = min(t, start + batch)
            if not valid[start:stop].any():  # (never where one pass covers all: valid.any() above)
                out[start:stop] = np.nan
                continue
            xt = torch.from_numpy(np.ascontiguousarray(x[start:stop])).to(device)
            if device == "cpu" and not isinstance(module, NcnnModel):  # ncnn reads NCHW
                xt = xt.contiguous(memory_format=torch.channels_last)
            with gpu_flags(device):
                y = module(xt).float().cpu().contiguous().numpy()
            if out is None:
                out = y  # the whole output, uncropped (a 42 MB copy less per date at 512 px)
            else:
                out[start:stop, :, oy, ox] = y[:, :, iy, ix]
    # back to the input's units in place, (out + model_offset) / model_scale * scale - offset as
    # one affine map (one pass where the model's scale is the input's): a 512 px window's output
    # is 42 MB per date, each pass over it ~10 ms, and each temporary would stack on what ncnn's
    # pools keep between windows
    gain = scale / model_scale
    if gain != 1.0:
        out *= np.float32(gain)
    shift = model_offset * gain - offset
    if shift != 0.0:
        out += np.float32(shift)
    if not valid.all():  # no-data: each input pixel's f x f output block, through a view (no mask copies)
        blocks = out.reshape(t, c, h, f, w, f)  # a view: out is C-contiguous (np.empty, or the network's .contiguous() output)
        np.copyto(blocks, np.float32(np.nan), where=~valid[:, :, :, None, :, None])
    return out


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


def _to_int16(out: np.ndarray) -> np.ndarray:
    """float32 -> int16, rounded, clipped, INT16_NODATA where not finite; rounds in ``out``'s own
    buffer (the UDF's output, 42 MB per date at 512 px: 69 -> ~25 ms without the temporaries)."""
    nodata = ~np.isfinite(out)
    np.rint(out, out=out)
    np.clip(out, INT16_NODATA + 1, np.iinfo(np.int16).max, out=out)  # NaN stays NaN, inf is clipped
    np.copyto(out, np.float32(INT16_NODATA), where=nodata)
    return out.astype(np.int16)


def superresolve_cube(array: xarray.DataArray, context: Dict[str, Any]) -> xarray.DataArray:
    """The UDF on a DataArray: ``[t,] bands, y, x`` at 10 m -> the same at 5 m."""
    context = _check_context(context)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"the cube must hold real numbers, got dtype {array.dtype}")
    time_dim, band_dim = _dims(array)
    _set_threads(context)
    module, meta, device = load_model(context)
    f = meta["factor"]
    order = _band_indices(array, band_dim, meta["bands"])
    lead = [time_dim] if time_dim else []
    data = array.transpose(*lead, band_dim, "y", "x").values
    if time_dim is None:
        data = data[None]
    if data.shape[-1] < 1 or data.shape[-2] < 1:
        raise ValueError(f"the cube has an empty spatial extent {data.shape[-2:]}")
    out = superresolve(data[:, order], module, meta, context, device)
    if order != sorted(order):  # back to the cube's own band order (a copy only where it differs)
        out[:, order] = out.copy()
    if time_dim is None:
        out = out[0]
    if context.get("output_dtype", "float32") == "int16":
        out = _to_int16(out)
    coords: Dict[str, Any] = {}
    for dim in ("y", "x"):
        if dim in array.coords:
            coords[dim] = _axis_coords(array.coords[dim].values, f, dim, context.get("resolution"))
    for dim in lead + [band_dim]:
        if dim in array.coords:
            coords[dim] = array.coords[dim].values
    result = xarray.DataArray(out, dims=lead + [band_dim, "y", "x"], coords=coords, name=array.name, attrs=dict(array.attrs))
    return result.transpose(*array.dims)


# --------------------------------------------------------------------------- openEO entry points

def apply_metadata(metadata: CollectionMetadata, context: dict) -> CollectionMetadata:
    """The cube's spatial step divided by the model's factor (10 m -> 5 m)."""
    context = _check_context(context)
    meta = read_metadata(resolve_weights(context))
    f = meta["factor"]
    if metadata.has_band_dimension():
        names = metadata.band_dimension.band_names
        if names and all(isinstance(n, str) for n in names):
            have = {canonical_band(n) for n in names}
            missing = [b for b in meta["bands"] if canonical_band(b) not in have]
            if missing:
                raise ValueError(
                    f"band dimension {metadata.band_dimension.name!r} lacks bands {missing} that the model needs"
                )
    steps = [d.step for d in metadata.spatial_dimensions]
    if len(steps) != 2 or any(s is None for s in steps):
        raise ValueError(f"apply_metadata needs two spatial dimensions with a known step, got {steps}")
    return metadata.resample_spatial(resolution=tuple(float(s) / f for s in steps))


def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:
    """Entry point for both runtimes: Python-Jep (positional, XarrayDataCube) and run_code.

    Accepts an ``XarrayDataCube`` or a bare ``xarray.DataArray``; returns the same kind.  The
    XarrayDataCube result is float32 (what the Jep runtime reads back).
    """
    if isinstance(cube, xarray.DataArray):
        return superresolve_cube(cube, context or {})
    array = cube.get_array()
    result = superresolve_cube(array, context or {})
    return XarrayDataCube(result.astype(np.float32))
