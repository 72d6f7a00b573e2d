"""Reconstruction models behind one interface (`Reconstructor`), and `build_model`.

    model = build_model("unet", chans=32, num_pool_layers=4)
    image = model(masked_kspace, mask, crop_size=(320, 320))        # (B, 320, 320)

A checkpoint stores ``(model.model_name, dataclasses.asdict(model.config))`` and
rebuilds the model with ``build_model(name, **config)``.
"""
from __future__ import annotations

from fastfn.models.base import (ImageDomainReconstructor, Reconstructor, center_crop, rss, wrap,
                                zero_filled_magnitude)
from fastfn.models.cascade import CascadeNet
from fastfn.models.unet import Unet, UnetReconstructor
from fastfn.models.registry import (CONFIGS, MODEL_NAMES, CascadeConfig, UnetConfig, VarNetConfig, build_model,
                                    make_config, model_spec)
from fastfn.models.varnet import VarNet
from fastfn.models.fastmri_compat import FastmriUnet, FastmriVarNet, fastmri_kind, from_fastmri, to_fastfn
from fastfn.models.weights import RELEASED, WeightsError, load_weights, released_config, to_fastmri_state_dict


__all__ = [
    "Reconstructor", "ImageDomainReconstructor", "wrap", "build_model", "make_config", "model_spec",
    "MODEL_NAMES", "CONFIGS", "UnetConfig", "CascadeConfig", "VarNetConfig",
    "Unet", "UnetReconstructor", "CascadeNet", "VarNet",
    "center_crop", "rss", "zero_filled_magnitude",
    "from_fastmri", "to_fastfn", "fastmri_kind", "FastmriUnet", "FastmriVarNet",
    "load_weights", "released_config", "to_fastmri_state_dict", "RELEASED", "WeightsError",
]
