"""s2sr.engine.context: the UDF context's keys, their types and their checks (no torch).

A backend hands the context as plain JSON values (Jep converts Java numbers to ``int`` /
``float``); a value of the wrong type is a ``ValueError`` naming the key and what it takes, never a
``TypeError`` deep in the engine or a silently different result.
"""

import math
import numbers
from typing import Any, Callable, Dict, Optional, Tuple

PRECISIONS = ("fp32", "bf16", "int8", "int8_dynamic", "auto")
from s2sr.engine.runtimes import RUNTIMES  # noqa: E402  (the runtimes the engine knows)
OUTPUT_DTYPES = ("float32", "int16")
DEFAULT_FACTOR = 2
#: int16 output keeps the input's units: below this scale its rounding steps exceed 0.01 reflectance
MIN_INT16_SCALE = 100.0
DEFAULT_RESOLUTION = 10.0  # metres: the grid the UDP hands the UDF (the 10 m bands' own)


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _device(value: Any) -> bool:
    return value in ("cpu", "auto") or (isinstance(value, str) and value.startswith("cuda"))


#: key -> (check, what it takes, None allowed (meaning: the default))
KEYS: Dict[str, Tuple[Callable[[Any], bool], str, bool]] = {
    "model": (_text, "a model name (string)", True),
    "weights": (_text, "a weights file path (string)", True),
    "weights_dir": (_text, "a folder path (string)", True),
    "device": (_device, "'cpu', 'cuda[:n]' or 'auto'", True),
    "threads": (lambda v: _integer(v) and v >= 1, "an integer >= 1", True),
    "batch": (lambda v: _integer(v) and v >= 1, "an integer >= 1", False),
    "precision": (lambda v: v in PRECISIONS, f"one of {list(PRECISIONS)}", False),
    "runtime": (lambda v: v in RUNTIMES, f"one of {list(RUNTIMES)}", False),
    "scale": (lambda v: _number(v) and v > 0, "a positive number", False),
    "offset": (_number, "a finite number", False),
    "nodata": (_number, "a finite number (or null: NaN only)", True),
    "output_dtype": (lambda v: v in OUTPUT_DTYPES, f"one of {list(OUTPUT_DTYPES)}", False),
    "overlap": (lambda v: _integer(v) and v >= 0, "an integer >= 0", False),
    "factor": (lambda v: _integer(v) and v >= 2, "an integer >= 2", False),
    "resolution": (lambda v: _number(v) and v > 0, "a positive number (metres)", False),
    "swir_cap": (lambda v: _number(v) and v >= 0, "a number >= 0 (0: no cap; null: the default)", True),
}
CONTEXT_KEYS = tuple(KEYS)
ENUMS = {"precision": PRECISIONS, "runtime": RUNTIMES, "output_dtype": OUTPUT_DTYPES}


def check_context(context: Any) -> Dict[str, Any]:
    """The context as a dict, every key known and every value of its type; ValueError otherwise."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ValueError(f"the UDF context must be a dict, got {type(context).__name__}")
    unknown = sorted(str(k) for k in set(context) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown context keys {unknown}; known keys: {list(CONTEXT_KEYS)}")
    for key, value in context.items():
        check, takes, nullable = KEYS[key]
        if value is None and nullable:
            continue
        if value is None or not check(value):
            if key in ENUMS:
                raise ValueError(f"context key {key!r}: unknown {key} {value!r}; available: {list(ENUMS[key])}")
            raise ValueError(f"context key {key!r} must be {takes}, got {value!r} ({type(value).__name__})")
    scale = float(context.get("scale", 10000.0))
    if context.get("output_dtype") == "int16" and scale < MIN_INT16_SCALE:
        raise ValueError(f"output_dtype 'int16' with scale {scale:g} would round reflectance to steps of "
                         f"{1 / scale:g}: the image would be rounded to nothing; use output_dtype 'float32' "
                         f"or input in digital numbers (scale >= {MIN_INT16_SCALE:g})")
    return context


def factor_of(context: Dict[str, Any]) -> int:
    """The upscaling factor the context asks for (``factor``, default 2)."""
    return int(context.get("factor", DEFAULT_FACTOR))


def resolution_of(context: Dict[str, Any], meta: Optional[Dict[str, Any]] = None) -> float:
    """The input pixel size in metres: the context's ``resolution``, else the weights', else 10."""
    if context.get("resolution") is not None:
        return float(context["resolution"])
    if meta and isinstance(meta.get("input_resolution"), (int, float)):
        return float(meta["input_resolution"])
    return DEFAULT_RESOLUTION
