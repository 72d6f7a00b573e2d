"""Pure-PyTorch references of the feature ops (tests' and benchmarks' oracle).

Dense and obvious: scatter the intensities into a full image, dilate the support
with a 3x3 cross convolution `ring` times. Shapes as in fastfn.ops.features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _scatter(index: torch.Tensor, values: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(N, R, P) indices/values -> (N, R, H*W) dense sum of values (padding -1 dropped)."""
    N, R, P = index.shape
    valid = index >= 0
    dense = values.new_zeros(N, R, H * W)
    return dense.scatter_add(2, index.clamp_min(0), torch.where(valid, values, torch.zeros_like(values)))


def support_mask(index: torch.Tensor, H: int, W: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, R, P) flat indices -> (N, R, H, W) 0/1 support of each feature."""
    ones = torch.ones(index.shape, dtype=dtype, device=index.device)
    return (_scatter(index, ones, H, W) > 0).to(dtype).view(*index.shape[:2], H, W)


def dilate4(mask: torch.Tensor, ring: int) -> torch.Tensor:
    """Dilate a 0/1 mask (..., H, W) by `ring` 4-neighbour steps (zero outside the image)."""
    shape = mask.shape
    x = mask.reshape(-1, 1, *shape[-2:])
    cross = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    for _ in range(ring):
        x = (F.conv2d(x, cross, padding=1) > 0).to(x.dtype)
    return x.reshape(shape)


def insert_features(images: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                    ring: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """images (N, H, W), index (N, R, P) int64, values (N, R, P) ->
    (perturbed (N, R, H, W), region (N, R, H, W)), as fastfn.ops.insert_features."""
    N, H, W = images.shape
    R = index.shape[1]
    dense = _scatter(index, values, H, W).view(N, R, H, W)
    perturbed = images.unsqueeze(1) + dense
    region = dilate4(support_mask(index, H, W, images.dtype), ring)
    return perturbed, region


def feature_step(perturbed: torch.Tensor, values: torch.Tensor, index: torch.Tensor, grad: torch.Tensor,
                 lo: torch.Tensor, hi: torch.Tensor, step,
                 normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Out-of-place version of fastfn.ops.feature_step: returns (new perturbed, new values).
    lo, hi: (N, R); step: a scalar or (N, R)."""
    N, R, H, W = perturbed.shape
    valid = index >= 0
    g = torch.gather(grad.reshape(N, R, H * W), 2, index.clamp_min(0))
    g = torch.where(valid, g, torch.zeros_like(g))
    if normalize:
        norm = g.pow(2).sum(-1, keepdim=True).sqrt()
        n_valid = valid.sum(-1, keepdim=True).to(g.dtype)
        d = torch.where(norm > 0, g * n_valid.sqrt() / norm.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(g))
    else:
        d = torch.sign(g)
    step = torch.as_tensor(step, dtype=values.dtype, device=values.device)
    if step.dim() == 2:
        step = step.unsqueeze(-1)
    new_values = torch.minimum(torch.maximum(values + step * d, lo.unsqueeze(-1)), hi.unsqueeze(-1))
    new_values = torch.where(valid, new_values, values)
    delta = _scatter(index, new_values - values, H, W).view(N, R, H, W)
    return perturbed + delta, new_values
