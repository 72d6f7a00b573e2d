"""Random inputs for the masked-FFT ops, shared by tests/test_ops_masked_fft.py and
benchmarks/bench_ops.py (which puts this folder on sys.path)."""
from __future__ import annotations

import torch


def complex_randn(*shape: int, dtype: torch.dtype = torch.complex64, device="cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard complex normal tensor of `shape`."""
    return torch.randn(*shape, dtype=dtype, device=device, generator=generator)


def column_mask(W: int, batch: int = 1, accel: int = 4, center: int = 8, device="cpu",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Random Cartesian column mask (batch, 1, W) float32: about W/accel columns sampled,
    `center` fully-sampled central columns (fastMRI's random mask in spirit)."""
    keep = torch.rand(batch, 1, W, generator=generator) < (1.0 / accel)
    c0 = W // 2 - center // 2
    keep[..., c0:c0 + center] = True
    return keep.to(torch.float32).to(device)


def random_2d_mask(H: int, W: int, batch: int = 1, p: float = 0.3, device="cpu",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random 2D sampling mask (batch, H, W) float32 with sampling probability p."""
    return (torch.rand(batch, H, W, generator=generator) < p).to(torch.float32).to(device)


def dc_inputs(B: int, H: int, W: int, coils: int | None = None, dtype=torch.complex64,
              device="cpu", accel: int = 4, mask_2d: bool = False, per_batch_mask: bool = False,
              seed: int = 0) -> dict:
    """x, k0, mask (and sens for multi-coil) of a data-consistency call.

    Single-coil: x, k0 (B, H, W), mask (Bm, 1, W) or (Bm, H, W).
    Multi-coil: x (B, H, W), k0 and sens (B, C, H, W), mask (Bm, 1, 1|H, W).
    """
    g = torch.Generator().manual_seed(seed)
    bm = B if per_batch_mask else 1
    mask = random_2d_mask(H, W, bm, 1.0 / accel, generator=g) if mask_2d else \
        column_mask(W, bm, accel, generator=g)
    shape = (B, H, W) if coils is None else (B, coils, H, W)
    out = {
        "x": complex_randn(B, H, W, dtype=dtype, generator=g).to(device),
        "k0": complex_randn(*shape, dtype=dtype, generator=g).to(device),
        "mask": (mask if coils is None else mask.unsqueeze(1)).to(device),
    }
    if coils is not None:
        sens = complex_randn(B, coils, H, W, dtype=dtype, generator=g)
        out["sens"] = (sens / sens.abs().square().sum(1, keepdim=True).sqrt()).to(device)
    out["k0"] = out["k0"] * out["mask"]
    return out
