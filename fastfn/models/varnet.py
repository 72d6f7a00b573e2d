"""End-to-end variational network (Sriram et al., MICCAI 2020) for multi-coil k-space.

Shapes: masked_kspace complex64 (B, C, H, W), mask float32 (B, 1, W) or (B, 1, 1, W)
-> RSS magnitude (B, h, w). Single-coil k-space (B, H, W) is accepted as one coil:
the sensitivity "map" then reduces to a unit-magnitude phase map, which is valid
but is not what the model was designed for.

Each cascade updates the multi-coil k-space iterate k:

    k <- k - eta * m * (k - k0) - F( S * NormUnet( sum_c conj(S_c) F^-1 k_c ) )

The soft data-consistency term is ``fastfn.ops.data_consistency``'s blend
``(1 - w m) k + w m k0`` (w = eta) applied directly to the k-space iterate, where it
needs no FFT, so it is written out here; every FFT is ``fastfn.ops.fft2c`` / ``ifft2c``.
Sensitivities S come from a U-Net on the fully-sampled centre (ACS) columns of k0,
normalised so that their RSS over coils is 1. The ACS width is read off each
sample's mask (the symmetric run of sampled columns around W // 2, as fastMRI does
when ``num_low_frequencies`` is not given), since the interface passes only the mask.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastfn.models.base import CropSize, Reconstructor, center_crop, rss
from fastfn.models.unet import Unet
from fastfn.ops import fft2c, ifft2c


class NormUnet(nn.Module):
    """U-Net on a complex image with per-image normalisation and padding.

    complex (N, H, W) -> real/imag channels, each normalised by its own mean and std,
    zero-padded to a multiple of 2**num_pool_layers, Unet(2 -> 2), un-padded,
    de-normalised -> complex (N, H, W).
    """

    def __init__(self, chans: int, num_pool_layers: int, drop_prob: float = 0.0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.unet = Unet(2, 2, chans, num_pool_layers, drop_prob)
        self.multiple = 2 ** num_pool_layers
        self.eps = eps

    def _pad(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int, int, int]]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        return F.pad(x, pad), pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chans = torch.view_as_real(x).permute(0, 3, 1, 2)                 # (N, 2, H, W)
        mean = chans.mean(dim=(-2, -1), keepdim=True)
        std = chans.std(dim=(-2, -1), keepdim=True) + self.eps
        padded, (left, right, top, bottom) = self._pad((chans - mean) / std)
        out = self.unet(padded).to(chans.dtype)     # under autocast the U-Net returns half precision
        out = out[..., top:out.shape[-2] - bottom, left:out.shape[-1] - right]
        out = out * std + mean
        return torch.complex(out[:, 0], out[:, 1])


def acs_mask(mask: torch.Tensor) -> torch.Tensor:
    """The fully-sampled centre (auto-calibration) columns of each sample's mask.

    mask float (B, 1, 1, W) -> float (B, 1, 1, W), 1 on the symmetric run of sampled
    columns around W // 2 (2 * min(left run, right run) columns, at least 1).
    """
    W = mask.shape[-1]
    m = mask.reshape(mask.shape[0], W) > 0.5
    centre = W // 2
    right = torch.cumprod(m[:, centre:].to(torch.int32), dim=1).sum(dim=1)
    left = torch.cumprod(m[:, :centre].flip(1).to(torch.int32), dim=1).sum(dim=1)
    num_low = torch.clamp(2 * torch.minimum(left, right), min=1)                # (B,)
    start = (W - num_low + 1) // 2
    cols = torch.arange(W, device=mask.device)
    acs = (cols >= start[:, None]) & (cols < (start + num_low)[:, None])
    return acs.to(mask.dtype).reshape(mask.shape[0], 1, 1, W)


class SensitivityModel(nn.Module):
    """Coil sensitivities from the ACS columns: ifft2c of the centre of k0, a NormUnet
    per coil image, divided by the RSS over coils.

    masked_kspace complex (B, C, H, W), mask float (B, 1, 1, W) -> complex (B, C, H, W).
    """

    def __init__(self, chans: int = 8, num_pool_layers: int = 4, eps: float = 1e-12) -> None:
        super().__init__()
        self.norm_unet = NormUnet(chans, num_pool_layers)
        self.eps = eps

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = masked_kspace.shape
        images = ifft2c(masked_kspace * acs_mask(mask))
        sens = self.norm_unet(images.reshape(B * C, H, W)).reshape(B, C, H, W)
        return sens / rss(sens, dim=1).unsqueeze(1).clamp_min(self.eps)


class VarNetBlock(nn.Module):
    """One cascade: soft DC with a learnable weight eta and a NormUnet refinement in image space.

    k, k0 complex (B, C, H, W); mask float (B, 1, 1, W); sens complex (B, C, H, W)
    -> complex (B, C, H, W).
    """

    def __init__(self, chans: int = 18, num_pool_layers: int = 4) -> None:
        super().__init__()
        self.model = NormUnet(chans, num_pool_layers)
        self.dc_weight = nn.Parameter(torch.ones(()))

    def forward(self, k: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor,
                sens: torch.Tensor) -> torch.Tensor:
        soft_dc = self.dc_weight * mask * (k - k0)
        image = (sens.conj() * ifft2c(k)).sum(dim=1)                             # (B, H, W)
        refinement = fft2c(sens * self.model(image).unsqueeze(1))
        return k - soft_dc - refinement


class VarNet(Reconstructor):
    """End-to-end VarNet: learned sensitivities + ``num_cascades`` unrolled cascades.

    masked_kspace complex64 (B, C, H, W) (or (B, H, W) as one coil), mask float32
    (B, 1, W) or (B, 1, 1, W) -> RSS magnitude of the final k-space (B, h, w).
    fastMRI's defaults: 12 cascades, chans 18, sens_chans 8, 4 pool layers each.
    """

    multicoil = True

    def __init__(self, num_cascades: int = 12, chans: int = 18, pools: int = 4,
                 sens_chans: int = 8, sens_pools: int = 4) -> None:
        super().__init__()
        if num_cascades < 1:
            raise ValueError(f"VarNet: num_cascades must be >= 1, got {num_cascades}")
        self.sens_net = SensitivityModel(sens_chans, sens_pools)
        self.cascades = nn.ModuleList([VarNetBlock(chans, pools) for _ in range(num_cascades)])

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                crop_size: CropSize = None) -> torch.Tensor:
        if masked_kspace.dim() == 3:
            masked_kspace = masked_kspace.unsqueeze(1)
        self.check_inputs(masked_kspace, mask)
        mask = mask.reshape(mask.shape[0], 1, 1, mask.shape[-1]).to(masked_kspace.real.dtype)
        sens = self.sens_net(masked_kspace, mask)
        k = masked_kspace
        for cascade in self.cascades:
            k = cascade(k, masked_kspace, mask, sens)
        return center_crop(rss(ifft2c(k), dim=1), crop_size)
