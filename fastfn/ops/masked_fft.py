"""Masked-FFT operators: thin documented wrappers over torch.ops.fastfn.

The fused CPU/CUDA kernels (csrc/masked_fft) do the work and check their arguments
(csrc/masked_fft/masked_fft_check.h): shapes and devices raise ValueError, dtypes
TypeError, each message naming the argument. The fake (meta) kernels registered here
repeat those checks message for message, so that meta tensors, FakeTensorMode and
``torch.compile`` tracing fail the same way. The wrappers only normalise what the ops
take: fastMRI real views, bool/float masks broadcastable to the k-space, lam as a
float or tensor. Autograd is registered here too, so the ops work under backward,
``torch.compile`` and opcheck.

Conventions (fastMRI's): complex64/complex128 tensors with image/k-space dims last,
centred orthonormal FFT over (H, W); masks are 1 where sampled, shape broadcastable to
the k-space as ``(..., 1, W)`` (column mask: the fast path with 1D FFTs along W) or
``(..., H, W)`` (general 2D mask).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

import fastfn  # noqa: F401  (loads the extension: torch.ops.fastfn.*)
from fastfn.ops.mask_memo import MaskMemo

_ops = torch.ops.fastfn
_OP_READY_MASKS = MaskMemo()

# ---------------------------------------------------------------- normalising the inputs


def _require_tensor(t, name: str, op: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _as_complex(t: torch.Tensor, name: str, op: str) -> tuple[torch.Tensor, bool]:
    """Complex view of fastMRI's real view (..., 2) of float32/float64, True with it; any
    other tensor as it is (the op checks it), False."""
    _require_tensor(t, name, op)
    if t.dtype in (torch.float32, torch.float64) and t.dim() >= 3 and t.shape[-1] == 2:
        return torch.view_as_complex(t.contiguous()), True
    return t, False


def _restore(t: torch.Tensor, real_view: bool) -> torch.Tensor:
    return torch.view_as_real(t) if real_view else t


def _broadcasts_to(shape: tuple[int, ...], full: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``full`` (without torch.broadcast_shapes,
    whose cost is a large part of a small call's; see docs/OPS.md)."""
    if len(shape) > len(full):
        return False
    return all(s == 1 or s == f for s, f in zip(reversed(shape), reversed(full)))


def _collapse_broadcast(m: torch.Tensor) -> torch.Tensor:
    """m (*lead, Hm, W) with every expanded (stride-0) lead dim narrowed to size 1: a
    view whose values are the same for every index of those dims."""
    for d in range(m.dim() - 2):
        if m.shape[d] > 1 and m.stride(d) == 0:
            m = m.narrow(d, 0, 1)
    return m


def _normalise_mask(mask: torch.Tensor, kspace: tuple[int, ...] | None, dtype: torch.dtype, op: str,
                    multicoil: bool = False) -> torch.Tensor:
    """mask (bool/float), its leading dims broadcastable to those of the k-space shape
    ``kspace`` = (*batch, [C,] H, W) -> (Bm, Hm, W) of `dtype`, Bm in {1, prod(batch)}
    (1 also where the mask is expanded over the batch). A multi-coil mask must not vary
    over coils. Its last two dims (Hm, W) go to the op as they are, and so does the
    whole mask when ``kspace`` is None (x or sens is malformed): the op's checks name
    what is wrong. A mask that needs a copy (another dtype, a batch to materialise) gets
    the same copy while it is unchanged (fastfn.ops.mask_memo), so its column plan is
    built once."""
    _require_tensor(mask, "mask", op)
    if mask.is_complex() or not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{op}: mask must be bool or real floating point, got {mask.dtype}")
    if kspace is None or mask.dim() == 0:
        return mask.to(dtype)
    W = mask.shape[-1]
    hm = mask.shape[-2] if mask.dim() >= 2 else 1
    batch = kspace[:-2]
    if not _broadcasts_to(tuple(mask.shape[:-2]), batch):
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to the k-space "
                         f"shape {kspace} (multi-coil: give the mask a coil dim, e.g. (B, 1, 1, W))")
    lead = (1,) * (len(batch) - max(mask.dim() - 2, 0)) + tuple(mask.shape[:-2])
    m = _collapse_broadcast(mask.reshape(*lead, hm, W))
    lead = tuple(m.shape[:-2])
    if multicoil:
        if lead[-1] != 1:
            raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} varies over the {batch[-1]} coils; "
                             "a multi-coil mask must be shared by the coils, e.g. (B, 1, 1, W)")
        lead, batch = lead[:-1], batch[:-1]
        m = m.squeeze(-3)
    shared = math.prod(lead) == 1
    if m.dtype == dtype and m.is_contiguous() and (shared or lead == batch):
        return m.reshape(-1, hm, W)  # a view: the op keys its plan on the caller's mask

    def op_ready() -> torch.Tensor:
        c = m.to(dtype)
        if shared:
            return c.reshape(1, hm, W).contiguous()
        return c.expand(*batch, hm, W).reshape(-1, hm, W).contiguous()

    return _OP_READY_MASKS.get(m, (dtype, batch), op_ready)


