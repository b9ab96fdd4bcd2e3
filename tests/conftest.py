"""Fixtures; the helpers live in ``s2sr_testing.py`` beside this file (importable by tests)."""

import sys
from pathlib import Path
from typing import Any, Dict

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make s2sr_testing importable

from openeo.udf.run_code import load_module_from_string  # noqa: E402

from s2sr import engine
from s2sr.udf import udf_source  # noqa: E402
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
def slim_overlap(slim_weights) -> int:
    """The overlap with which windows equal the whole-scene run: margin + the no-data fill's reach."""
    return engine.nodata.required_overlap(engine.read_metadata(slim_weights))


@pytest.fixture
def fresh_decisions(monkeypatch, tmp_path):
    """No decision made yet in this process, and a decision folder of the test's own."""
    from s2sr.engine import precision

    monkeypatch.setattr(precision, "_DECISIONS", {})
    monkeypatch.setenv("S2SR_CACHE_DIR", str(tmp_path / "decisions"))
    return precision


def pytest_terminal_summary(terminalreporter):
    """Say which interpreters ran the geopyspark executor's sequence (tests/test_geopyspark.py)."""
    from s2sr.deploy.geopyspark import jep_available

    missing = jep_available()
    terminalreporter.write_line("geopyspark harness: in-process namespaces and real jep.SharedInterpreters" if missing is None
                                else f"geopyspark harness: in-process namespaces only (real Jep skipped: {missing})")
