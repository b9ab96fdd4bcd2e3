"""Fixtures; the helpers live in ``s2sr_testing.py`` beside this file (importable by tests)."""

import sys
from pathlib import Path
from typing import Any, Dict

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make s2sr_testing importable

from openeo.udf.run_code import load_module_from_string  # noqa: E402

from s2sr.udf import s2sr_udf, udf_source  # noqa: E402
from s2sr_testing import export_slim  # noqa: E402


@pytest.fixture(scope="session")
def udf_code() -> str:
    return udf_source()


@pytest.fixture(scope="session")
def udf_module(udf_code) -> Dict[str, Any]:
    """The UDF's globals, loaded from its text exactly as run_code loads it (cached per text)."""
    return load_module_from_string(udf_code)


@pytest.fixture(scope="session")
def slim_weights(tmp_path_factory) -> Path:
    return export_slim(tmp_path_factory.mktemp("weights") / "slim.pt")


@pytest.fixture(scope="session")
def slim_margin(slim_weights) -> int:
    return s2sr_udf.read_metadata(slim_weights)["margin"]
