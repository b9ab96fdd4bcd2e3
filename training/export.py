"""Export a generator to TorchScript weights that describe themselves.

The archive carries ``s2sr_metadata.json`` (``_extra_files``): architecture, bands in order,
factor, margin (input pixels of context each side, from the receptive field), input scaling,
normalisation, nodata conventions, training summary and versions.  ``load`` reads it back
through the UDF's own loader, so the checks users meet are the ones tested here.

CLI: ``s2sr-export --arch carn_3x3x64g4sw [--checkpoint ckpt.pt] --out weights/``.
"""

import argparse
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

import s2sr
from s2sr.udf import s2sr_udf

from .bands import BANDS, INT16_NODATA, MEAN, REFLECTANCE_SCALE, STD
from .models import DEFAULT_MODEL, SuperResolver, build_model, count_parameters
from .models.receptive_field import receptive_field


def build_metadata(model: SuperResolver, arch: str, training: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The self-description stored beside the scripted model."""
    rf = receptive_field(model)
    return {
        "format": s2sr_udf.WEIGHTS_FORMAT,
        "format_version": s2sr_udf.WEIGHTS_FORMAT_VERSION,
        "architecture": arch,
        "config": {"family": type(model.backbone).__name__, **asdict(model.backbone.cfg)},
        "parameters": count_parameters(model),
        "bands": list(BANDS),
        "factor": model.factor,
        "margin": rf.margin_in_px,
        "receptive_field": {"radius_out_px": rf.radius_out_px, "radius_lr_px": rf.radius_lr_px, "margin_in_px": rf.margin_in_px},
        "input_scaling": {"scale": REFLECTANCE_SCALE, "offset": 0.0, "units": "reflectance x 10000 (L2A digital numbers)"},
        "normalization": {"mean": list(MEAN), "std": list(STD), "space": "reflectance"},
        "global_skip": "bicubic" if model.global_skip else "none",
        "hard_constraint": {"enabled": model.hard_constraint, "radius": model.constraint.radius,
                            "iterations": model.constraint.iterations,
                            "bands": [b for b, on in zip(BANDS, model.constraint.active.flatten().tolist()) if on],
                            "note": "low-frequency hard constraint: the output re-degraded by each band's MTF blur "
                                    "and decimation x2 reproduces the 10 m-grid input"},
        "nodata": {"input": "NaN", "int16_output": INT16_NODATA},
        "training": training or {"trained": False, "note": "untrained export"},
        "package_version": s2sr.__version__,
        "torch_version": torch.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def export(model: SuperResolver, arch: str, path: Path, training: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Script ``model`` and save it with its metadata to ``path``; returns the metadata."""
    model = model.eval().float()
    meta = build_metadata(model, arch, training)
    scripted = torch.jit.script(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={s2sr_udf.METADATA_FILE: json.dumps(meta, indent=1)})
    return meta


def load(path: Path, device: str = "cpu") -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load exported weights with the UDF's checks (metadata, checksum, probe run)."""
    module, meta, _ = s2sr_udf.load_model({"weights": str(path), "device": device})
    return module, meta


def write_manifest(folder: Path, default: str = DEFAULT_MODEL) -> Dict[str, Any]:
    """manifest.json for every ``*.pt`` in ``folder``: file, sha256, metadata; the default name."""
    folder = Path(folder)
    models = {}
    for weights in sorted(folder.glob("*.pt")):
        models[weights.stem] = {"file": weights.name, "sha256": s2sr_udf.sha256_file(weights), "metadata": s2sr_udf.read_metadata(weights)}
    if default not in models:
        raise ValueError(f"default model {default!r} is not among {sorted(models)}")
    manifest = {"format": "s2sr-weights-manifest", "format_version": 1, "default": default, "models": models}
    (folder / s2sr_udf.MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="s2sr-export", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=DEFAULT_MODEL, help="architecture name (default %(default)s)")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint with a 'model' state dict")
    parser.add_argument("--out", type=Path, required=True, help="output folder; writes <arch>.pt and manifest.json")
    parser.add_argument("--no-skip", action="store_true", help="export without the bicubic global skip")
    parser.add_argument("--hard-constraint", action="store_true", help="add the low-frequency hard constraint layer")
    parser.add_argument("--name", help="file stem (default: the architecture name)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, global_skip=not args.no_skip, zero_init_last=args.checkpoint is None,
                        hard_constraint=args.hard_constraint)
    training = None
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        training = state.get("summary", {"trained": True})
    meta = export(model, args.arch, args.out / f"{args.name or args.arch}.pt", training)
    write_manifest(args.out, default=args.name or args.arch if not (args.out / f"{DEFAULT_MODEL}.pt").exists() else DEFAULT_MODEL)
    print(json.dumps({k: meta[k] for k in ("architecture", "factor", "margin", "parameters")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
