"""s2sr.udf: the openEO UDF, as importable code and as the text a process graph carries.

The UDF itself is ``s2sr_udf.py`` in this folder: the thin openEO adapter (numpy, xarray,
openeo) that backends run as text; it imports the engine, ``s2sr.engine``, on the worker.
"""

from functools import lru_cache
from pathlib import Path

UDF_PATH: Path = Path(__file__).with_name("s2sr_udf.py")


@lru_cache(maxsize=1)
def udf_source() -> str:
    """The UDF file's text, as ``run_udf`` / ``openeo.UDF`` want it."""
    return UDF_PATH.read_text(encoding="utf-8")


def default_weights_dir() -> Path:
    """Folder of the weights shipped in the package (``s2sr/weights``)."""
    import s2sr

    return Path(s2sr.__file__).with_name("weights")


def default_weights_path() -> Path:
    from s2sr.engine.weights import resolve_weights

    return resolve_weights({})


__all__ = ["UDF_PATH", "default_weights_dir", "default_weights_path", "udf_source"]
