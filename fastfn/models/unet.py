"""The fastMRI U-Net baseline (Ronneberger et al. 2015, as in Zbontar et al. 2018) and its reconstructor.

`Unet` is the image-to-image network: real (N, in_chans, H, W) -> (N, out_chans, H, W),
any H, W >= 2**num_pool_layers with a bottleneck of at least 2 pixels (odd sizes too: the decoder reflect-pads each
upsampled map to its skip connection's size). `UnetReconstructor` is the model the
paper attacked: zero-filled magnitude -> crop -> per-image normalisation -> U-Net ->
de-normalisation.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from fastfn.models.base import ImageDomainReconstructor


class ConvBlock(nn.Module):
    """Two (3x3 conv without bias, InstanceNorm2d, LeakyReLU(0.2), Dropout2d) layers.

    (N, in_chans, H, W) -> (N, out_chans, H, W).
    """

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for c_in in (in_chans, out_chans):
            layers += [nn.Conv2d(c_in, out_chans, kernel_size=3, padding=1, bias=False),
                       nn.InstanceNorm2d(out_chans),
                       nn.LeakyReLU(negative_slope=0.2, inplace=True),
                       nn.Dropout2d(drop_prob)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransposeConvBlock(nn.Module):
    """2x upsampling: 2x2 stride-2 transposed conv without bias, InstanceNorm2d, LeakyReLU(0.2).

    (N, in_chans, H, W) -> (N, out_chans, 2H, 2W).
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Unet(nn.Module):
    """fastMRI's U-Net: ``num_pool_layers`` 2x average-pool levels, ``chans`` channels
    at the top level doubling per level, skip connections by concatenation, a final
    1x1 conv (with bias) to ``out_chans``.

    Shapes: (N, in_chans, H, W) real -> (N, out_chans, H, W); H, W >= 2**num_pool_layers
    and (H >> num_pool_layers) * (W >> num_pool_layers) >= 2.
    The parameter names follow fastMRI's ``fastmri.models.Unet`` state dict (the
    last ``up_conv`` entry holds the final 1x1 conv), so its published weights load
    with ``load_state_dict``.
    """

    def __init__(self, in_chans: int = 1, out_chans: int = 1, chans: int = 32,
                 num_pool_layers: int = 4, drop_prob: float = 0.0) -> None:
        super().__init__()
        if min(in_chans, out_chans, chans, num_pool_layers) < 1:
            raise ValueError(f"Unet: in_chans, out_chans, chans and num_pool_layers must be >= 1, got "
                             f"{(in_chans, out_chans, chans, num_pool_layers)}")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"Unet: drop_prob must be in [0, 1), got {drop_prob}")
        self.in_chans, self.out_chans = in_chans, out_chans
        self.num_pool_layers = num_pool_layers

        self.down_sample_layers = nn.ModuleList([ConvBlock(in_chans, chans, drop_prob)])
        ch = chans
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(ConvBlock(ch, ch * 2, drop_prob))
            ch *= 2
        self.conv = ConvBlock(ch, ch * 2, drop_prob)

        self.up_transpose_conv = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for level in range(num_pool_layers):
            self.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch))
            block: nn.Module = ConvBlock(ch * 2, ch, drop_prob)
            if level == num_pool_layers - 1:
                block = nn.Sequential(block, nn.Conv2d(ch, out_chans, kernel_size=1))
            self.up_conv.append(block)
            ch //= 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"Unet: expected input (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        # Instance norm needs more than one pixel at the bottleneck.
        h, w = x.shape[-2] >> self.num_pool_layers, x.shape[-1] >> self.num_pool_layers
        if h < 1 or w < 1 or h * w < 2:
            raise ValueError(f"Unet: image {tuple(x.shape[-2:])} is too small for "
                             f"{self.num_pool_layers} pool layers (bottleneck {h}x{w}); each dim needs "
                             f">= 2**num_pool_layers pixels and one of them twice that")
        skips = []
        out = x
        for layer in self.down_sample_layers:
            out = layer(out)
            skips.append(out)
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.conv(out)
        for transpose, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = skips.pop()
            out = transpose(out)
            # Odd sizes: pooling floored, so the upsampled map is one short; pad right/bottom.
            pad_w = skip.shape[-1] - out.shape[-1]
            pad_h = skip.shape[-2] - out.shape[-2]
            if pad_w or pad_h:
                out = F.pad(out, [0, pad_w, 0, pad_h], mode="reflect")
            out = conv(torch.cat([out, skip], dim=1))
        return out


class UnetReconstructor(ImageDomainReconstructor):
    """fastMRI's U-Net baseline as a reconstructor.

    masked_kspace complex (B, H, W) (or (B, C, H, W) with multicoil=True) ->
    zero-filled image ifft2c (RSS over coils) -> magnitude -> centre crop to
    crop_size -> per-image (x - mean) / std, clamped to +-6 -> Unet(1 -> 1) ->
    x * std + mean -> (B, h, w).
    """

    def __init__(self, chans: int = 32, num_pool_layers: int = 4, drop_prob: float = 0.0,
                 multicoil: bool = False) -> None:
        super().__init__(Unet(1, 1, chans, num_pool_layers, drop_prob), input="magnitude",
                         multicoil=multicoil, normalize=True, clamp=6.0)

    @property
    def unet(self) -> Unet:
        return self.module  # type: ignore[return-value]
