"""Cascaded CNN with data consistency for single-coil complex images (Schlemper et al. 2017).

x_0 = ifft2c(k0); for each cascade t: x <- DC(x + D_t(x), k0, mask, lam_t), with DC
``fastfn.ops.data_consistency`` (hard: sampled k-space replaced by k0; soft: blended
with weight lam / (1 + lam), lam >= 0 learnable). The denoiser D_t is a plain CNN
(``denoiser="cnn"``, Schlemper et al.) or a small fastMRI U-Net on the 2 real channels
(``denoiser="unet"``, as in cascaded/unrolled U-Net networks). Output |x| centre-cropped.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fastfn.models.base import CropSize, Reconstructor, center_crop
from fastfn.models.unet import Unet
from fastfn.ops import data_consistency, ifft2c


def residual_on_channels(x: torch.Tensor, net: nn.Module, norm: bool, pad_multiple: int = 1,
                         eps: float = 1e-6, magnitude: bool = False) -> torch.Tensor:
    """x + D(x) with D = ``net`` applied to x as 2 real channels (real, imag).

    With ``magnitude`` |x| is a third input channel (after normalising, if ``norm``):
    the anatomy's structure lives in the magnitude, which the real and imaginary parts
    only show modulated by the slowly varying phase.

    With ``norm`` (fastMRI VarNet's NormUnet idea) each image's channels are shifted and
    scaled to zero mean, unit std before ``net``, and the residual is scaled back by that
    std; H and W are zero-padded (after normalising) to multiples of ``pad_multiple``
    and cropped back. complex (B, H, W) -> complex (B, H, W).
    """
    chans = torch.view_as_real(x).permute(0, 3, 1, 2)                    # (B, 2, H, W)
    if norm:
        mean = chans.mean(dim=(-2, -1), keepdim=True)
        std = chans.std(dim=(-2, -1), keepdim=True).clamp_min(eps)      # (B, 2, 1, 1)
        chans = (chans - mean) / std
    if magnitude:
        chans = torch.cat([chans, torch.linalg.vector_norm(chans, dim=1, keepdim=True)], dim=1)
    h, w = chans.shape[-2:]
    pad_h, pad_w = (-h) % pad_multiple, (-w) % pad_multiple
    if pad_h or pad_w:
        chans = F.pad(chans, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    out = net(chans)
    out = out[..., pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
    out = out.to(x.real.dtype)          # under autocast the convs return half precision
    if norm:
        out = out * std
    return x + torch.complex(out[:, 0], out[:, 1])


class ResidualCNN(nn.Module):
    """x + CNN(x) on a complex image as 2 real channels.

    ``num_convs`` 3x3 convs (2 -> chans -> ... -> chans -> 2) with ReLU between them
    (``instance_norm``: InstanceNorm2d before each ReLU); ``norm``: see `residual_on_channels`.
    complex (B, H, W) -> complex (B, H, W).
    """

    def __init__(self, chans: int = 32, num_convs: int = 5, norm: bool = False,
                 instance_norm: bool = False, magnitude: bool = False) -> None:
        super().__init__()
        self.norm = norm
        self.magnitude = magnitude
        if num_convs < 2 or chans < 1:
            raise ValueError(f"ResidualCNN: need num_convs >= 2 and chans >= 1, got {num_convs}, {chans}")
        widths = [3 if magnitude else 2] + [chans] * (num_convs - 1) + [2]
        layers: List[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
            if i < num_convs - 1:
                if instance_norm:
                    layers.append(nn.InstanceNorm2d(c_out))     # no affine: no new parameters
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_on_channels(x, self.layers, self.norm, magnitude=self.magnitude)


class ResidualUnet(nn.Module):
    """x + Unet(x) on a complex image as 2 real channels (fastMRI U-Net, 2 -> 2 channels).

    complex (B, H, W) -> complex (B, H, W); H, W as `Unet` requires for ``num_pool_layers``.
    """

    def __init__(self, chans: int = 16, num_pool_layers: int = 3, norm: bool = False,
                 magnitude: bool = False) -> None:
        super().__init__()
        self.norm = norm
        self.magnitude = magnitude
        self.unet = Unet(3 if magnitude else 2, 2, chans, num_pool_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_on_channels(x, self.unet, self.norm, pad_multiple=2 ** self.unet.num_pool_layers,
                                    magnitude=self.magnitude)


class DataConsistency(nn.Module):
    """Hard (``soft=False``) or soft DC with a learnable noise weight lam = softplus(raw) >= 0.

    x complex (B, H, W), k0 complex (B, H, W), mask float (B, 1, W) -> complex (B, H, W).
    """

    def __init__(self, soft: bool = False, lam_init: float = 1.0) -> None:
        super().__init__()
        self.soft = soft
        if soft:
            if lam_init <= 0:
                raise ValueError(f"DataConsistency: lam_init must be > 0, got {lam_init}")
            # Inverse softplus (overflow-free form), so softplus(raw) == lam_init at the start.
            self.raw_lam = nn.Parameter(torch.tensor(lam_init + math.log(-math.expm1(-lam_init))))

    @property
    def lam(self) -> Optional[torch.Tensor]:
        return F.softplus(self.raw_lam) if self.soft else None

    def forward(self, x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return data_consistency(x, k0, mask, lam=self.lam)


class CascadeNet(Reconstructor):
    """K cascades of (residual CNN, data consistency) on single-coil complex images.

    masked_kspace complex64 (B, H, W), mask float32 (B, 1, W) -> magnitude (B, h, w).
    Inputs are divided by a per-image scale (std of the zero-filled magnitude) and the
    output multiplied back, so the network sees unit-scale data whatever the scanner's
    k-space scale; DC is linear in (x, k0), so the scaled problem is the same problem.

    ``denoiser="cnn"`` uses ``chans`` and ``num_convs``; ``denoiser="unet"`` uses
    ``chans`` and ``pools`` (then H, W >= 2**pools). ``magnitude``: every denoiser also
    sees |x| as an input channel (recommended: docs/TRAINING.md's quality check).
    """

    multicoil = False

    def __init__(self, num_cascades: int = 5, chans: int = 32, num_convs: int = 5,
                 dc: str = "hard", lam_init: float = 1.0, denoiser: str = "cnn", pools: int = 3,
                 norm: bool = False, instance_norm: bool = False, magnitude: bool = False,
                 eps: float = 1e-12) -> None:
        super().__init__()
        if num_cascades < 1:
            raise ValueError(f"CascadeNet: num_cascades must be >= 1, got {num_cascades}")
        if dc not in ("hard", "soft"):
            raise ValueError(f"CascadeNet: dc must be 'hard' or 'soft', got {dc!r}")
        if denoiser not in ("cnn", "unet"):
            raise ValueError(f"CascadeNet: denoiser must be 'cnn' or 'unet', got {denoiser!r}")

        def make_denoiser() -> nn.Module:
            if denoiser == "cnn":
                return ResidualCNN(chans, num_convs, norm, instance_norm, magnitude)
            return ResidualUnet(chans, pools, norm, magnitude)

        self.cnns = nn.ModuleList([make_denoiser() for _ in range(num_cascades)])
        self.dcs = nn.ModuleList([DataConsistency(dc == "soft", lam_init) for _ in range(num_cascades)])
        self.eps = eps

    def reconstruct_complex(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The full-size complex reconstruction (B, H, W) before magnitude and crop."""
        self.check_inputs(masked_kspace, mask)
        mask = mask.reshape(mask.shape[0], 1, mask.shape[-1])
        x = ifft2c(masked_kspace)
        scale = x.abs().std(dim=(-2, -1), keepdim=True).clamp_min(self.eps)   # (B, 1, 1)
        x, k0 = x / scale, masked_kspace / scale
        for cnn, dc in zip(self.cnns, self.dcs):
            x = dc(cnn(x), k0, mask)
        return x * scale

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                crop_size: CropSize = None) -> torch.Tensor:
        return center_crop(self.reconstruct_complex(masked_kspace, mask).abs(), crop_size)
