"""s2sr.engine.precision: which runtime and precision run a weights file, and the cached models.

One model load per (file version, device, precision, runtime, threads) and one ``auto`` decision
per worker process: the caches live in this module (a backend's fresh interpreter per window
finds them in ``sys.modules``)."""

import functools
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from s2sr.engine import ENGINE_VERSION
from s2sr.engine.runtimes import ncnn_available, onnxruntime_available, torch_available
from s2sr.engine.threads import current_threads
from s2sr.engine.weights import (INT8_SUFFIX, int8_companion, metadata_cached, resolve_weights, sha256_cached,
                                 stat_key, verify_checksum, weights_precision)

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def load_torch(path_str: str, size: int, mtime: float, device: str, precision: str = "fp32") -> Tuple[Any, Dict[str, Any]]:
    """The weights' TorchScript module for ``precision`` on ``device``: probed, channels-last and
    oneDNN-fused on the CPU, the trunk cast for bf16, rewritten for int8_dynamic."""
    import torch

    from s2sr.engine.onednn import dynamic_int8_checked, fuse_onednn, int8_products_exact, set_quantized_engine
    from s2sr.engine.torch_runtime import load_torchscript, probe, texture

    path = Path(path_str)
    verify_checksum(path_str, size, mtime)
    meta = metadata_cached(path_str, size, mtime)
    if precision == "int8":
        if weights_precision(meta) != "int8":
            raise ValueError(f"weights file {path} holds float weights, not int8 ones")
        set_quantized_engine(path)  # int8 weights are repacked for the engine while loading
        if not int8_products_exact():
            log.warning("s2sr: this CPU's int8 convolutions saturate (no VNNI: pairs of uint8 x int8 "
                        "products summed in 16 bits), so %s runs with more error than it was "
                        "calibrated for (Zen 3: up to 11 LSB on a layer's outputs); precision 'fp32' "
                        "has no such error", path.name)
    if precision == "int8_dynamic":
        if weights_precision(meta) == "int8":
            raise ValueError(f"weights file {path} holds int8 weights; 'int8_dynamic' quantizes float weights itself")
        set_quantized_engine(path)
    module, meta = load_torchscript(path_str, size, mtime, device)
    fusable = device == "cpu" and precision in ("fp32", "bf16")  # oneDNN fusion: float graphs on the CPU
    if fusable or precision == "int8_dynamic":
        check = texture(meta, device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            reference = module(check)  # the float32 result the fused graph must keep
    if precision == "bf16":
        if not hasattr(module, "backbone") or not hasattr(module.backbone, "compute_dtype"):
            raise ValueError(f"weights file {path} predates the bf16 path (no backbone.compute_dtype): use precision 'fp32'")
        module.backbone.to(torch.bfloat16)  # the trunk only: radiometry stays float32
        probe(module, meta, path, device)
    if device == "cpu":
        module.to(memory_format=torch.channels_last)  # NHWC convolutions are faster on CPU (oneDNN)
    if fusable:
        module = fuse_onednn(module, check, reference)
    if precision == "int8_dynamic":
        module = dynamic_int8_checked(module, meta, path, check, reference)
    log.info("s2sr: loaded %s (%s, x%d, margin %d px) on %s, %s", path, meta["architecture"], meta["factor"], meta["margin"], device, precision)
    return module, meta


def choose_path(path: Path, precision: str, device: str, runtime: str = "auto") -> Tuple[Path, str, str]:
    """The weights file, the precision and the runtime to run: the context's resolved.

    Float weights: ``fp32`` / ``bf16`` / ``int8_dynamic`` as asked, ``int8`` through the int8
    companion; ``auto`` and an ``auto`` runtime by ``decide`` (the precision by the CPU model,
    never by a timing).  Int8 weights run only as ``int8`` (or ``auto``), on torch.
    """
    meta = metadata_cached(str(path), *stat_key(path))
    if runtime == "onnxruntime" or (runtime == "auto" and not torch_available()):
        return (path, *_onnxruntime_path(path, precision, device, weights_precision(meta), runtime))
    if not torch_available():
        raise ValueError(f"runtime {runtime!r} needs torch on the worker, which has none: use runtime 'auto' or "
                         "'onnxruntime' (the hosted onnx_deps archive in 'udf-dependency-archives')")
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
    if precision != "auto" and runtime != "auto":
        return path, precision, runtime
    return (path, *decide(path, device, runtime, precision))


def _onnxruntime_path(path: Path, precision: str, device: str, weights: str, runtime: str) -> Tuple[str, str]:
    """(fp32, onnxruntime), or ValueError where onnxruntime cannot serve this request."""
    why = "asked" if runtime == "onnxruntime" else "this worker has no torch"
    if device != "cpu":
        raise ValueError(f"runtime 'onnxruntime' runs on the CPU only here (device {device!r}; {why})")
    if precision not in ("fp32", "auto") or weights != "fp32":
        raise ValueError(f"runtime 'onnxruntime' ({why}) runs float weights in precision 'fp32' only "
                         f"(precision {precision!r}, {path.name} holds {weights} weights)")
    if not onnxruntime_available():
        raise ValueError(f"runtime 'onnxruntime' ({why}) needs the onnxruntime package on the worker: add the hosted "
                         "archive https://s3.waw3-1.cloudferro.com/swift/v1/project_dependencies/onnx_deps_python311.zip#onnx_deps "
                         "to the job option 'udf-dependency-archives'")
    return "fp32", "onnxruntime"


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



# --------------------------------------------------------------------------- the auto decision
# ``auto`` must not mix precisions between the windows of a job: tiles computed on executors that
# chose differently (int8 against fp32) differ by up to 34 DN at their border, a seam.  So the
# precision is a function of the CPU model (a committed table of benchmarked CPUs, else fp32),
# never of a timing; only a choice between runtimes that compute the same function within 1e-5
# (fp32 on torch or on ncnn) is timed.  The decision is made once per worker and kept in a small
# JSON file (keyed by CPU model, torch / ncnn versions, weights checksum, threads, device), so
# every Python process of a worker agrees, and ``decisions()`` reports it (``s2sr run`` writes it
# into s2sr_run.json).  The key holds the table's digest: a file decided under an older table
# (Zen 4 ran bf16 on torch before 2026-12-07) is not read back after an upgrade.
AUTO_TABLE = Path(__file__).with_name("auto_choices.json")
DECISION_DIR_ENV = "S2SR_CACHE_DIR"
_DECISIONS: Dict[str, Dict[str, Any]] = {}
_USES: Dict[str, int] = {}  # decision -> how many loads used it (a run's record names its own)


def cpu_signature() -> Dict[str, Any]:
    """What identifies this CPU model: vendor, family, model, name and the flags the runtimes use."""
    info: Dict[str, Any] = {"machine": platform.machine(), "vendor": "", "family": None, "model": None, "name": "", "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    first = text.split("\n\n")[0]
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(vendor=fields.get("vendor_id", ""), name=fields.get("model name", ""),
                family=int(fields["cpu family"]) if fields.get("cpu family", "").isdigit() else None,
                model=int(fields["model"]) if fields.get("model", "").isdigit() else None,
                flags=sorted(flags & set(RUNTIME_FLAGS)))
    return info


RUNTIME_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def table_choice(cpu: Dict[str, Any], table: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The first entry of the benchmarked-CPU table (``AUTO_TABLE``) that matches ``cpu`` (vendor, family, flags)."""
    for entry in json.loads((table or AUTO_TABLE).read_text())["cpus"]:
        if entry["vendor"] != cpu["vendor"] or entry["family"] != cpu["family"]:
            continue
        if all((flag in cpu["flags"]) == wanted for flag, wanted in entry["flags"].items()):
            return entry
    return None


def _versions() -> Dict[str, Optional[str]]:
    ncnn_version = None
    if ncnn_available():
        try:
            from importlib.metadata import version

            ncnn_version = version("ncnn")
        except Exception:  # a source build without metadata: still a version of ncnn
            ncnn_version = "unknown"
    import torch

    return {"torch": torch.__version__, "ncnn": ncnn_version}


def _table_digest() -> str:
    """The benchmarked-CPU table's sha256 (an upgrade that changes a CPU's choice decides again)."""
    try:  # the engine's per-version cache: ``decide`` runs for every window, the table is read once
        return sha256_cached(str(AUTO_TABLE), *stat_key(AUTO_TABLE))[:16]
    except OSError:
        return "none"


def _decision_file(key: Dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(os.environ.get(DECISION_DIR_ENV) or Path(tempfile.gettempdir()) / f"s2sr-{os.getuid()}")
    return folder / f"auto-{digest}.json"


def _read_decision(path: Path, key: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("key") != key or found.get("precision") not in PRECISIONS_RUN:
        return None
    return found


def _write_decision(path: Path, decision: Dict[str, Any]) -> None:
    """Atomically (a worker's processes may race): a temporary file renamed over the target."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(decision, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only temporary folder: the decision stays in this process
        log.warning("s2sr: could not record the auto decision in %s (%s)", path, exc)


PRECISIONS_RUN = ("fp32", "bf16", "int8_dynamic")


def decide(path: Path, device: str, runtime: str, precision: str = "auto") -> Tuple[str, str]:
    """(precision, runtime) for float weights ``path`` where either is ``auto``: once per worker."""
    import torch

    threads = current_threads()
    key = {"cpu": cpu_signature(), **_versions(), "weights_sha256": sha256_cached(str(path), *stat_key(path)),
           "threads": threads, "device": device, "precision": precision, "runtime": runtime, "engine": ENGINE_VERSION,
           "table_sha256": _table_digest()}  # a decision read back must follow the table the package ships now
    if device.startswith("cuda"):
        key["gpu"] = torch.cuda.get_device_name(torch.device(device))
    file = _decision_file(key)
    name = file.stem
    if name not in _DECISIONS:
        found = _read_decision(file, key)
        if found is None:
            found = {"key": key, **_decide(path, device, runtime, precision, key), "file": str(file)}
            _write_decision(file, found)
        _DECISIONS[name] = found
        log.info("s2sr: auto -> %s on %s (%s)", found["precision"], found["runtime"], found["reason"])
    _USES[name] = _USES.get(name, 0) + 1
    found = _DECISIONS[name]
    return found["precision"], found["runtime"]


def decisions(since: Optional[Dict[str, int]] = None) -> List[Dict[str, Any]]:
    """The auto decisions this process made or read (for a run's record); with ``since`` (a
    ``decision_uses()`` taken before a run), only those used since."""
    return [dict(d) for name, d in _DECISIONS.items() if since is None or _USES.get(name, 0) > since.get(name, 0)]


def decision_uses() -> Dict[str, int]:
    """How often each decision was used so far: pass it to ``decisions`` after a run."""
    return dict(_USES)


def _decide(path: Path, device: str, runtime: str, precision: str, key: Dict[str, Any]) -> Dict[str, Any]:
    """The decision itself: the precision by rule, the runtime by rule or by an fp32 timing."""
    reason, asked = "precision asked", precision
    if precision == "auto":
        precision, runtime_hint, reason = _precision_rule(device, key)
        missing = runtime_hint == "ncnn" and (device != "cpu" or not ncnn_available())
        if runtime_hint and (missing or runtime not in ("auto", runtime_hint)):
            # a table choice was measured on its runtime only (int8_dynamic on torch follows the
            # window cut, unlike ncnn's per-pixel scales): elsewhere fp32
            why = "is not installed here" if missing else f"is not the runtime asked ({runtime})"
            precision, reason = "fp32", f"{reason}; its runtime {runtime_hint} {why}: fp32"
        elif runtime == "auto" and runtime_hint:
            runtime = runtime_hint
    if runtime == "auto":
        runtime, why = _runtime_rule(path, device, precision)
        reason += f"; {why}"
    stat = (str(path), *stat_key(path))
    try:
        load(*stat, device, precision, runtime, key["threads"])
    except ValueError as exc:
        if asked != "auto" or (precision, runtime) == ("fp32", "torch"):
            raise  # asked for, or the baseline (broken weights): say so
        log.warning("s2sr: %s on %s unavailable (%s): fp32", precision, runtime, exc)
        return _decide(path, device, "torch" if runtime == "ncnn" else runtime, "fp32", key)
    return {"precision": precision, "runtime": runtime, "reason": reason}


def _precision_rule(device: str, key: Dict[str, Any]) -> Tuple[str, Optional[str], str]:
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return "bf16", "torch", f"GPU {key.get('gpu')} with bf16 tensor cores"
        return "fp32", "torch", f"GPU {key.get('gpu')} without bf16"
    entry = table_choice(key["cpu"])
    if entry is None:
        return "fp32", None, f"CPU {key['cpu']['name']!r} (family {key['cpu']['family']}) not in {AUTO_TABLE.name}: fp32"
    return entry["precision"], entry["runtime"], f"{entry['name']} in {AUTO_TABLE.name} ({entry['evidence']})"


def _runtime_rule(path: Path, device: str, precision: str) -> Tuple[str, str]:
    """torch, or ncnn where it runs: fp32 on the faster of the two (the same function within
    1e-5, so a worker that times differently makes no seam), int8_dynamic on ncnn (per-pixel
    scales), bf16 on torch."""
    if device != "cpu" or not ncnn_available() or precision == "bf16":
        return "torch", "torch: the only runtime for this precision / device here"
    if precision == "int8_dynamic":
        return "ncnn", "ncnn: its int8 products follow no chunking"
    import torch

    from s2sr.engine.ncnn_runtime import NcnnModel
    from s2sr.engine.torch_runtime import min_time, texture

    stat = (str(path), *stat_key(path))
    timings = {}
    for candidate in ("torch", "ncnn"):
        try:
            module, meta = load(*stat, device, "fp32", candidate, current_threads())
        except ValueError as exc:
            if candidate == "torch":
                raise
            log.warning("s2sr: fp32 on ncnn unavailable: %s", exc)
            continue
        timings[candidate] = min_time(module, texture(meta, device, timing_window(module, 128)).contiguous(memory_format=torch.channels_last))
        if isinstance(module, NcnnModel):
            module.release()  # the timing window's buffers: a real window's strips cannot reuse them
    choice = min(timings, key=timings.get)
    return choice, "fp32 timed at 128 px: " + ", ".join(f"{r} {s:.3f} s" for r, s in timings.items())



def timing_window(module: Any, n: int) -> int:
    """The window ``auto`` times ``module`` on, for ``n`` px on a padded network: an unpadded one
    (ncnn) computes layers that shrink to ``shrink`` output pixels less per side, on average
    about half that, so it gets that much more input: otherwise its small timing window would
    favour it (at 128 px its layers average 71 % of the window's area, at 512 px 92 %)."""
    shrink = getattr(module, "shrink", 0)
    return n + 2 * math.ceil(shrink / (2 * module.factor)) if shrink else n


LAYOUT_ENV = "S2SR_NCNN_LAYOUT"
LAYOUTS = ("strips", "tiles")


def ncnn_layout(architecture: Optional[str] = None) -> str:
    """How this worker's ncnn networks cut a window on 2 or more threads: ``S2SR_NCNN_LAYOUT``
    where set (``strips`` or ``tiles``), else the benchmarked-CPU table's ``ncnn_layout`` for
    this CPU (``table_choice``): one layout, or one per ``architecture`` (the weights' metadata;
    speed follows the network, not its weights), else ``strips`` (``ncnn_runtime.tiles``; on Zen
    4 tiles ran the default's network faster in most rounds, the fast model's in half of them:
    docs/speed_notes.md)."""
    asked = os.environ.get(LAYOUT_ENV, "").strip()
    if asked:
        if asked not in LAYOUTS:
            raise ValueError(f"{LAYOUT_ENV}={asked!r}: use one of {', '.join(LAYOUTS)}")
        return asked
    table = _table_layout()
    if isinstance(table, dict):
        return str(table.get(architecture or "", "strips"))
    return str(table)


@functools.lru_cache(maxsize=1)
def _table_layout() -> Union[str, Dict[str, str]]:
    """The table's ``ncnn_layout`` for this CPU: a layout, or architecture -> layout."""
    entry = table_choice(cpu_signature())
    return (entry or {}).get("ncnn_layout", "strips")


def load(path_str: str, size: int, mtime: float, device: str, precision: str, runtime: str, threads: int) -> Tuple[Any, Dict[str, Any]]:
    """The cached model for a resolved (precision, runtime): a TorchScript module, an NcnnModel
    or an OnnxModel."""
    if runtime == "onnxruntime":
        from s2sr.engine.onnx_runtime import load_onnx

        return load_onnx(path_str, size, mtime, threads)
    if runtime == "ncnn":
        from s2sr.engine.ncnn_runtime import load_ncnn

        layout = ncnn_layout(metadata_cached(path_str, size, mtime).get("architecture"))
        return load_ncnn(path_str, size, mtime, threads, precision, layout)
    return load_torch(path_str, size, mtime, device, precision)


def load_model(context: Dict[str, Any]) -> Tuple[Any, Dict[str, Any], str]:
    """The cached model (TorchScript, NcnnModel or OnnxModel), its metadata and the device for this context."""
    device = resolve_device(context.get("device", "cpu"))
    path, precision, runtime = choose_path(resolve_weights(context).resolve(), context.get("precision", "auto"),
                                           device, context.get("runtime", "auto"))
    version = stat_key(path)
    verify_checksum(str(path), *version)  # every call: its own cache follows the manifest's version
    module, meta = load(str(path), *version, device, precision, runtime, current_threads())
    expected = context.get("factor")
    if expected is not None and int(expected) != meta["factor"]:
        raise ValueError(f"weights {path.name} upscale by {meta['factor']}, the context expects factor {expected}")
    return module, meta, device


def resolve_device(name: Any) -> str:
    if name in ("cpu", None):
        return "cpu"
    if not torch_available():
        if name == "auto":
            return "cpu"
        raise ValueError(f"device {name!r} needs torch on the worker, which has none")
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if isinstance(name, str) and name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available on this worker")
        return name
    raise ValueError(f"unknown device {name!r}: use 'cpu', 'cuda' or 'auto'")
