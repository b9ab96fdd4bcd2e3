"""s2sr.engine.tiling: one window through the network: fill, pad, the valid extent, infer, cap, crop."""

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from s2sr.engine.nodata import check_radiometry, fill_nodata, output_reach, required_overlap, valid_mask
from s2sr.engine.runtimes import MIN_NET_SIZE
from s2sr.engine.swir_cap import cap_detail, cap_factor


def infer(module: Any, x: np.ndarray, device: str) -> np.ndarray:
    """The network on ``[B, C, H, W]`` float32 (model units) -> ``[B, C, fH, fW]`` float32:
    numpy in and out for onnxruntime, through torch for TorchScript and ncnn models."""
    if getattr(module, "numpy_io", False):
        return module(x)
    from s2sr.engine.torch_runtime import run_torch

    return run_torch(module, x, device)

def pad_nodata(x: np.ndarray, valid: np.ndarray, pad: int) -> Tuple[np.ndarray, np.ndarray]:
    """``[T, C, H, W]`` -> ``[T, C, H+2p, W+2p]`` and its validity, ``pad`` px of no-data around."""
    if pad == 0:
        return x, valid  # fill_nodata works on its own copy
    t, c, h, w = x.shape
    out = np.zeros((t, c, h + 2 * pad, w + 2 * pad), dtype=np.float32)
    out[:, :, pad:pad + h, pad:pad + w] = x
    padded = np.zeros(out.shape, dtype=bool)
    padded[:, :, pad:pad + h, pad:pad + w] = valid
    return out, padded


