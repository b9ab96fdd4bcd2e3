"""The inference benchmark's machinery (no time thresholds: the figures are the script's job):
its workers run the real paths, and the committed report is what its own JSON renders to."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ISSUE_KEYS = ("mpix_per_s", "onnxruntime_mpix_per_s", "speedup_vs_onnxruntime", "peak_fraction",
              "full_tile_minutes_1core", "peak_memory_gib", "onnxruntime_peak_memory_gib", "psnr_drop_db_vs_fp32")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("s2sr_bench", ROOT / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return json.loads((ROOT / "docs" / "benchmarks.json").read_text())


def test_committed_report_is_its_json_rendered(bench, report):
    summary = bench.summarize(report, max(int(t) for t in report["peak_gflops"]))
    assert all(summary[k] is not None for k in ISSUE_KEYS)
    assert summary["speedup_vs_onnxruntime"] == pytest.approx(summary["mpix_per_s"] / summary["onnxruntime_mpix_per_s"])
    assert summary["peak_fraction"] < summary["peak_fraction_computed"] < 1.1  # overlap counted; no more than the core does
    assert {k: summary[k] for k in ISSUE_KEYS} == pytest.approx({k: report["summary"][k] for k in ISSUE_KEYS})
    # the markdown beside it says the same (the plot needs matplotlib, the bench extra)
    assert bench.to_markdown(report, report["command"]) == (ROOT / "docs" / "benchmarks.md").read_text()


@pytest.mark.parametrize("exact, words", [(True, "exact (VNNI"), (False, "saturating (no VNNI")])
def test_report_says_how_int8_sums(bench, report, exact, words):
    res = dict(report, int8_products_exact=exact, accuracy={**report["accuracy"], "int8": report["accuracy"]["fp32"]})
    assert words in bench.to_markdown(res, "cmd")


@pytest.mark.parametrize("path", ["udf", "udf_fp32", "eager"])
def test_workers_run_the_real_paths(bench, path):
    from s2sr.udf import s2sr_udf

    weights = str(s2sr_udf.resolve_weights({}))
    margin = s2sr_udf.read_metadata(weights)["margin"]
    r = bench._spawn({"path": path, "threads": 1, "window": 64, "reps": 1, "overlap": margin, "weights": weights})
    assert r["s"] > 0 and r["peak_rss_gib"] > 0.1
    if path == "udf":
        assert r["precision"] in ("fp32", "bf16")  # auto's choice; never int8
    else:
        assert r["precision"] == {"eager": None, "udf_fp32": "fp32"}[path]
