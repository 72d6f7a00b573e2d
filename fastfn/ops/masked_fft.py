"""Masked-FFT operators: thin documented wrappers over torch.ops.fastfn.

The wrappers validate and normalise arguments (fastMRI real views, bool/float
masks, broadcastable mask shapes, lam as float or tensor); the fused CPU/CUDA
kernels (csrc/masked_fft) do the work. Autograd and fake (meta) kernels are
registered here so the ops work under backward, ``torch.compile`` and opcheck.

Conventions (fastMRI's): complex64/complex128 tensors with image/k-space dims
last, centred orthonormal FFT over (H, W); masks are 1 where sampled, shape
broadcastable to the k-space as ``(..., 1, W)`` (column mask: the fast hybrid
path with 1D FFTs along W) or ``(..., H, W)`` (general 2D mask).
"""
from __future__ import annotations

import math

import torch

import fastfn  # noqa: F401  (loads the extension: torch.ops.fastfn.*)

_ops = torch.ops.fastfn

# ---------------------------------------------------------------- argument handling


def _as_complex(t: torch.Tensor, name: str, op: str) -> tuple[torch.Tensor, bool]:
    """Complex view of t; True when t was fastMRI's real view (..., 2)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype in (torch.complex64, torch.complex128):
        if t.dim() < 2:
            raise ValueError(f"{op}: {name} must be (..., H, W), got shape {tuple(t.shape)}")
        return t, False
    if t.dtype in (torch.float32, torch.float64) and t.dim() >= 3 and t.shape[-1] == 2:
        return torch.view_as_complex(t.contiguous()), True
    raise TypeError(f"{op}: {name} must be complex64/complex128 (..., H, W) or a real view "
                    f"(..., H, W, 2) of float32/float64, got {t.dtype} of shape {tuple(t.shape)}")


def _restore(t: torch.Tensor, real_view: bool) -> torch.Tensor:
    return torch.view_as_real(t) if real_view else t


def _check_device(t: torch.Tensor, ref: torch.Tensor, name: str, op: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on {t.device} but x is on {ref.device}; "
                         "all inputs must be on one device")


def _broadcasts_to(shape: tuple[int, ...], full: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``full`` (torch.broadcast_shapes costs
    ~25 us a call, as much as the whole C++ op on a small input)."""
    if len(shape) > len(full):
        return False
    return all(s == 1 or s == f for s, f in zip(reversed(shape), reversed(full)))