def valid_extent(valid: np.ndarray, pad: int, margin: int) -> Tuple[slice, slice]:
    """The rows and columns of the padded window (``pad`` px of fill around ``valid``'s
    ``[T, C, H, W]``) the network needs: the box around every valid pixel of any date and band,
    widened by the ``margin`` (what an output pixel reads: ``output_reach``), within the padded
    window, at least ``MIN_NET_SIZE`` wide where the window is.  A window over the scene's edge (backends fill
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


#: how the runtimes say an allocation failed (lower case): torch's CPU allocator ("DefaultCPUAllocator:
#: can't allocate memory"), CUDA ("CUDA out of memory"), onnxruntime ("Failed to allocate memory"),
#: C++ (``std::bad_alloc``) and ncnn, whose layers return -100 where a blob cannot be allocated
ALLOCATION_FAILURES = ("can't allocate memory", "could not allocate", "cannot allocate", "out of memory",
                       "failed to allocate", "bad_alloc", "(status -100)")
#: what lowers a window's memory, named by the error an allocation failure becomes
MEMORY_ADVICE = ("a smaller apply_neighborhood size (px; the window is size + 2 x overlap), the context's "
                 "'batch' at 1 (dates per forward pass), 'precision' 'int8_dynamic' or 'fp32' with 'runtime' "
                 "'ncnn' (the least memory: row strips), or a worker with more memory")


def allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: a ``MemoryError``, or a runtime's RuntimeError saying so."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(s in text for s in ALLOCATION_FAILURES))


def out_of_memory(exc: BaseException, shape: Sequence[int], context: Dict[str, Any]) -> MemoryError:
    """The MemoryError an allocation failure on a ``[T, C, H, W]`` window becomes: the window's
    size in pixels and the context keys that lower its memory."""
    t, c, h, w = shape
    batch = min(int(context.get("batch", 1)), t)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    return MemoryError(f"out of memory super-resolving a {h} x {w} px window ({c} bands, {batch} of {t} dates per "
                       f"pass, precision {context.get('precision', 'auto')!r}); lower it with {MEMORY_ADVICE} ({why})")


def _inner_window(shape: Sequence[int], meta: Dict[str, Any], context: Dict[str, Any]) -> int:
    """How many px per side of a window the model need not see: the context's overlap beyond
    ``required_overlap`` (0 where the window would keep no pixel without them)."""
    extra = int(context.get("overlap", 0)) - required_overlap(meta)
    return extra if extra > 0 and min(shape[-2:]) - 2 * extra > 2 * required_overlap(meta) else 0


def _superresolve_inner(values: np.ndarray, module: Any, meta: Dict[str, Any], context: Dict[str, Any], device: str,
                        dates: Optional[Sequence[Any]], extra: int) -> np.ndarray:
    """The window less ``extra`` px per side, run with the overlap the model needs: the kept
    pixels exactly as with that overlap, at the cost of the smaller window.  The output's
    outer ``factor x extra`` px lie in the overlap the backend crops: no-data, never computed."""
    t, c, h, w = values.shape
    f = meta["factor"]
    inner = _superresolve(values[:, :, extra:h - extra, extra:w - extra], module, meta,
                          {**context, "overlap": required_overlap(meta)}, device, dates)
    out = np.full((t, c, f * h, f * w), np.nan, dtype=np.float32)
    out[:, :, f * extra:f * (h - extra), f * extra:f * (w - extra)] = inner
    return out


def superresolve(values: np.ndarray, module: Any, meta: Dict[str, Any], context: Dict[str, Any], device: str = "cpu",
                 dates: Optional[Sequence[Any]] = None) -> np.ndarray:
    """Super-resolve ``[T, C, H, W]`` (model band order, input units) to ``[T, C, fH, fW]``.

    Output in the input's units, float32, NaN where the input was no-data.  An allocation failure
    (numpy's or a runtime's) is a ``MemoryError`` naming the window's size and what lowers it.
    """
    try:
        return _superresolve(values, module, meta, context, device, dates)
    except (MemoryError, RuntimeError) as exc:
        if not allocation_failure(exc):
            raise
        raise out_of_memory(exc, values.shape, context) from exc


def _superresolve(values: np.ndarray, module: Any, meta: Dict[str, Any], context: Dict[str, Any], device: str,
                  dates: Optional[Sequence[Any]]) -> np.ndarray:
    """``superresolve`` without the translation of allocation failures."""
    inner = _inner_window(values.shape, meta, context)
    if inner:  # more overlap than this model needs (the UDP's is the largest model's): what it needs
        return _superresolve_inner(values, module, meta, context, device, dates, inner)
    f = meta["factor"]
    model_scale = float(meta["input_scaling"]["scale"])
    model_offset = float(meta["input_scaling"].get("offset", 0.0))
    scale = float(context.get("scale", 10000.0))
    offset = float(context.get("offset", 0.0))
    t, c, h, w = values.shape
    values = values.astype(np.float32, copy=False)
    valid = valid_mask(values, context)
    refl = (values + offset) / scale
    valid = check_radiometry(refl, valid, meta["bands"], context, dates)
    if not valid.any():
        return np.full((t, c, f * h, f * w), np.nan, dtype=np.float32)  # all no-data: nothing to run
    fill = (np.asarray(meta["normalization"]["mean"], dtype=np.float32) * model_scale - model_offset)
    # the model's input in refl's own buffer: every array held here is held while the net runs
    x = refl.astype(np.float32, copy=False)
    x *= model_scale
    x -= model_offset
    del refl
    # what the window lacks of margin + fill reach around it (the whole scene: all of it) is no-data
    pad = max(required_overlap(meta) - int(context.get("overlap", 0)), 0)
    pad = max(pad, math.ceil(max(0, MIN_NET_SIZE - min(h, w)) / 2))
    x, padded_valid = pad_nodata(x, valid, pad)
    if not padded_valid.all():
        fill_nodata(x, padded_valid, fill)
    del padded_valid
    rows, cols = valid_extent(valid, pad, output_reach(meta))  # the net's field, then the SWIR cap's
    x = x[:, :, rows, cols]
    batch = int(context.get("batch", 1))
    swir_cap = cap_factor(context)
    # the output rows and columns this computes (window coordinates), and where they lie in its result
    (oy, iy), (ox, ix) = _placed(rows, pad, h, f), _placed(cols, pad, w, f)
    covered = (oy.start, oy.stop, ox.start, ox.stop) == (0, f * h, 0, f * w)
    if pad == 0 and covered and batch >= t:
        out = None  # one pass gives the whole output: that pass's own array
    elif covered:
        out = np.empty((t, c, f * h, f * w), dtype=np.float32)  # its pages come as the results do
    else:  # past the valid extent (a window over the scene's edge): no-data, never computed
        out = np.full((t, c, f * h, f * w), np.nan, dtype=np.float32)
    for start in range(0, t, batch):
        stop = min(t, start + batch)
        if not valid[start:stop].any():  # (never where one pass covers all: valid.any() above)
            out[start:stop] = np.nan
            continue
        y = cap_detail(infer(module, x[start:stop], device), x[start:stop], meta["bands"], swir_cap)
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
