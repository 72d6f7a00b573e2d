"""Adversarial noise in the measurement domain: an l2-bounded perturbation of the measured k-space.

docs/METHOD.md section 7 (Antun et al. 2020; Genzel et al. 2022): for a slice with
measured (masked) k-space m k and a level eps, find e with

    ||e||_2 = eps ||m k||_2     (per slice; every coil of multi-coil data, one norm)

that maximises the reconstruction error ``||W (f(m k + m e) - y)||^2`` (W = 1, or the
box map of annotated regions for the region-aimed variant), by projected normalised
gradient ascent; e lives on the sampled positions only (the model sees m e). The
search runs on the sphere ||e|| = eps ||m k|| (the same norm as the random noise it is
compared with): it starts from random Gaussian noise of that norm, steps along
``g / ||g||`` by ``step_size * eps ||m k||`` (cosine decay to ``final_step`` times that),
rescales onto the sphere, and keeps the best iterate of each slice, so its error is
never below the random noise's. Slices are batched, ``chunk`` at a time.

The zero-filled reconstruction, as a model (:class:`ZeroFilled`), gives the yardstick
curves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from fastfn.configs import as_plain
from fastfn.data.transforms import zero_filled_magnitude
from fastfn.metrics import nmse, psnr, ssim
from fastfn.seeding import derive_seed

#: keeps the noise draws apart from the other draws of one seed
NOISE_STREAM = 31
AIMS = ("image", "region")


@dataclass
class NoiseConfig:
    """The measurement-noise study.

    Attributes:
        levels: relative noise levels eps (||e||_2 = eps ||m k||_2 per slice), each >= 0.
        steps: projected gradient steps per level (each one forward + backward).
        step_size: first step as a fraction of the radius eps ||m k||_2.
        final_step: last step relative to the first (cosine decay).
        chunk: most slices per model call.
        seed: seed of the random noise (the random curves and the attack's starts).
    """
    levels: tuple[float, ...] = (0.0, 0.002, 0.005, 0.01, 0.02)
    steps: int = 10
    step_size: float = 0.5
    final_step: float = 0.1
    chunk: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        self.levels = check_levels(self.levels)
        if self.steps < 0:
            raise ValueError(f"NoiseConfig.steps must be >= 0, got {self.steps}")
        if self.chunk < 1:
            raise ValueError(f"NoiseConfig.chunk must be >= 1, got {self.chunk}")
        if not self.step_size > 0 or not self.final_step > 0:
            raise ValueError(f"NoiseConfig: step_size and final_step must be > 0, got {self.step_size}, "
                             f"{self.final_step}")

    def to_dict(self) -> dict[str, Any]:
        return as_plain(self)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Validated noise levels: non-empty, finite, >= 0."""
    out = tuple(float(v) for v in levels)
    if not out:
        raise ValueError("k-space noise: no noise level given")
    bad = [v for v in out if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"k-space noise: noise levels must be finite and >= 0 (relative to ||m k||), "
                         f"got {list(out)}")
    return out


def noise_seed(seed: int, batch_index: int, level_index: int) -> int:
    """Seed of the random noise of batch ``batch_index`` at level ``level_index``."""
    return derive_seed(seed, (batch_index, 101), (level_index, 7_753), (NOISE_STREAM, 1))


class ZeroFilled(nn.Module):
    """The zero-filled reconstruction as a Reconstructor: |ifft2c(masked_kspace)| (RSS over
    coils), centre-cropped; differentiable in the k-space."""

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, crop_size=None) -> torch.Tensor:
        return zero_filled_magnitude(masked_kspace, crop_size)


def _norms(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,) l2 norm of each slice (complex: of |x|)."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


def _kmask(mask: torch.Tensor, kspace: torch.Tensor) -> torch.Tensor:
    return mask.unsqueeze(1) if kspace.dim() == 4 else mask


