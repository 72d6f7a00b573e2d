"""fastfn operators: the public, documented entry points of the fused kernels.

PROVISIONAL: until the kernels of issue 2 land, these delegate to
fastfn.reference; the signatures and semantics below are the contract.
"""
from __future__ import annotations

import torch

from fastfn.reference import masked_fft as _ref


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dims. x: (..., H, W) complex64/128,
    or a real view (..., H, W, 2). Returns the same layout."""
    return _ref.fft2c(x)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of fft2c. k: (..., H, W) complex or (..., H, W, 2) real view."""
    return _ref.ifft2c(k)


def undersample(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-filled image ifft2c(mask * fft2c(x)). x: (..., H, W) complex; mask real/bool,
    broadcastable to x: column masks (..., 1, W) take the 1D (hybrid) path."""
    return _ref.undersample(x, mask)


def data_consistency(x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor,
                     lam: float | torch.Tensor | None = None,
                     sens: torch.Tensor | None = None) -> torch.Tensor:
    """Hard (lam None) or soft data consistency with measured k-space k0.

    Single-coil: x, k0 (..., H, W). Multi-coil: x (B, H, W), k0 and sens (B, C, H, W),
    output (B, H, W) = sum_c conj(S_c) F^-1((1 - w m) F(S_c x) + w m k0_c),
    w = lam / (1 + lam). mask broadcastable to k0.
    """
    return _ref.data_consistency(x, k0, mask, lam=lam, sens=sens)
