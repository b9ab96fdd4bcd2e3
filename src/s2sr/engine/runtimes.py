"""s2sr.engine.runtimes: which inference runtimes this worker has (no import of any of them).

CDSE's workers have numpy and xarray but no torch: the engine must import, check its input and
run on onnxruntime there, so nothing outside the runtime modules imports torch at the top.
"""

import importlib.util

RUNTIMES = ("auto", "torch", "ncnn", "onnxruntime")
MIN_NET_SIZE = 8  # the smallest input a network runs on (reflection padding needs > 1 px)


def available(package: str) -> bool:
    """Whether ``package`` is importable here (found on ``sys.path``, not imported)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def torch_available() -> bool:
    return available("torch")


def ncnn_available() -> bool:
    return available("ncnn")


def onnxruntime_available() -> bool:
    return available("onnxruntime")
