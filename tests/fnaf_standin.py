"""A small stand-in for the attack engine's functions that robust training and the
evaluation call (search_features, attack_batch, apply_feature), built on the
fastfn ops. Used by the tests of issue 6 so they run whatever the state of
fastfn.attack; single-coil only.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from fastfn.losses import masked_nmse
from fastfn.ops import fft2c, ifft2c
from fastfn.ops.features import insert_features


def random_walks(targets: torch.Tensor, R: int, size: tuple[int, int], g: torch.Generator,
                 margin: int = 4) -> torch.Tensor:
    """(N, R, P) flat indices of 4-connected random walks of size[0]..size[1] steps
    starting on the foreground (target > 0.1 max); -1 pads; revisits dropped."""
    N, h, w = targets.shape
    dev = targets.device
    P = size[1] + 1
    fg = (targets > 0.1 * targets.amax(dim=(-2, -1), keepdim=True)).float()
    fg[:, :margin], fg[:, h - margin:], fg[:, :, :margin], fg[:, :, w - margin:] = 0, 0, 0, 0
    fg = fg.flatten(1) + 1e-12
    start = torch.multinomial(fg, R, replacement=True, generator=g)                    # (N, R)
    moves = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]], device=dev)
    step = moves[torch.randint(0, 4, (N, R, P - 1), generator=g, device=dev)]       # (N,R,P-1,2)
    rc = torch.stack([start // w, start % w], -1)[:, :, None]
    pos = torch.cat([rc, rc + step.cumsum(2)], dim=2)
    pos[..., 0].clamp_(0, h - 1)
    pos[..., 1].clamp_(0, w - 1)
    flat = pos[..., 0] * w + pos[..., 1]                                             # (N, R, P)
    n_steps = torch.randint(size[0], size[1] + 1, (N, R, 1), generator=g, device=dev)
    flat = torch.where(torch.arange(P, device=dev) <= n_steps, flat, torch.full_like(flat, -1))
    flat, _ = flat.sort(dim=-1)
    dup = torch.zeros_like(flat, dtype=torch.bool)
    dup[..., 1:] = flat[..., 1:] == flat[..., :-1]
    return torch.where(dup, torch.full_like(flat, -1), flat)


def bounds(targets: torch.Tensor, intensity: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    mn, mx = targets.amin(dim=(-2, -1)), targets.amax(dim=(-2, -1))
    return mn + intensity[0] * (mx - mn), mn + intensity[1] * (mx - mn)


def simulate(batch: Mapping[str, Any], features: torch.Tensor, R: int) -> torch.Tensor:
    """Masked k-space of each image with its feature (B*R, H, W): the feature map
    (B*R, h, w) is added to the complex image with the image's phase."""
    x = ifft2c(batch["kspace"])                                                       # (B, H, W)
    H, W = x.shape[-2:]
    h, w = features.shape[-2:]
    top, left = (H - h) // 2, (W - w) // 2
    d = torch.zeros(features.shape[0], H, W, dtype=features.dtype, device=features.device)
    d = d.clone()
    d[:, top:top + h, left:left + w] = features
    phase = torch.sgn(x).repeat_interleave(R, 0)
    phase = torch.where(phase == 0, torch.ones_like(phase), phase)
    xp = x.repeat_interleave(R, 0) + d * phase
    return fft2c(xp) * batch["mask"].repeat_interleave(R, 0)


def _evaluate(model, batch, targets, index, values, ring, R):
    perturbed, region = insert_features(targets, index, values, ring)                 # (B,R,h,w)
    B, _, h, w = perturbed.shape
    feats = (perturbed - targets[:, None]).reshape(B * R, h, w)
    k = simulate(batch, feats, R)
    pred = model(k, batch["mask"].repeat_interleave(R, 0), (h, w))
    nmse = masked_nmse(pred, perturbed.reshape(B * R, h, w), region.reshape(B * R, h, w))
    return perturbed, region, k, nmse.reshape(B, R)


def _search(model, batch, *, method, family, size, intensity, restarts, steps, step_size, ring,
            generator):
    targets = batch["target"].float()
    B = targets.shape[0]
    index = random_walks(targets, restarts, size, generator)
    lo, hi = bounds(targets, intensity)
    u = torch.rand(index.shape, generator=generator, device=targets.device)
    values = (lo[:, None, None] + u * (hi - lo)[:, None, None]).contiguous()
    values = torch.where(index >= 0, values, torch.zeros_like(values))
    for _ in range(steps if method == "pgd" else 0):
        with torch.enable_grad():
            v = values.clone().requires_grad_(True)
            _, _, _, nmse = _evaluate(model, batch, targets, index, v, ring, restarts)
            (grad,) = torch.autograd.grad(nmse.sum(), v)
        with torch.no_grad():
            values = torch.maximum(torch.minimum(values + step_size * (hi - lo)[:, None, None]
                                                 * grad.sign(), hi[:, None, None]), lo[:, None, None])
            values = torch.where(index >= 0, values, torch.zeros_like(values))
    with torch.no_grad():
        perturbed, region, k, nmse = _evaluate(model, batch, targets, index, values, ring, restarts)
    best = nmse.argmax(dim=1)
    ar = torch.arange(B, device=targets.device)
    H, W = k.shape[-2:]
    return {"target": perturbed[ar, best], "region": region[ar, best],
            "masked_kspace": k.reshape(B, restarts, H, W)[ar, best], "nmse": nmse[ar, best],
            "index": index[ar, best], "values": values[ar, best]}


def search_features(model, batch, **kw) -> dict:
    out = _search(model, batch, **kw)
    return {k: v.detach() for k, v in out.items()}


def attack_batch(model, batch, *, method, settings, generator) -> dict:
    s = settings
    restarts = s.random_restarts if method == "random" else s.pgd_restarts
    out = _search(model, batch, method=method, family=s.family, size=s.size, intensity=s.intensity,
                  restarts=restarts, steps=s.pgd_steps, step_size=s.pgd_step_size, ring=s.ring,
                  generator=generator)
    zf_feat = _zero_filled(out["masked_kspace"], out["target"].shape[-2:])
    zf = batch["zero_filled"].float()
    scale = batch["target"].float().amax(dim=(-2, -1)) ** 2
    r = out["region"]
    mse = (((zf_feat - zf) * r) ** 2).sum(dim=(-2, -1)) / r.sum(dim=(-2, -1)) / scale
    info = mse >= s.info_threshold
    return {**out, "worst_nmse": out["nmse"], "info_preserved": info,
            "fn": info & (out["nmse"] >= s.threshold)}


def _zero_filled(k: torch.Tensor, hw) -> torch.Tensor:
    x = ifft2c(k).abs()
    H, W = x.shape[-2:]
    top, left = (H - hw[0]) // 2, (W - hw[1]) // 2
    return x[..., top:top + hw[0], left:left + hw[1]]


def apply_feature(batch, index, values, ring=1) -> dict:
    targets = batch["target"].float()
    perturbed, region = insert_features(targets, index[:, None], values[:, None], ring)
    feats = perturbed[:, 0] - targets
    k = simulate(batch, feats, 1)
    return {"target": perturbed[:, 0], "region": region[:, 0], "masked_kspace": k,
            "zero_filled": _zero_filled(k, targets.shape[-2:])}