def _normalise_mask(mask: torch.Tensor, batch: tuple[int, ...], H: int, W: int,
                    dtype: torch.dtype, ref: torch.Tensor, op: str,
                    coils: int | None = None) -> torch.Tensor:
    """mask (bool/float), broadcastable to (*batch, [C,] H, W) -> (Bm, Hm, W) of `dtype`,
    Bm in {1, prod(batch)}, Hm in {1, H}. A multi-coil mask must not vary over coils."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{op}: mask must be a torch.Tensor, got {type(mask).__name__}")
    _check_device(mask, ref, "mask", op)
    if mask.is_complex() or not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{op}: mask must be bool or real floating point, got {mask.dtype}")
    full = (*batch, *(() if coils is None else (coils,)), H, W)
    want = "(..., 1, W) or (..., H, W)"
    if mask.dim() == 0 or mask.shape[-1] != W:
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} must be broadcastable as {want} "
                         f"with W = {W} to the k-space shape {full}")
    hm = mask.shape[-2] if mask.dim() >= 2 else 1
    if hm not in (1, H):
        raise ValueError(f"{op}: mask has {hm} rows; expected 1 (column mask) or H = {H} "
                         f"for k-space of shape {full}")
    if not _broadcasts_to(tuple(mask.shape), full):
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to the k-space "
                         f"shape {full} (multi-coil: give the mask a coil dim, e.g. (B, 1, 1, W))")
    lead = (1,) * (len(full) - max(mask.dim(), 2)) + tuple(mask.shape[:-2])
    m = mask.to(dtype).reshape(*lead, hm, W)
    if coils is not None:
        if lead[-1] != 1:
            raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} varies over the {coils} coils; "
                             "a multi-coil mask must be shared by the coils, e.g. (B, 1, 1, W)")
        lead = lead[:-1]
        m = m.squeeze(-3)
    if math.prod(lead) == 1:
        return m.reshape(1, hm, W).contiguous()
    return m.expand(*batch, hm, W).reshape(-1, hm, W).contiguous()


def _normalise_lam(lam, dtype: torch.dtype, ref: torch.Tensor, op: str) -> torch.Tensor | None:
    """None, a float or a real tensor of one element -> 0-dim tensor of `dtype` (keeps autograd)."""
    if lam is None:
        return None
    if isinstance(lam, torch.Tensor):
        _check_device(lam, ref, "lam", op)
        if lam.numel() != 1 or lam.is_complex():
            raise ValueError(f"{op}: lam must be a real scalar tensor, got {lam.dtype} of shape "
                             f"{tuple(lam.shape)}")
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
    return torch.full((), float(lam), dtype=dtype, device=ref.device)


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
    broadcastable to x as (..., 1, W) (column mask, hybrid path) or (..., H, W).
    Differentiable in x (the operator is self-adjoint).
    """
    xc, real = _as_complex(x, "x", "undersample")
    H, W = xc.shape[-2:]
    batch = tuple(xc.shape[:-2])
    m = _normalise_mask(mask, batch, H, W, _real_dtype(xc), xc, "undersample")
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
    """
    op = "data_consistency"
    xc, real = _as_complex(x, "x", op)
    kc, _ = _as_complex(k0, "k0", op)
    _check_device(kc, xc, "k0", op)
    if kc.dtype != xc.dtype:
        raise TypeError(f"{op}: k0 has dtype {kc.dtype} but x has {xc.dtype}")
    H, W = xc.shape[-2:]
    if sens is None:
        if kc.shape != xc.shape:
            raise ValueError(f"{op}: k0 must have the shape of x {tuple(xc.shape)}, got {tuple(kc.shape)}")
        batch, coils, sc = tuple(xc.shape[:-2]), None, None
    else:
        sc, _ = _as_complex(sens, "sens", op)
        _check_device(sc, xc, "sens", op)
        if sc.dtype != xc.dtype:
            raise TypeError(f"{op}: sens has dtype {sc.dtype} but x has {xc.dtype}")
        if xc.dim() != 3:
            raise ValueError(f"{op}: multi-coil x must be (B, H, W), got shape {tuple(xc.shape)}")
        B = xc.shape[0]
        if sc.dim() != 4 or sc.shape[0] != B or tuple(sc.shape[-2:]) != (H, W):
            raise ValueError(f"{op}: sens must be (B, C, H, W) = ({B}, C, {H}, {W}) for x of shape "
                             f"{tuple(xc.shape)}, got {tuple(sc.shape)}")
        if kc.shape != sc.shape:
            raise ValueError(f"{op}: k0 must be (B, C, H, W) like sens {tuple(sc.shape)}, "
                             f"got {tuple(kc.shape)}")
        batch, coils = (B,), sc.shape[1]
    rdt = _real_dtype(xc)
    m = _normalise_mask(mask, batch, H, W, rdt, xc, op, coils=coils)
    lt = _normalise_lam(lam, rdt, xc, op)
    return _restore(_ops.data_consistency(xc, kc, m, sc, lt), real)


# ---------------------------------------------------------------- autograd and fake kernels


@torch.library.register_fake("fastfn::fft2c")
def _fft2c_fake(x):
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::ifft2c")
def _ifft2c_fake(x):
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::undersample")
def _undersample_fake(x, mask):
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::data_consistency")
def _dc_fake(x, k0, mask, sens, lam):
    return x.new_empty(x.shape)


@torch.library.register_fake("fastfn::data_consistency_backward")
def _dc_backward_fake(grad, x, k0, mask, sens, lam, output_mask):
    def pick(i, like):
        return like.new_empty(like.shape) if output_mask[i] and like is not None else x.new_empty(0)

    rdt = _real_dtype(x)
    glam = (lam.new_empty(lam.shape) if output_mask[3] and lam is not None
            else x.new_empty(0, dtype=rdt))
    return pick(0, x), pick(1, k0), pick(2, sens), glam


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
