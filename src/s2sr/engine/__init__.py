"""s2sr.engine: what the UDF runs, as importable modules whose caches outlive a window.

A geopyspark backend runs a ``Python-Jep`` UDF's text in a fresh interpreter for every window
(new globals, shared ``sys.modules``): state the UDF text defines is rebuilt per window, state
in an imported module is not.  So the model load, the weights checksum and the ``auto`` choice
live here, one job per module:

- ``weights``: weights files, metadata, checksums, search folders (no torch);
- ``context``: the context keys and their checks (no torch);
- ``coords``: the output grid (no torch);
- ``nodata``: valid pixels, radiometric checks, the no-data fill, int16 output;
- ``torch_runtime``, ``onednn``, ``ncnn_runtime``: the runtimes;
- ``precision``: which runtime and precision run, the cached models, the ``auto`` decision;
- ``threads``: the CPUs a worker may use;
- ``swir_cap``: the cap on B11 / B12's detail after the network (numpy);
- ``tiling``: one window through the network (fill, pad, valid extent, infer, cap, crop);
- ``cube``: the whole thing on an xarray cube.

Importing this package imports nothing heavy.
"""

import os

# Idle OpenMP threads must sleep, not spin: on the 2-vCPU workers measured, spinning threads took
# the core from the working one (docs/speed_notes.md).  Read when torch loads OpenMP: set here,
# before any engine module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tensors of 2 MB and more on transparent huge pages: far fewer page faults per forward pass
# (docs/speed_notes.md).  Read when torch makes its first tensor.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

ENGINE_VERSION = "0.2.0"

#: the engine's public names -> the module that defines them (imported on first use: PEP 562)
_EXPORTS = {
    "weights": ("ARCHIVE_DIR", "BANDS_10M", "BANDS_20M", "DEFAULT_MODEL", "INT8_SUFFIX", "MANIFEST_FILE", "METADATA_FILE", "MODEL_BANDS",
                "WEIGHTS_FORMAT", "WEIGHTS_FORMAT_VERSION", "canonical_band", "metadata_cached", "package_weights_dir",
                "read_metadata", "resolve_weights", "sha256_file", "stat_key", "validate_metadata"),
    "context": ("CONTEXT_KEYS", "PRECISIONS", "RUNTIMES", "check_context"),
    "coords": ("fine_axis", "outer_edge", "pixel_centres", "regular_step"),
    "nodata": ("FILL_REACH", "INT16_NODATA", "output_reach", "required_overlap", "to_int16"),
    "torch_runtime": ("gpu_flags", "min_time", "texture"),
    "onednn": ("QUANTIZED_ENGINE", "dynamic_int8", "fuse_onednn", "int8_products_exact"),
    "ncnn_runtime": ("NcnnModel", "ncnn_network"),
    "runtimes": ("ncnn_available", "onnxruntime_available", "torch_available"),
    "precision": ("choose_path", "decision_uses", "decisions", "load_model"),
    "swir_cap": ("CAP_REACH", "SWIR_BANDS", "SWIR_CAP_K", "cap_detail", "cap_factor"),
    "tiling": ("superresolve", "valid_extent"),
    "cube": ("superresolve_cube",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


_MODULES = ("context", "coords", "cube", "ncnn_runtime", "nodata", "onednn", "onnx_runtime", "precision", "runtimes", "swir_cap", "threads", "tiling",
            "torch_runtime", "weights")


def __getattr__(name: str):
    import importlib

    if name in _MODULES:  # s2sr.engine.<module> without importing it first
        return importlib.import_module(f"s2sr.engine.{name}")
    if name not in _WHERE:
        raise AttributeError(f"module 's2sr.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"s2sr.engine.{_WHERE[name]}"), name)


def __dir__():
    return sorted(list(globals()) + list(_WHERE))