def _normalise_lam(lam, dtype: torch.dtype, device: torch.device, op: str) -> torch.Tensor | None:
    """None, a float or a real tensor of one element -> 0-dim tensor of `dtype` (keeps
    autograd). Other tensors go to the op as they are (its checks name the fault)."""
    if lam is None:
        return None
    if isinstance(lam, torch.Tensor):
        if lam.numel() != 1 or lam.is_complex():
            return lam
        # cheap on CPU; on CUDA it would synchronise, and under torch.compile it cannot be traced
        if lam.device.type == "cpu" and not torch.compiler.is_compiling():
            v = float(lam.detach())
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{op}: lam must be finite and >= 0, got {v}")
        return lam.reshape(()).to(dtype)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"{op}: lam must be None, a float or a tensor, got {type(lam).__name__}")
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"{op}: lam must be finite and >= 0, got {lam}")
    return torch.full((), float(lam), dtype=dtype, device=device)


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.complex128 else torch.float32


# ---------------------------------------------------------------- public ops


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dims (any H, W).

    x: (..., H, W) complex64/complex128, or a real view (..., H, W, 2).
    Returns the same shape and layout (a real view for a real-view input).
    """
    xc, real = _as_complex(x, "x", "fft2c")
    return _restore(_ops.fft2c(xc), real)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of fft2c. k: (..., H, W) complex or a real view (..., H, W, 2)."""
    kc, real = _as_complex(k, "k", "ifft2c")
    return _restore(_ops.ifft2c(kc), real)


