"""Feature insertion and the fused projected-gradient step (torch.ops.fastfn, CPU + CUDA).

A batch holds N images with R candidate features each; a feature is a list of P
pixels given as flat indices ``row * W + col`` (int64, -1 = padding) with one
intensity each. See csrc/features/features.h for the exact semantics.

The C++ ops check their arguments (csrc/features/features_check.h, RuntimeError naming
the argument); the fake kernels here repeat those checks message for message, so that
meta tensors and ``torch.compile`` tracing fail the same way. The wrappers only
normalise (feature_step's bounds to (N, R)).
"""
from __future__ import annotations

import torch

from fastfn import _extension

_extension.load()

_ops = torch.ops.fastfn

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
    return _ops.insert_features(images, index, values, int(ring))


def _as_bounds(b, like: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar, (N,) or (N, R) per-feature parameter -> contiguous (N, R) in like's dtype,
    for ``like`` = perturbed (N, R, H, W); a tensor as it is when perturbed is not 4-D
    (the op's checks name that)."""
    if like.dim() == 4 and isinstance(b, (int, float)) and not isinstance(b, bool):
        # built on the device by a fill: as_tensor would copy the number from the host,
        # a blocking copy per attack step on CUDA
        return torch.full(like.shape[:2], float(b), dtype=like.dtype, device=like.device)
    b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
    if like.dim() != 4:
        return b
    N, R = like.shape[:2]
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
    _ops.feature_step(perturbed, values, index, grad.contiguous(), _as_bounds(lo, perturbed, "lo"),
                      _as_bounds(hi, perturbed, "hi"), _as_bounds(step, perturbed, "step"), bool(normalize))


# ---------------------------------------------------------------- fake kernels
# The checks of csrc/features/features_check.h, message for message.


def _check_insert_args(images, index, values, ring, op):
    torch._check(images.dim() == 3, lambda: f"{op}: images must be (N, H, W), got {list(images.shape)}")
    torch._check(images.dtype in (torch.float32, torch.float64),
                 lambda: f"{op}: images must be float32 or float64, got {images.dtype}")
    torch._check(index.dim() == 3,
                 lambda: f"{op}: index must be (N, R, P) int64 flat pixel indices, got {list(index.shape)}")
    torch._check(index.dtype == torch.int64, lambda: f"{op}: index must be int64, got {index.dtype}")
    torch._check(values.shape == index.shape, lambda: f"{op}: values {list(values.shape)} must have the shape "
                                                      f"of index {list(index.shape)}")
    torch._check(values.dtype == images.dtype,
                 lambda: f"{op}: values dtype {values.dtype} differs from images dtype {images.dtype}")
    torch._check(index.shape[0] == images.shape[0], lambda: f"{op}: index has {index.shape[0]} images (dim 0), "
                                                            f"images has {images.shape[0]}")
    torch._check(index.shape[2] > 0, lambda: f"{op}: index has P = 0 pixels per feature (empty supports)")
    torch._check(ring >= 0, lambda: f"{op}: ring must be >= 0, got {ring}")
    torch._check(images.device == index.device and images.device == values.device,
                 lambda: f"{op}: images, index and values must be on one device, got {images.device}, "
                         f"{index.device}, {values.device}")


def _check_step_args(perturbed, values, index, grad, lo, hi, step, op):
    torch._check(perturbed.dim() == 4, lambda: f"{op}: perturbed must be (N, R, H, W), got {list(perturbed.shape)}")
    torch._check(perturbed.dtype in (torch.float32, torch.float64),
                 lambda: f"{op}: perturbed must be float32 or float64, got {perturbed.dtype}")
    torch._check(perturbed.is_contiguous() and values.is_contiguous() and index.is_contiguous(),
                 lambda: f"{op}: perturbed, values and index must be contiguous (they are updated in place)")
    torch._check(index.dim() == 3 and index.dtype == torch.int64,
                 lambda: f"{op}: index must be (N, R, P) int64, got {list(index.shape)} {index.dtype}")
    torch._check(index.shape[0] == perturbed.shape[0] and index.shape[1] == perturbed.shape[1],
                 lambda: f"{op}: index {list(index.shape)} and perturbed {list(perturbed.shape)} disagree on (N, R)")
    torch._check(index.shape[2] > 0, lambda: f"{op}: index has P = 0 pixels per feature (empty supports)")
    torch._check(values.shape == index.shape, lambda: f"{op}: values {list(values.shape)} must have the shape "
                                                      f"of index {list(index.shape)}")
    torch._check(grad.shape == perturbed.shape, lambda: f"{op}: grad {list(grad.shape)} must have the shape of "
                                                        f"perturbed {list(perturbed.shape)}")
    N, R = perturbed.shape[:2]
    for t in (lo, hi, step):
        torch._check(t.dim() == 2 and t.shape[0] == N and t.shape[1] == R,
                     lambda: f"{op}: lo {list(lo.shape)}, hi {list(hi.shape)} and step {list(step.shape)} must be "
                             f"(N, R) = ({N}, {R})")
    for t in (values, grad, lo, hi, step):
        torch._check(t.dtype == perturbed.dtype, lambda: f"{op}: values, grad, lo, hi and step must have the "
                                                         f"dtype of perturbed ({perturbed.dtype}), got {t.dtype}")
    for t in (values, index, grad, lo, hi, step):
        torch._check(t.device == perturbed.device,
                     lambda: f"{op}: every argument must be on {perturbed.device}, got {t.device}")


@torch.library.register_fake("fastfn::insert_features")
def _insert_features_fake(images, index, values, ring):
    _check_insert_args(images, index, values, ring, "insert_features")
    N, H, W = images.shape
    R = index.shape[1]
    return images.new_empty(N, R, H, W), images.new_empty(N, R, H, W)


@torch.library.register_fake("fastfn::feature_step")
def _feature_step_fake(perturbed, values, index, grad, lo, hi, step, normalize):
    _check_step_args(perturbed, values, index, grad, lo, hi, step, "feature_step")
    return None


# ---------------------------------------------------------------- autograd


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
