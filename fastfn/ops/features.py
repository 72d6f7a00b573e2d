"""Feature insertion and the fused projected-gradient step (torch.ops.fastfn, CPU + CUDA).

A batch holds N images with R candidate features each; a feature is a list of P
pixels given as flat indices ``row * W + col`` (int64, -1 = padding) with one
intensity each. See csrc/features/features.h for the exact semantics.
"""
from __future__ import annotations

import torch

from fastfn import _extension

_extension.load()

__all__ = ["insert_features", "feature_step"]


def insert_features(images: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                    ring: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert R features into each of N images, and build their loss regions.

    Args:
        images: (N, H, W) float32/float64 magnitude images.
        index: (N, R, P) int64 flat pixel indices ``row * W + col``; -1 pads features
            with fewer than P pixels. Every feature needs at least one pixel.
        values: (N, R, P) intensities, images' dtype (added to the image).
        ring: loss-region width in 4-neighbour dilation steps (0: the support only).

    Returns:
        perturbed: (N, R, H, W) ``images[n] + feature[n, r]``.
        region: (N, R, H, W) 0/1 in images' dtype, the support dilated by ``ring``.

    Differentiable with respect to ``images`` and ``values`` (the region is not).
    Raises RuntimeError naming the argument for indices outside the image,
    mismatched N, shapes or dtypes, and features without pixels.
    """
    return torch.ops.fastfn.insert_features(images, index, values, int(ring))


def _as_bounds(b, like: torch.Tensor, N: int, R: int, name: str) -> torch.Tensor:
    """A scalar, (N,) or (N, R) per-feature parameter -> contiguous (N, R) in like's dtype."""
    b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
    if b.dim() == 1 and b.shape[0] == N:  # one bound per image
        b = b.unsqueeze(1)
    try:
        return b.expand(N, R).contiguous()
    except RuntimeError as e:
        raise ValueError(f"feature_step: {name} of shape {tuple(b.shape)} does not broadcast to (N, R) = "
                         f"{(N, R)}") from e


@torch.no_grad()
def feature_step(perturbed: torch.Tensor, values: torch.Tensor, index: torch.Tensor, grad: torch.Tensor,
                 lo, hi, step, normalize: bool = False) -> None:
    """One projected gradient-ascent step on the feature intensities, in place.

    ``values <- clamp(values + step * dir, lo, hi)`` with ``dir = sign(g)`` (or
    ``g * sqrt(P_valid) / ||g||`` when ``normalize``), ``g = grad`` gathered at
    each feature's pixels; ``perturbed`` gets the same change at those pixels so
    it stays equal to ``insert_features(images, index, values)[0]``.

    Args:
        perturbed: (N, R, H, W) contiguous, updated in place.
        values: (N, R, P) contiguous, updated in place.
        index: (N, R, P) int64 as in insert_features.
        grad: (N, R, H, W) gradient of the loss with respect to ``perturbed``.
        lo, hi: intensity bounds, scalars, (N,) per image or (N, R) per feature.
        step: step size in intensity units: a scalar, (N,) or (N, R).
    """
    N, R = perturbed.shape[:2] if perturbed.dim() == 4 else (0, 0)
    if perturbed.dim() != 4:
        raise ValueError(f"feature_step: perturbed must be (N, R, H, W), got {tuple(perturbed.shape)}")
    torch.ops.fastfn.feature_step(perturbed, values, index, grad.contiguous(),
                                  _as_bounds(lo, perturbed, N, R, "lo"), _as_bounds(hi, perturbed, N, R, "hi"),
                                  _as_bounds(step, perturbed, N, R, "step"), bool(normalize))


@torch.library.register_fake("fastfn::insert_features")
def _insert_features_fake(images, index, values, ring):
    torch._check(images.dim() == 3, lambda: "insert_features: images must be (N, H, W)")
    torch._check(index.dim() == 3, lambda: "insert_features: index must be (N, R, P)")
    N, H, W = images.shape
    R = index.shape[1]
    return images.new_empty(N, R, H, W), images.new_empty(N, R, H, W)


@torch.library.register_fake("fastfn::feature_step")
def _feature_step_fake(perturbed, values, index, grad, lo, hi, step, normalize):
    return None


def _insert_setup_context(ctx, inputs, output):
    images, index, values, ring = inputs
    ctx.save_for_backward(index)
    ctx.hw = images.shape[1:]
    ctx.mark_non_differentiable(output[1])


def _insert_backward(ctx, grad_perturbed, grad_region):
    (index,) = ctx.saved_tensors
    H, W = ctx.hw
    grad_images = grad_values = None
    if ctx.needs_input_grad[0]:
        grad_images = grad_perturbed.sum(1)
    if ctx.needs_input_grad[2]:
        N, R = index.shape[:2]
        g = torch.gather(grad_perturbed.reshape(N, R, H * W), 2, index.clamp_min(0))
        grad_values = torch.where(index >= 0, g, torch.zeros_like(g))
    return grad_images, None, grad_values, None


torch.library.register_autograd("fastfn::insert_features", _insert_backward, setup_context=_insert_setup_context)