def _onto_sphere(e: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Rescale each slice of e to norm ``radius`` (N,) (a zero slice stays zero)."""
    n = _norms(e)
    scale = torch.where(n > 0, radius / n.clamp_min(torch.finfo(n.dtype).tiny), torch.zeros_like(n))
    return e * scale.view(-1, *([1] * (e.dim() - 1))).to(e.dtype)


def random_kspace_noise(measured: torch.Tensor, mask: torch.Tensor, level: float,
                        generator: torch.Generator | None) -> torch.Tensor:
    """Complex Gaussian noise on the sampled positions with norm ``level * ||measured||`` per slice.

    measured: complex (N, [C,] H, W) masked k-space; mask: (N, 1, W). Returns e like measured.
    """
    real = torch.randn(measured.shape, generator=generator, device=measured.device,
                       dtype=measured.real.dtype)
    imag = torch.randn(measured.shape, generator=generator, device=measured.device,
                       dtype=measured.real.dtype)
    e = torch.complex(real, imag) * _kmask(mask, measured).to(real.dtype)
    return _onto_sphere(e, level * _norms(measured))


def reconstruction_metrics(pred: torch.Tensor, target: torch.Tensor, maxval: torch.Tensor | None = None,
                           boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-slice NMSE, PSNR and SSIM (fastfn.metrics; data range ``maxval`` (N,), default
    each target's max) and, with box maps (N, h, w), ``region_nmse`` =
    ||B (y - f)||^2 / ||B y||^2 (NaN where a slice has no box). float64 (N,) on the CPU."""
    pred, target = pred.detach().float(), target.float()
    out = {"nmse": nmse(pred, target), "psnr": psnr(pred, target, maxval), "ssim": ssim(pred, target, maxval)}
    if boxes is not None:
        b = boxes.to(target.dtype)
        den = ((b * target) ** 2).double().sum((-2, -1))
        num = ((b * (target - pred)) ** 2).double().sum((-2, -1))
        out["region_nmse"] = torch.where(den > 0, num / den.clamp_min(1e-30), torch.full_like(den, math.nan))
    return {k: v.detach().cpu() for k, v in out.items()}


def data_range(batch: Mapping[str, Any]) -> torch.Tensor:
    """The metrics' data range per slice: the volume max ``batch["max"]`` where it is > 0,
    else the slice's target max (N,)."""
    t = batch["target"].float()
    own = t.amax((-2, -1))
    given = batch.get("max")
    if not torch.is_tensor(given) or given.shape != own.shape:
        return own
    given = given.to(own)
    return torch.where(given > 0, given, own)


def check_boxes(boxes: torch.Tensor | None, target: torch.Tensor, aim: str) -> None:
    """Raise ValueError for an aim other than image/region, box maps of the wrong shape, or
    a region aim without boxes or with box maps that cover no slice."""
    if aim not in AIMS:
        raise ValueError(f"k-space noise: aim must be one of {AIMS}, got {aim!r}")
    if boxes is None:
        if aim == "region":
            raise ValueError("k-space noise: the region-aimed attack needs box maps (N, h, w)")
        return
    if tuple(boxes.shape) != tuple(target.shape):
        raise ValueError(f"k-space noise: box maps {tuple(boxes.shape)} must match the targets "
                         f"{tuple(target.shape)}")
    if aim == "region" and not bool((boxes > 0).any()):
        raise ValueError("k-space noise: the box maps cover no slice of the batch (no annotated box)")


def _objective(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    err = pred - target
    if weight is not None:
        err = weight * err
    return err.pow(2).sum((-2, -1))


def _step_factor(t: int, T: int, first: float, final: float) -> float:
    if T <= 1:
        return first
    last = first * final
    return last + 0.5 * (first - last) * (1 + math.cos(math.pi * t / (T - 1)))


def kspace_noise_attack(model: nn.Module, batch: Mapping[str, Any], level: float, cfg: NoiseConfig | None = None, *,
                        boxes: torch.Tensor | None = None, aim: str = "image",
                        generator: torch.Generator | None = None) -> dict[str, Any]:
    """Adversarial and random k-space noise of one level on one batch.

    Args:
        model: a Reconstructor (eval mode during the search, mode restored); differentiable
            in the k-space.
        batch: ``masked_kspace`` complex (N, [C,] H, W), ``mask`` (N, 1, W), ``target``
            (N, h, w); ``max`` (N,) optional (metrics' data range).
        level: eps >= 0, relative to each slice's ||m k||_2.
        cfg: steps, step sizes and chunk (``levels`` and ``seed`` are not read here).
        boxes: (N, h, w) box maps: ``region_nmse`` is reported, and with aim="region"
            the error inside them is the objective.
        aim: "image" (whole-image squared error) or "region" (inside ``boxes``).
        generator: draws the random noise (the random comparison and the search's start).

    Returns ``noise`` and ``random_noise`` (like masked_kspace, zero off the sampled
    positions), ``radius`` (N,) = level ||m k||, ``adversarial`` and ``random``: dicts of
    per-slice metrics (see :func:`reconstruction_metrics`), ``objective`` and
    ``random_objective`` (N,), ``model_evals`` (images through the model, forward passes).
    """
    cfg = cfg or NoiseConfig()
    level = check_levels([level])[0]
    target = batch["target"]
    check_boxes(boxes, target, aim)
    measured, mask = batch["masked_kspace"], batch["mask"]
    maxval = data_range(batch)
    crop = tuple(target.shape[-2:])
    random_e = random_kspace_noise(measured, mask, level, generator)
    weight = boxes.to(target.dtype) if aim == "region" else None
    N = measured.shape[0]
    steps = cfg.steps if level > 0 else 0
    best_e, best_obj, best_pred, rand_pred, rand_obj = [], [], [], [], []
    evals = 0
    was_training = model.training
    model.eval()
    try:
        for s in range(0, N, cfg.chunk):
            sl = slice(s, s + cfg.chunk)
            k0, m, t = measured[sl], mask[sl], target[sl].float()
            km = _kmask(m, k0).to(k0.real.dtype)
            w = weight[sl] if weight is not None else None
            radius = level * _norms(k0)
            e = random_e[sl]
            top_obj = torch.full((k0.shape[0],), -math.inf, device=k0.device)
            top_e, top_pred = e, None
            for i in range(steps + 1):
                grad = i < steps
                x = e.detach().requires_grad_(grad)
                with torch.set_grad_enabled(grad):
                    pred = model(k0 + km * x, m, crop).float()
                    obj = _objective(pred, t, w)
                    if grad:
                        (g,) = torch.autograd.grad(obj.sum(), x)
                evals += k0.shape[0]
                obj, pred = obj.detach(), pred.detach()
                if i == 0:
                    rand_pred.append(pred)
                    rand_obj.append(obj)
                better = obj > top_obj
                top_obj = torch.where(better, obj, top_obj)
                top_pred = pred if top_pred is None else torch.where(better[:, None, None], pred, top_pred)
                top_e = torch.where(better.view(-1, *([1] * (e.dim() - 1))), e, top_e)
                if grad:
                    g = km * g
                    step = _step_factor(i, steps, cfg.step_size, cfg.final_step) * radius
                    scale = (step / _norms(g).clamp_min(torch.finfo(radius.dtype).tiny))
                    e = _onto_sphere(km * (e + g * scale.view(-1, *([1] * (e.dim() - 1))).to(g.dtype)), radius)
            best_e.append(top_e)
            best_obj.append(top_obj)
            best_pred.append(top_pred)
    finally:
        model.train(was_training)
    pred_adv, pred_rand = torch.cat(best_pred), torch.cat(rand_pred)
    t = target.float()
    return {"noise": torch.cat(best_e), "random_noise": random_e, "radius": level * _norms(measured),
            "adversarial": reconstruction_metrics(pred_adv, t, maxval, boxes),
            "random": reconstruction_metrics(pred_rand, t, maxval, boxes),
            "objective": torch.cat(best_obj), "random_objective": torch.cat(rand_obj), "model_evals": evals}
