"""Pure-PyTorch reference implementations of every fastfn op: the tests' oracle.

Written the textbook (fastMRI) way, with explicit shifts and full 2D FFTs, and
no cleverness: when a fused kernel and this file disagree, the kernel is wrong.
All tensors are complex unless stated; masks are real (bool or float) and
broadcast against the k-space they select.
"""
from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dims. x: (..., H, W) complex."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT over the last two dims. k: (..., H, W) complex."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def undersample(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-filled image of a simulated acquisition: ifft2c(mask * fft2c(x)).

    x: (..., H, W) complex; mask: real, broadcastable to x (e.g. (..., 1, W) for
    a column mask or (..., H, W)).
    """
    return ifft2c(mask.to(x.real.dtype) * fft2c(x))


def dc_weight(lam):
    """Blend weight w of soft DC for noise weight lam (w = lam / (1 + lam)); 1 for hard DC."""
    if lam is None:
        return 1.0
    return lam / (1 + lam)


def data_consistency(x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor,
                     lam=None, sens: torch.Tensor | None = None) -> torch.Tensor:
    """DC(x) = F^-1((1 - w m) F x + w m k0), summed over coils with conj(S_c) when sens is given.

    Single-coil: x, k0: (..., H, W). Multi-coil: x: (B, H, W); k0, sens: (B, C, H, W);
    mask broadcastable to k0. lam: None (hard DC), a float or a real tensor (soft DC).
    """
    w = dc_weight(lam)
    m = mask.to(x.real.dtype)
    if sens is None:
        return ifft2c((1 - w * m) * fft2c(x) + w * m * k0)
    coils = sens * x.unsqueeze(-3)
    u = ifft2c((1 - w * m) * fft2c(coils) + w * m * k0)
    return (sens.conj() * u).sum(dim=-3)