def undersample(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-filled image of a simulated acquisition: ifft2c(mask * fft2c(x)).

    x: (..., H, W) complex (or real view (..., H, W, 2)); mask: bool or real,
    broadcastable to x as (..., 1, W) (column mask: 1D FFTs along W) or (..., H, W).
    Differentiable in x (the operator is self-adjoint). Raises ValueError (shapes,
    devices) or TypeError (dtypes) naming the argument.
    """
    xc, real = _as_complex(x, "x", "undersample")
    kspace = tuple(xc.shape) if xc.dim() >= 2 else None
    m = _normalise_mask(mask, kspace, _real_dtype(xc), "undersample")
    return _restore(_ops.undersample(xc, m), real)


def data_consistency(x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor,
                     lam: float | torch.Tensor | None = None,
                     sens: torch.Tensor | None = None) -> torch.Tensor:
    """Hard (lam None) or soft data consistency with measured k-space k0.

    Single-coil: x, k0 (..., H, W). Multi-coil: x (B, H, W), k0 and sens (B, C, H, W),
    output (B, H, W) = sum_c conj(S_c) F^-1((1 - w m) F(S_c x) + w m k0_c),
    w = lam / (1 + lam) (w = 1 for hard DC). mask: bool or real, broadcastable to k0
    as (..., 1, W) or (..., H, W) (multi-coil: shared by the coils, e.g. (B, 1, 1, W)).
    lam: None, a float >= 0, or a real scalar tensor (learnable). Complex tensors or
    real views (..., 2) (the output follows x). Differentiable in x, k0, sens and lam.
    Raises ValueError (shapes, devices, lam values) or TypeError (dtypes) naming the
    argument.
    """
    op = "data_consistency"
    xc, real = _as_complex(x, "x", op)
    kc, _ = _as_complex(k0, "k0", op)
    sc = None if sens is None else _as_complex(sens, "sens", op)[0]
    if sc is None:
        kspace = tuple(xc.shape) if xc.dim() >= 2 else None
    else:
        kspace = (xc.shape[0], sc.shape[1], *xc.shape[-2:]) if xc.dim() == 3 and sc.dim() == 4 else None
    rdt = _real_dtype(xc)
    m = _normalise_mask(mask, kspace, rdt, op, multicoil=sc is not None)
    lt = _normalise_lam(lam, rdt, xc.device, op)
    return _restore(_ops.data_consistency(xc, kc, m, sc, lt), real)


# ---------------------------------------------------------------- the column plan cache


def column_plan_counters() -> dict[str, int]:
    """What the C++ ops' column caches have done in this process (or since
    reset_column_plan_cache): plans ``built``, ``device_to_host`` copies of a mask (the
    only host synchronisation of a column-mask call, paid when a plan is built for a
    GPU mask), plans ``reused``; measurements (the ifft along H of k0's sampled
    columns) ``measurements_built`` and ``measurements_reused``. A plan is reused while
    the mask is the same live, unmodified tensor (or view of the same storage), a
    measurement while k0 is and its mask's plan is the same: a cascade builds one of
    each per network call."""
    built, device_to_host, reused, meas_built, meas_reused = _ops._column_plan_counters()
    return {"built": built, "device_to_host": device_to_host, "reused": reused,
            "measurements_built": meas_built, "measurements_reused": meas_reused}


def reset_column_plan_cache() -> None:
    """Forgets every cached column plan and measurement (and the wrapper's op-ready mask
    copies) and zeroes column_plan_counters()."""
    _OP_READY_MASKS.clear()
    _ops._column_plan_cache_reset()


@contextlib.contextmanager
def column_caches_disabled() -> Iterator[None]:
    """Within it, every column-mask call builds its plan and measurement anew and keeps
    neither (on a GPU: one copy of the mask to the host per call).

    The caches recognise an unchanged mask or k0 by torch's version counter, which
    in-place ops bump. Use this where a mask or k0 is written past that counter between
    calls: ``torch.autograd.gradcheck`` with k0 as an input (it perturbs inputs through
    ``.data``), writes through ``t.data`` or through a NumPy, CuPy or DLPack view of
    the memory. The setting is process-wide (autograd may run the backward on another
    thread)."""
    before = _ops._set_column_cache_reuse(False), _OP_READY_MASKS.enabled
    _OP_READY_MASKS.enabled = False
    try:
        yield
    finally:
        _ops._set_column_cache_reuse(before[0])
        _OP_READY_MASKS.enabled = before[1]


# ---------------------------------------------------------------- fake kernels
# The checks of csrc/masked_fft/masked_fft_check.h, function for function and message for
# message (torch._check_value raises ValueError, torch._check_type TypeError).


def _check_device(t, x, op, arg):
    torch._check_value(t.device == x.device, lambda: f"{op}: {arg} is on {t.device} but x is on {x.device}; "
                                                     "all inputs must be on one device")


def _check_dtype_of_x(t, x, op, arg):
    torch._check_type(t.dtype == x.dtype, lambda: f"{op}: {arg} has dtype {t.dtype} but x has {x.dtype}")


def _check_real_dtype_of_x(t, x, op, arg):
    real = x.dtype.to_real()
    torch._check_type(t.dtype == real,
                      lambda: f"{op}: {arg} must have dtype {real} (the real dtype of x), got {t.dtype}")


def _check_image(x, op):
    torch._check_type(x.dtype in (torch.complex64, torch.complex128),
                      lambda: f"{op}: x must be complex64 or complex128, got {x.dtype}")
    torch._check_value(x.dim() >= 2, lambda: f"{op}: x must be (..., H, W), got shape {list(x.shape)}")


def _check_mask(mask, x, op):
    H, W = x.shape[-2:]
    Bx = math.prod(x.shape[:-2])
    _check_device(mask, x, op, "mask")
    _check_real_dtype_of_x(mask, x, op, "mask")
    torch._check_value(mask.dim() == 3, lambda: f"{op}: mask must be (Bm, Hm, W) = (1 or {Bx}, 1 or {H}, {W}), "
                                                f"got shape {list(mask.shape)} (fastfn.ops normalises "
                                                "broadcastable masks)")
    torch._check_value(mask.shape[2] == W,
                       lambda: f"{op}: mask has {mask.shape[2]} columns, the image has W = {W}")
    torch._check_value(mask.shape[1] == 1 or mask.shape[1] == H,
                       lambda: f"{op}: mask has {mask.shape[1]} rows; expected 1 (column mask) or H = {H}")
    torch._check_value(mask.shape[0] == 1 or mask.shape[0] == Bx,
                       lambda: f"{op}: mask batch is {mask.shape[0]}; expected 1 or the batch size {Bx}")


def _check_dc(x, k0, mask, sens, lam, op):
    _check_image(x, op)
    _check_device(k0, x, op, "k0")
    _check_dtype_of_x(k0, x, op, "k0")
    if sens is not None:
        _check_device(sens, x, op, "sens")
        _check_dtype_of_x(sens, x, op, "sens")
        torch._check_value(x.dim() == 3, lambda: f"{op}: multi-coil x must be (B, H, W), got shape {list(x.shape)}")
        B, H, W = x.shape
        torch._check_value(
            sens.dim() == 4 and sens.shape[0] == B and sens.shape[2] == H and sens.shape[3] == W,
            lambda: f"{op}: sens must be (B, C, H, W) = ({B}, C, {H}, {W}) for x of shape {list(x.shape)}, "
                    f"got {list(sens.shape)}")
        torch._check_value(k0.shape == sens.shape, lambda: f"{op}: k0 must be (B, C, H, W) like sens "
                                                           f"{list(sens.shape)}, got {list(k0.shape)}")
    else:
        torch._check_value(k0.shape == x.shape, lambda: f"{op}: k0 must have the shape of x {list(x.shape)}, "
                                                        f"got {list(k0.shape)}")
    if lam is not None:
        _check_device(lam, x, op, "lam")
        _check_real_dtype_of_x(lam, x, op, "lam")
        torch._check_value(lam.numel() == 1, lambda: f"{op}: lam must be a single value (0-dim tensor), got "
                                                     f"shape {list(lam.shape)}")
    _check_mask(mask, x, op)


@torch.library.register_fake("fastfn::fft2c")
def _fft2c_fake(x):
    _check_image(x, "fft2c")
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::ifft2c")
def _ifft2c_fake(x):
    _check_image(x, "ifft2c")
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::undersample")
def _undersample_fake(x, mask):
    _check_image(x, "undersample")
    _check_mask(mask, x, "undersample")
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::data_consistency")
def _dc_fake(x, k0, mask, sens, lam):
    _check_dc(x, k0, mask, sens, lam, "data_consistency")
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::data_consistency_backward")
def _dc_backward_fake(grad, x, k0, mask, sens, lam, output_mask):
    op = "data_consistency_backward"
    _check_dc(x, k0, mask, sens, lam, op)
    _check_device(grad, x, op, "grad")
    _check_dtype_of_x(grad, x, op, "grad")
    torch._check_value(grad.shape == x.shape, lambda: f"{op}: grad must have the shape of x {list(x.shape)}, "
                                                      f"got {list(grad.shape)}")

    def pick(i, like):
        return like.new_empty(like.shape) if output_mask[i] and like is not None else x.new_empty(0)

    glam = (lam.new_empty(lam.shape) if output_mask[3] and lam is not None
            else x.new_empty(0, dtype=_real_dtype(x)))
    return pick(0, x), pick(1, k0), pick(2, sens), glam


# ---------------------------------------------------------------- autograd


def _fft2c_backward(ctx, grad):
    return _ops.ifft2c(grad)


def _ifft2c_backward(ctx, grad):
    return _ops.fft2c(grad)


def _undersample_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _undersample_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return _ops.undersample(grad, mask), None


def _dc_setup(ctx, inputs, output):
    x, k0, mask, sens, lam = inputs
    ctx.has_sens, ctx.has_lam = sens is not None, lam is not None
    ctx.save_for_backward(x, k0, mask, sens, lam)


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on the gradients data_consistency's backward returns; differentiating
    them (double backward, ``create_graph=True`` through the op) raises a clear error
    instead of a wrong or cryptic result. Only used when grad mode is on in backward."""

    @staticmethod
    def forward(ctx, anchor, *grads):
        # anchor: a tensor of the graph (the incoming gradient or an input that requires
        # grad), so that the results are connected and their backward is reached
        return tuple(g.clone() for g in grads)

    @staticmethod
    def backward(ctx, *_):
        _no_second_derivative()


