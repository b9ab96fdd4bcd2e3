"""The shipped models side by side: what a full tile costs with each, on this CPU, in one run.

For each model (``s2sr/weights``), alternating within each round: the UDF path (``auto``, as a
backend runs it; ``benchmarks/inference.py``'s worker) on the UDP's 512 px window, on 1 thread
alone, on 2 threads, and on 1 thread in two processes at once (a 2-core executor with task-cpus 1,
as the UDP deploys it).  Two overlaps: the model's own (what ``superresolve(cube, model=...)``
gives it: its margin plus the no-data fill's reach) and the UDP's (the largest of the shipped
models', one ``apply_neighborhood`` for all), where they differ.

The tile figure: core-minutes for a 10980 x 10980 tile, windows over its edge counted by the
area they compute (``inference.tile_minutes_by_area``), from the two-at-once time (task-cpus 1:
both cores busy, each with its window).  Quality is not measured here: the models' scores on
the evaluation protocol are in the model card.

    python benchmarks/models.py [--rounds 2] [--models a,b] [--out docs/]   # docs/models_<cpu>.md and .json
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference  # noqa: E402  (the same workers, tile layout and CPU naming)


def shipped() -> Tuple[Dict[str, Dict[str, Any]], int]:
    """name -> {"weights", "overlap"}: each shipped model and its own overlap; and the UDP's
    overlap (the largest of them, one ``apply_neighborhood`` for all)."""
    from s2sr import engine
    from s2sr.deploy.udp import neighborhood_geometry, shipped_models
    from s2sr.engine.nodata import required_overlap

    metas = shipped_models()
    models = {name: {"weights": str(engine.resolve_weights({"model": name})), "overlap": required_overlap(meta)}
              for name, meta in metas.items()}
    return models, neighborhood_geometry(metas)["overlap"]


def configurations(models: Dict[str, Dict[str, Any]], names: List[str], udp_overlap: int) -> List[Dict[str, Any]]:
    """(model, overlap) pairs to time: each model at its own overlap, and at the UDP's where larger."""
    out = []
    for name in names:
        own = models[name]["overlap"]
        out.append({"model": name, "overlap": own, "which": "own" if own < udp_overlap else "own = UDP's"})
        if own < udp_overlap:
            out.append({"model": name, "overlap": udp_overlap, "which": "UDP's"})
    return out


def measure(models: Dict[str, Dict[str, Any]], configs: List[Dict[str, Any]], window: int, rounds: int) -> List[Dict[str, Any]]:
    """Each configuration's seconds per window per round: 1 thread, 2 threads, two 1-thread tasks at once."""
    rows = [dict(c, window=window, size=window - 2 * c["overlap"], s_1=[], s_2=[], s_pair=[], peak_rss_gib=0.0,
                 chosen=None) for c in configs]
    for rnd in range(rounds):
        for row in rows:
            spec = {"path": "udf", "window": window, "reps": 2, "overlap": row["overlap"],
                    "weights": models[row["model"]]["weights"]}
            for threads, key in ((1, "s_1"), (2, "s_2")):
                r = inference._spawn({**spec, "threads": threads})
                row[key].append(r["s"])
                row["peak_rss_gib"] = max(row["peak_rss_gib"], r["peak_rss_gib"])
                row["chosen"] = f"{r['precision']}, {r['runtime']}"
            pair = inference._spawn_together({**spec, "threads": 1}, inference.TASKS)
            row["s_pair"].append(statistics.mean(r["s"] for r in pair))
            print(f"round {rnd + 1}: {row['model']} overlap {row['overlap']}: 1 thread {row['s_1'][-1]:.2f} s, "
                  f"2 threads {row['s_2'][-1]:.2f} s, two at once {row['s_pair'][-1]:.2f} s", file=sys.stderr, flush=True)
    for row in rows:
        best = {k: min(row[k]) for k in ("s_1", "s_2", "s_pair")}
        row["tile_core_min_task_cpus_1"] = inference.tile_minutes_by_area(best["s_pair"], window, row["size"])
        row["tile_core_min_task_cpus_2"] = 2 * inference.tile_minutes_by_area(best["s_2"], window, row["size"])
        row["best"] = best
    return rows


def to_markdown(res: Dict[str, Any]) -> str:
    rows = res["rows"]
    base = next((r for r in rows if r["model"] == res["default"]), None)
    lines = [
        "# The shipped models side by side", "",
        f"Command: `python benchmarks/models.py --rounds {res['rounds']}`  ",
        f"CPU: {res['cpu']}; the UDF path (`auto`), the UDP's {res['window']} px window; the faster of "
        f"{res['rounds']} rounds (all rounds listed). Tile: core-minutes for a 10980 x 10980 tile, from two "
        "1-thread windows at once (task-cpus 1, as the UDP deploys) or one on 2 threads (task-cpus 2).", "",
        "| model | overlap px | kept px | chosen | 1 thread s | 2 threads s | two at once s | tile core-min, task-cpus 1 | task-cpus 2 | the default's tile / this one's | peak GiB |",
        "|---|---|---:|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        ratio = f"{base['tile_core_min_task_cpus_1'] / r['tile_core_min_task_cpus_1']:.2f}x" if base else "-"
        lines.append(f"| {r['model']} | {r['overlap']} ({r['which']}) | {r['size']} | {r['chosen']} | {fmt(r['s_1'])} | "
                     f"{fmt(r['s_2'])} | {fmt(r['s_pair'])} | {r['tile_core_min_task_cpus_1']:.0f} | "
                     f"{r['tile_core_min_task_cpus_2']:.0f} | {ratio} | {r['peak_rss_gib']:.2f} |")
    lines += ["", "Quality: the model card's evaluation (`s2sr evaluate --protocol x2`); speed notes: docs/speed_notes.md.", ""]
    return "\n".join(lines)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated (default: every shipped model but the GAN and L1C variants)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=int, help="input px, overlap included (default: the UDP's, 512)")
    parser.add_argument("--out", type=Path, help="a folder (docs/) for models_<cpu>.md and its JSON")
    parser.add_argument("--render", type=Path, metavar="JSON", help="re-render --out from a saved result (no measuring)")
    args = parser.parse_args(argv)
    from s2sr import engine

    if args.render:
        res = json.loads(args.render.read_text())
    else:
        models, udp_overlap = shipped()
        names = args.models.split(",") if args.models else [n for n in models if not n.endswith(("_gan", "_l1c"))]
        unknown = [n for n in names if n not in models]
        if unknown:
            raise SystemExit(f"unknown models {unknown}; shipped: {sorted(models)}")
        window = args.window or inference.default_window()
        rows = measure(models, configurations(models, names, udp_overlap), window, args.rounds)
        res = {"cpu": inference.cpu_model(), "window": window, "rounds": args.rounds, "default": engine.DEFAULT_MODEL,
               "rows": rows}
    text = to_markdown(res)
    if args.out:
        path = args.out / f"models_{inference.cpu_name(res['cpu'])}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
