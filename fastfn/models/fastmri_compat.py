"""fastMRI's own networks (``fastmri.models.Unet`` / ``VarNet``) as fastfn reconstructors.

    from fastmri.models import VarNet
    net = VarNet(num_cascades=12); net.load_state_dict(torch.load("knee_leaderboard_state_dict.pt"))
    model = from_fastmri(net)                      # a fastfn Reconstructor running fastMRI's code
    image = model(masked_kspace, mask, crop_size=(320, 320))     # (B, 320, 320)

:func:`from_fastmri` keeps the fastMRI module and puts fastMRI's data transform
around it, so the attack, the evaluation and robust training use it unchanged
(gradients reach ``masked_kspace`` and the module's parameters). :func:`to_fastfn`
instead copies the weights into fastfn's own model of the same architecture, which
fastfn's checkpoints can store and rebuild.

The module is recognised by its class name and structure, so fastfn needs no
``fastmri`` installed (a vendored copy of fastMRI's models works too).
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

from fastfn.models.registry import make_config
from fastfn.models.base import CropSize, ImageDomainReconstructor, Reconstructor, center_crop

__all__ = ["fastmri_kind", "from_fastmri", "to_fastfn", "FastmriUnet", "FastmriVarNet"]


def fastmri_kind(module: nn.Module) -> str:
    """``"unet"`` for a ``fastmri.models.Unet``, ``"varnet"`` for a ``fastmri.models.VarNet``.

    Raises TypeError for anything else (a fastfn Reconstructor included: it needs no
    conversion).
    """
    name = type(module).__name__
    if isinstance(module, Reconstructor):
        raise TypeError(f"{name} is already a fastfn Reconstructor; use it directly")
    if name == "Unet" and all(hasattr(module, a) for a in
                              ("in_chans", "out_chans", "down_sample_layers", "conv", "up_conv")):
        return "unet"
    if name == "VarNet" and hasattr(module, "sens_net") and isinstance(
            getattr(module, "cascades", None), nn.ModuleList):
        return "varnet"
    raise TypeError(f"expected fastmri.models.Unet or fastmri.models.VarNet, got "
                    f"{type(module).__module__}.{name}")


class FastmriUnet(ImageDomainReconstructor):
    """fastMRI's U-Net with its ``UnetDataTransform`` around it.

    masked_kspace complex (B, H, W) (or (B, C, H, W) with multicoil=True), mask float
    (B, 1, W) -> zero-filled |ifft2c| (RSS over coils) -> centre crop to crop_size ->
    per-image (x - mean) / (std + 1e-11), clamped to [-6, 6] -> ``unet`` on (B, 1, h, w)
    -> x * std + mean -> (B, h, w). The mask is not used: the U-Net sees the image only.

    ``model_name``/``config`` say "unet": fastfn's ``UnetReconstructor`` is the same
    network under the same parameter names, so a fastfn checkpoint of this model
    rebuilds as that one.
    """

    def __init__(self, unet: nn.Module, multicoil: bool = False) -> None:
        if (unet.in_chans, unet.out_chans) != (1, 1):
            raise ValueError(f"from_fastmri: fastMRI's U-Net transform gives the network one "
                             f"magnitude channel; this Unet has in_chans={unet.in_chans}, "
                             f"out_chans={unet.out_chans} (need 1 and 1)")
        super().__init__(unet, input="magnitude", multicoil=multicoil, normalize=True, clamp=6.0,
                         eps=1e-11)

        chans = int(unet.down_sample_layers[0].layers[0].weight.shape[0])
        self.model_name = "unet"
        self.config = make_config("unet", chans=chans, num_pool_layers=len(unet.down_sample_layers),
                                  drop_prob=float(getattr(unet, "drop_prob", 0.0)),
                                  multicoil=multicoil)

    @property
    def unet(self) -> nn.Module:
        return self.module


class FastmriVarNet(Reconstructor):
    """fastMRI's end-to-end VarNet, called as fastMRI's VarNet module calls it.

    masked_kspace complex (B, C, H, W) (or (B, H, W) as one coil), mask float (B, 1, W)
    or (B, 1, 1, W), nonzero = sampled -> ``varnet(view_as_real(k) (B, C, H, W, 2),
    mask bool (B, 1, 1, W, 1), num_low_frequencies)`` -> RSS image (B, H, W) ->
    centre crop -> (B, h, w).

    num_low_frequencies: None reads the fully-sampled centre off each sample's mask
    (fastMRI's rule when the data gives none: twice the shorter sampled run from
    W // 2); an int is passed to every call (what fastMRI's transform gives for the
    mask function's centre fraction).
    """

    multicoil = True

    def __init__(self, varnet: nn.Module, num_low_frequencies: Optional[int] = None) -> None:
        super().__init__()
        if num_low_frequencies is not None and int(num_low_frequencies) < 1:
            raise ValueError(f"from_fastmri: num_low_frequencies must be >= 1 or None, "
                             f"got {num_low_frequencies}")
        self.varnet = varnet
        self.num_low_frequencies = None if num_low_frequencies is None else int(num_low_frequencies)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                crop_size: CropSize = None) -> torch.Tensor:
        if masked_kspace.dim() == 3:
            masked_kspace = masked_kspace.unsqueeze(1)
        self.check_inputs(masked_kspace, mask)
        W = masked_kspace.shape[-1]
        sampled = (mask.reshape(mask.shape[0], 1, 1, W, 1) != 0)
        image = self.varnet(torch.view_as_real(masked_kspace), sampled, self.num_low_frequencies)
        return center_crop(image, crop_size)


def from_fastmri(module: nn.Module, *, multicoil: Optional[bool] = None,
                 num_low_frequencies: Optional[int] = None) -> Reconstructor:
    """A fastMRI ``Unet`` or ``VarNet`` module as a fastfn :class:`Reconstructor`.

    The returned model holds ``module`` itself (its parameters, its device, its
    train/eval mode) and runs fastMRI's code: see :class:`FastmriUnet` (fastMRI's
    ``UnetDataTransform`` normalisation around the U-Net) and :class:`FastmriVarNet`.

    Args:
        module: a ``fastmri.models.Unet(1, 1, ...)`` or ``fastmri.models.VarNet``.
        multicoil: U-Net only: True for a multi-coil U-Net (RSS of the coil images in,
            k-space (B, C, H, W)); default False. A VarNet is multi-coil.
        num_low_frequencies: VarNet only: see :class:`FastmriVarNet`.

    Returns:
        ``model(masked_kspace, mask, crop_size) -> (B, h, w)``, differentiable with
        respect to ``masked_kspace``.
    """
    kind = fastmri_kind(module)
    if kind == "unet":
        if num_low_frequencies is not None:
            raise ValueError("from_fastmri: num_low_frequencies is a VarNet setting; a U-Net "
                             "sees only the zero-filled image")
        return FastmriUnet(module, multicoil=bool(multicoil))
    if multicoil is False:
        raise ValueError("from_fastmri: a VarNet is multi-coil (single-coil (B, H, W) k-space "
                         "is taken as one coil); leave multicoil unset")
    return FastmriVarNet(module, num_low_frequencies)


def to_fastfn(module: nn.Module, *, multicoil: Optional[bool] = None) -> Reconstructor:
    """fastfn's own model with the weights of a fastMRI ``Unet`` or ``VarNet`` (eval mode, CPU).

    The U-Net becomes ``build_model("unet", chans, num_pool_layers, drop_prob,
    multicoil)``, the same computation as :func:`from_fastmri`. The VarNet becomes
    ``build_model("varnet", ...)``; it equals fastMRI's when the images need no padding
    or when ``pools`` and ``sens_pools`` are 4 (fastMRI's default and released
    setting): fastMRI's NormUnet pads images to a multiple of 16, fastfn's to a
    multiple of 2**pools. For a fully sampled mask fastMRI's sensitivity net uses one
    centre column, fastfn's every column.
    """
    from fastfn.models.weights import load_weights

    kind = fastmri_kind(module)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    if kind == "unet":
        if (module.in_chans, module.out_chans) != (1, 1):
            raise ValueError(f"to_fastfn: fastfn's U-Net reconstructor is 1 -> 1 channels; this "
                             f"Unet has {module.in_chans} -> {module.out_chans}")
        return load_weights("unet", state, {"multicoil": bool(multicoil),
                                            "drop_prob": float(getattr(module, "drop_prob", 0.0))})
    if multicoil is False:
        raise ValueError("to_fastfn: a VarNet is multi-coil; leave multicoil unset")
    if not getattr(module.sens_net, "mask_center", True):
        raise ValueError("to_fastfn: this VarNet's sensitivity net does not mask the k-space "
                         "centre (mask_center=False); fastfn's VarNet always does. Use from_fastmri")
    model = load_weights("varnet", state)
    if (model.config.pools, model.config.sens_pools) != (4, 4):
        warnings.warn(f"to_fastfn: VarNet with pools={model.config.pools}, sens_pools="
                      f"{model.config.sens_pools}: fastfn pads images to a multiple of "
                      f"2**pools, fastMRI to a multiple of 16, so outputs differ on images "
                      f"whose sides are not multiples of both", stacklevel=2)
    return model