def _no_second_derivative(*_):
    raise RuntimeError(
        "fastfn.ops.data_consistency has no second derivative: double backward "
        "(create_graph=True through the op, e.g. a gradient penalty) is not supported; "
        "fastfn.reference.data_consistency is a differentiable pure-PyTorch version")


def _dc_backward(ctx, grad):
    x, k0, mask, sens, lam = ctx.saved_tensors
    sens = sens if ctx.has_sens else None
    lam = lam if ctx.has_lam else None
    nx, nk, _, ns, nl = ctx.needs_input_grad
    want = [bool(nx), bool(nk), bool(ns) and sens is not None, bool(nl) and lam is not None]
    # the backward kernel is not itself differentiable: under create_graph it runs without
    # grad mode and its results are marked so that differentiating them raises
    graph = torch.is_grad_enabled()  # create_graph=True
    with torch.no_grad():
        grads = _ops.data_consistency_backward(grad, x, k0, mask, sens, lam, want)
    picked = [g for g, w in zip(grads, want) if w]
    anchors = [t for t in (grad, x, k0, sens, lam) if t is not None and t.requires_grad] if graph else []
    if anchors and picked:
        picked = list(_NoSecondDerivative.apply(anchors[0], *picked))
    it = iter(picked)
    gx, gk, gs, gl = (next(it) if w else None for w in want)
    return gx, gk, None, gs, gl


torch.library.register_autograd("fastfn::fft2c", _fft2c_backward)
torch.library.register_autograd("fastfn::ifft2c", _ifft2c_backward)
torch.library.register_autograd("fastfn::undersample", _undersample_backward,
                                setup_context=_undersample_setup)
torch.library.register_autograd("fastfn::data_consistency", _dc_backward, setup_context=_dc_setup)
torch.library.register_autograd("fastfn::data_consistency_backward", _no_second_derivative)

__all__ = ["fft2c", "ifft2c", "undersample", "data_consistency"]
