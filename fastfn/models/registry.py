"""The model registry: each fastfn model's name, config dataclass and class, and
``build_model`` / ``make_config`` / ``model_spec`` (what checkpoints store and rebuild)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Tuple, Type

from fastfn.models.base import Reconstructor
from fastfn.models.cascade import CascadeNet
from fastfn.models.unet import UnetReconstructor
from fastfn.models.varnet import VarNet


@dataclass
class UnetConfig:
    """fastMRI U-Net baseline (defaults: the paper's 32 channels, 4 pools)."""

    chans: int = 32
    num_pool_layers: int = 4
    drop_prob: float = 0.0
    multicoil: bool = False


@dataclass
class CascadeConfig:
    """Cascaded CNN or U-Net denoisers + data consistency, single-coil."""

    num_cascades: int = 5
    chans: int = 32
    num_convs: int = 5        # convs per CNN denoiser (denoiser="cnn" only)
    dc: str = "hard"          # "hard" | "soft"
    lam_init: float = 1.0     # initial soft-DC noise weight (soft only)
    denoiser: str = "cnn"     # "cnn" | "unet"
    pools: int = 3            # pool levels per U-Net denoiser (denoiser="unet" only)
    norm: bool = False        # per-image, per-channel mean/std normalisation around each denoiser
    instance_norm: bool = False  # InstanceNorm2d inside the CNN denoisers (denoiser="cnn" only)
    magnitude: bool = False   # |x| as a third input channel of every denoiser


@dataclass
class VarNetConfig:
    """End-to-end VarNet, multi-coil (defaults: fastMRI's)."""

    num_cascades: int = 12
    chans: int = 18
    pools: int = 4
    sens_chans: int = 8
    sens_pools: int = 4


_REGISTRY: Dict[str, Tuple[Type, Type[Reconstructor]]] = {
    "unet": (UnetConfig, UnetReconstructor),
    "cascade": (CascadeConfig, CascadeNet),
    "varnet": (VarNetConfig, VarNet),
}
MODEL_NAMES: Tuple[str, ...] = tuple(_REGISTRY)
CONFIGS: Dict[str, Type] = {name: cfg for name, (cfg, _) in _REGISTRY.items()}


def make_config(name: str, **config: Any):
    """The config dataclass of model ``name`` with ``config`` overriding its defaults.

    Raises ValueError for an unknown model name or config key (naming it and the valid ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    cls = _REGISTRY[name][0]
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"model {name!r}: unknown config key(s) {unknown}; valid keys: {sorted(valid)}")
    return cls(**config)


def build_model(name: str, **config: Any) -> Reconstructor:
    """Build model ``name`` (one of MODEL_NAMES) from its config keys.

    The returned model carries ``model_name`` and ``config`` (the dataclass), so
    ``build_model(m.model_name, **asdict(m.config))`` rebuilds the same architecture.
    """
    cfg = make_config(name, **config)
    model = _REGISTRY[name][1](**asdict(cfg))
    model.model_name = name
    model.config = cfg
    return model


def model_spec(model: Reconstructor) -> Tuple[str, Dict[str, Any]]:
    """(name, config dict) of a model made by build_model, for checkpoints."""
    if model.model_name is None or model.config is None:
        raise ValueError(f"{type(model).__name__} was not made by fastfn.models.build_model; "
                         "it has no (name, config) to store")
    return model.model_name, asdict(model.config)
