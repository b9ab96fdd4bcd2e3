"""Generator architectures of the EVOLAND shallow Sentinel-2 SISR network.

``ARCHITECTURES`` maps each model name of the seed table to its frozen config;
``build_model(name)`` returns the exportable ``SuperResolver`` around the backbone.
"""

from dataclasses import replace
from typing import Dict, List, Union

import torch
from torch import nn

from ..bands import BANDS, MEAN, MTF_NYQUIST, NATIVE_RESOLUTION_M, REFLECTANCE_SCALE, STD
from .carn import CARN, CARNConfig
from .rrdbnet import RRDBConfig, RRDBNet
from .wrapper import SuperResolver

Config = Union[CARNConfig, RRDBConfig]

ARCHITECTURES: Dict[str, Config] = {
    "carn_1x3x64g4sw": CARNConfig(cascades=1),
    "carn_2x3x64g4sw": CARNConfig(cascades=2),
    "carn_3x3x64g4sw": CARNConfig(cascades=3),
    "carn_4x3x64g4sw": CARNConfig(cascades=4),
    "carn_3x3x64g4": CARNConfig(cascades=3, shared=False),
    "carn_3x3x64g1sw": CARNConfig(cascades=3, groups=1),
    "esrgan_3x64x32": RRDBConfig(),
}
DEFAULT_MODEL = "carn_3x3x64g4sw"
#: Parameter counts published in the seed table (the SuperResolver adds only buffers).
SEED_PARAMETER_COUNTS: Dict[str, int] = {
    "carn_1x3x64g4sw": 1_243_530,
    "carn_2x3x64g4sw": 1_867_914,
    "carn_3x3x64g4sw": 2_492_298,
    "carn_4x3x64g4sw": 3_116_682,
    "carn_3x3x64g4": 4_659_594,
    "carn_3x3x64g1sw": 5_146_506,
    "esrgan_3x64x32": 2_280_662,
}


def get_config(name: str) -> Config:
    """The frozen config of a named architecture; ValueError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown model {name!r}; known architectures: {known}") from None


def build_backbone(cfg: Config) -> nn.Module:
    return CARN(cfg) if isinstance(cfg, CARNConfig) else RRDBNet(cfg)


def build_model(name: str, global_skip: bool = True, zero_init_last: bool = False, hard_constraint: bool = False) -> SuperResolver:
    """The exportable model for a named architecture, ten S2 bands, factor 2.

    ``zero_init_last`` zeroes the backbone's last conv so that, with the global skip, the
    untrained model is exactly bicubic upsampling (a sane start for fine-tuning).
    """
    return build_model_from_config(get_config(name), global_skip, zero_init_last, hard_constraint)


def build_model_from_config(cfg: Config, global_skip: bool = True, zero_init_last: bool = False,
                            hard_constraint: bool = False) -> SuperResolver:
    """As ``build_model`` for any config (e.g. a slim variant for tests)."""
    backbone = build_backbone(cfg)
    if zero_init_last:
        last = backbone.last_conv()
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    mtf = [MTF_NYQUIST[b] for b in BANDS]
    native = [NATIVE_RESOLUTION_M[b] == 10 for b in BANDS]  # the constraint binds the native 10 m bands
    return SuperResolver(backbone, cfg.factor, MEAN, STD, REFLECTANCE_SCALE, global_skip, hard_constraint, mtf, native)


def trained_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The trained tensors of a checkpoint's or a TorchScript module's state dict.

    TorchScript's state dict also lists the hard constraint's buffers, which are not trained and
    are rebuilt from the MTFs (non-persistent): leave them out.
    """
    return {k: v for k, v in state.items() if not k.startswith("constraint.")}


def load_trained(model: SuperResolver, state: Dict[str, torch.Tensor]) -> None:
    """Load trained weights from a checkpoint's or a TorchScript module's state dict
    (``trained_state``: everything but the constraint's buffers is required)."""
    model.load_state_dict(trained_state(state))


def load_subset(model: SuperResolver, state: Dict[str, torch.Tensor]) -> List[str]:
    """Load the tensors of ``state`` that ``model`` has (e.g. a shallower CARN from a deeper one:
    its first cascades, head, upsampling and tail); every tensor of ``model`` must be in ``state``
    with its shape. Returns the names of the tensors of ``state`` left out."""
    state = trained_state(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("constraint.")]
    if missing:
        raise ValueError(f"the warm start lacks {len(missing)} tensors of the model, e.g. {missing[:3]}")
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"shapes differ for {wrong[:3]}: {[tuple(state[k].shape) for k in wrong[:3]]} "
                         f"against {[tuple(own[k].shape) for k in wrong[:3]]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return [k for k in state if k not in own]


def set_conv_padding(module: nn.Module, mode: str) -> nn.Module:
    """Set every conv's ``padding_mode`` in place (``"zeros"``: equal to the trained reflection
    wherever ``margin`` px of context are supplied, and cheaper); returns ``module``."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.padding_mode = mode
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ARCHITECTURES", "BANDS", "CARN", "CARNConfig", "DEFAULT_MODEL", "RRDBConfig", "RRDBNet",
    "SEED_PARAMETER_COUNTS", "SuperResolver", "build_backbone", "build_model", "build_model_from_config", "count_parameters",
    "get_config", "load_subset", "load_trained", "trained_state", "replace", "set_conv_padding",
]
