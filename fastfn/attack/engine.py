"""The FNAF attack engine: random search, projected gradient ascent, location refinement.

For a batch of N slices and R candidate features per slice, everything is one
batched pass on the batch's device: ``insert_features`` (perturbed targets y' and
loss regions T) -> simulated acquisition (``fastfn.attack.acquisition``) -> model
-> masked NMSE ``||T (y' - f(x'))||^2 / ||T y'||^2`` -> (PGD) backward ->
``feature_step``. Candidates go through the model in chunks of ``chunk`` images
to bound memory; no per-sample Python loop and no host round trip inside a search.

Per slice the engine returns the worst masked NMSE, the feature that achieved it
(``index``/``values`` in the compact form of ``fastfn.attack.features``), whether
the information was preserved (docs/METHOD.md section 5: the zero-filled image with and
without the feature differs inside T by an MSE, relative to the squared image
max, of at least ``info_threshold``) and the false-negative flag
(worst NMSE >= ``threshold`` and information preserved).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from fastfn.attack import features as feat
from fastfn.attack.acquisition import Acquisition, from_batch
from fastfn.attack.config import METHODS, AttackConfig
from fastfn.losses import masked_nmse
from fastfn.ops import feature_step, insert_features

def step_schedule(t: int, T: int, cfg: AttackConfig) -> float:
    """Step size factor (relative to the intensity range) of step t of T."""
    s0, s1 = cfg.pgd_step_size, cfg.pgd_step_size * cfg.final_step
    if cfg.schedule == "constant" or T <= 1:
        return s0
    frac = t / (T - 1)
    if cfg.schedule == "linear":
        return s0 + (s1 - s0) * frac
    return s1 + 0.5 * (s0 - s1) * (1 + math.cos(math.pi * frac))


class Scorer:
    """Masked NMSE of candidate features against one model and one batch.

    Counts model evaluations (images through the model) in ``evals``.
    """

    def __init__(self, model: nn.Module, acq: Acquisition, chunk: int = 64):
        self.model, self.acq, self.chunk = model, acq, chunk
        self.evals = 0
        self._chunks: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _chunk_inputs(self, N: int, R: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per chunk of the N x R candidates: their slice numbers (n,) and masks.
        Made once per (N, R) and reused by every step: the model's DC layers key their
        column plan on the mask tensor, so a fresh mask per step would rebuild the plan
        each step (on a GPU, a copy of the mask to the host: a synchronisation)."""
        if (N, R) not in self._chunks:
            slices = torch.arange(N, device=device).repeat_interleave(R)
            self._chunks[N, R] = [
                (sl, self.acq.mask.index_select(0, sl))
                for sl in (slices[s:s + self.chunk] for s in range(0, N * R, self.chunk))]
        return self._chunks[N, R]

    def __call__(self, perturbed: torch.Tensor, region: torch.Tensor, grad: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """perturbed, region: (N, R, h, w). Returns nmse (N, R) and, when ``grad``,
        d(nmse)/d(perturbed) (N, R, h, w) (each candidate's own gradient)."""
        N, R, h, w = perturbed.shape
        flat_p = perturbed.reshape(N * R, h, w)
        flat_r = region.reshape(N * R, h, w)
        nmse, grads = [], []
        for (sl, mask), s in zip(self._chunk_inputs(N, R, perturbed.device), range(0, N * R, self.chunk)):
            p = flat_p[s:s + self.chunk].detach()
            with torch.set_grad_enabled(grad):
                if grad:
                    p.requires_grad_(True)
                k = self.acq.simulate(p - self.acq.targets.index_select(0, sl), sl)
                pred = self.model(k, mask, (h, w))
                loss = masked_nmse(pred.float(), p, flat_r[s:s + self.chunk])
                if grad:
                    (g,) = torch.autograd.grad(loss.sum(), p)
                    grads.append(g)
            nmse.append(loss.detach())
            self.evals += sl.numel()
        out = torch.cat(nmse).view(N, R)
        return out, (torch.cat(grads).view(N, R, h, w) if grad else None)


@dataclass
class Candidates:
    """R features per slice: index/values (N, R, P), bounds lo/hi (N, R), nmse (N, R)."""
    index: torch.Tensor
    values: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    nmse: torch.Tensor

    def best(self) -> "Candidates":
        """The worst-case (highest NMSE) candidate of each slice, as R = 1."""
        return self.select(self.nmse.argmax(dim=1, keepdim=True))

    def top(self, k: int) -> "Candidates":
        """The k highest-NMSE candidates of each slice (R = k), worst first."""
        return self.select(self.nmse.topk(k, dim=1).indices)

    def select(self, j: torch.Tensor) -> "Candidates":
        """Candidates j (N, k) of each slice (R = k), contiguous."""
        take = lambda x: torch.gather(x, 1, j.view(*j.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
        return Candidates(*(take(t).contiguous() for t in (self.index, self.values, self.lo, self.hi, self.nmse)))


def draw(targets: torch.Tensor, cfg: AttackConfig, R: int, generator: torch.Generator | None,
         region: torch.Tensor | None = None) -> Candidates:
    """R random features per slice with random intensities (nmse not yet known: -inf)."""
    fc = cfg.features
    index, profile = feat.draw_supports(targets, fc, R, generator, region)
    lo, hi = feat.intensity_bounds(targets, index, fc)
    values = feat.draw_values(index, profile, lo, hi, generator, per_pixel=fc.family != "gaussian")
    return Candidates(index, values, lo.contiguous(), hi.contiguous(),
                      torch.full(lo.shape, -math.inf, device=targets.device))


def random_search(score: Scorer, targets: torch.Tensor, cfg: AttackConfig, R: int,
                  generator: torch.Generator | None, region: torch.Tensor | None = None) -> Candidates:
    """The authors' attack: R random features per slice, scored; returns all R."""
    c = draw(targets, cfg, R, generator, region)
    with torch.no_grad():
        pert, reg = insert_features(targets, c.index, c.values, cfg.features.ring)
        c.nmse, _ = score(pert, reg)
    return c


def pgd(score: Scorer, targets: torch.Tensor, cfg: AttackConfig, R: int, T: int,
        generator: torch.Generator | None, region: torch.Tensor | None = None) -> Candidates:
    """Projected sign-gradient ascent on the intensities from R features per slice.

    The starts are R random features, or with ``cfg.pgd_screen`` S > 1 the R worst
    of S x R scored random features. T steps (each one forward + backward), then a
    final forward; every candidate keeps the best intensities it visited (and its
    screening score). Returns all R candidates.
    """
    if cfg.pgd_screen > 1:
        c = random_search(score, targets, cfg, R * cfg.pgd_screen, generator, region).top(R)
    else:
        c = draw(targets, cfg, R, generator, region)
    pert, reg = insert_features(targets, c.index, c.values, cfg.features.ring)
    pert = pert.contiguous()
    best_values, best_nmse = c.values.clone(), c.nmse.clone()
    span = (c.hi - c.lo).clamp_min(torch.finfo(targets.dtype).tiny)
    for t in range(T):
        nmse, grad = score(pert, reg, grad=True)
        better = nmse > best_nmse
        best_nmse = torch.where(better, nmse, best_nmse)
        best_values = torch.where(better[..., None], c.values, best_values)
        feature_step(pert, c.values, c.index, grad, c.lo, c.hi, step_schedule(t, T, cfg) * span,
                     cfg.normalize)
    with torch.no_grad():
        nmse, _ = score(pert, reg)
    better = nmse > best_nmse
    c.nmse = torch.where(better, nmse, best_nmse)
    c.values = torch.where(better[..., None], c.values, best_values).contiguous()
    return c


SHIFTS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def refine(score: Scorer, targets: torch.Tensor, cfg: AttackConfig, best: Candidates,
           region: torch.Tensor) -> Candidates:
    """Location refinement: try the 8 shifts of each slice's best feature by
    ``refine_step`` pixels (same intensities), keep improvements, ``refine_iters`` rounds.

    best: R = 1 candidates. A shift that leaves the image or moves the feature's
    first pixel out of the placement region is not taken.
    """
    N, _, h, w = *best.index.shape[:2], *targets.shape[-2:]
    shifts = torch.tensor(SHIFTS, device=targets.device) * cfg.refine_step
    K = shifts.shape[0]
    cur = best
    for _ in range(cfg.refine_iters):
        index, ok = feat.shift_index(cur.index[:, 0], shifts, (h, w))          # (N, K, P), (N, K)
        anchor = torch.where(index >= 0, index, torch.full_like(index, h * w)).amin(-1).clamp_max(h * w - 1)
        ok &= torch.gather(region.flatten(1), 1, anchor)
        values = torch.where(index >= 0, cur.values.expand(N, K, -1), torch.zeros_like(index, dtype=cur.values.dtype))
        safe = torch.where(ok[..., None], index, cur.index.expand(N, K, -1)).contiguous()
        values = torch.where(ok[..., None], values, cur.values.expand(N, K, -1)).contiguous()
        with torch.no_grad():
            pert, reg = insert_features(targets, safe, values, cfg.features.ring)
            nmse, _ = score(pert, reg)
        nmse = torch.where(ok, nmse, torch.full_like(nmse, -math.inf))
        cand = Candidates(safe, values, cur.lo.expand(N, K), cur.hi.expand(N, K), nmse).best()
        better = cand.nmse[:, 0] > cur.nmse[:, 0]
        sel = lambda a, b: torch.where(better.view(-1, *([1] * (a.dim() - 1))), a, b)
        cur = Candidates(sel(cand.index, cur.index), sel(cand.values, cur.values), cur.lo, cur.hi,
                         sel(cand.nmse, cur.nmse))
    return cur


@torch.no_grad()
def information_change(acq: Acquisition, targets: torch.Tensor, best: Candidates, ring: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """How visible each slice's feature is in the undersampled data (docs/METHOD.md section 5).

    best: R = 1 candidates. Returns (N,) the MSE inside T between the zero-filled
    magnitude images with and without the feature, relative to max(target)^2, and
    the perturbed targets (N, h, w).
    """
    pert, reg = insert_features(targets, best.index, best.values, ring)
    delta = (pert - targets[:, None])[:, 0]
    change = acq.zero_filled_change(delta)
    r = reg[:, 0]
    mse = (change * r).pow(2).sum((-2, -1)) / r.sum((-2, -1)).clamp_min(1)
    return mse / targets.amax((-2, -1)).pow(2).clamp_min(1e-30), pert[:, 0]


def run_attack(model: nn.Module, batch: Mapping[str, Any], cfg: AttackConfig,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Attack one batch with ``cfg.method``; the worst feature per slice and its flags.

    Args:
        model: a Reconstructor (masked_kspace, mask, crop_size) -> (B, h, w).
        batch: a batch of the architecture contract (fully-sampled ``kspace`` needed).
        cfg: the attack config (its ``method``, restarts and steps).
        generator: torch.Generator on the batch's device (None: global RNG).

    Returns a dict of tensors (N = slices): ``worst_nmse`` (N,), ``index``/``values``
    (N, P) of the winning feature, ``target`` (N, h, w) the perturbed target,
    ``region`` (N, h, w) its T, ``masked_kspace`` its simulated acquisition,
    ``info_mse`` (N,), ``info_preserved`` (N,) bool, ``fn`` (N,) bool,
    ``model_evals`` (scalar int64: images through the model, forward passes).
    """
    was_training = model.training
    model.eval()
    try:
        acq = from_batch(batch)
        targets = acq.targets
        region = feat.placement_region(targets, cfg.features)
        score = Scorer(model, acq, cfg.chunk)
        if cfg.method == "random":
            cands = random_search(score, targets, cfg, cfg.random_restarts, generator, region)
        else:
            cands = pgd(score, targets, cfg, cfg.pgd_restarts, cfg.pgd_steps, generator, region)
        best = cands.best()
        if cfg.method == "pgd+refine":
            best = refine(score, targets, cfg, best, region)
        ring = cfg.features.ring
        info_mse, pert = information_change(acq, targets, best, ring)
        _, reg = insert_features(targets, best.index, best.values, ring)
        worst = best.nmse[:, 0]
        info = info_mse >= cfg.info_threshold
        with torch.no_grad():
            k = acq.simulate(pert - targets)
    finally:
        model.train(was_training)
    return {"worst_nmse": worst, "index": best.index[:, 0], "values": best.values[:, 0],
            "target": pert, "region": reg[:, 0], "masked_kspace": k, "info_mse": info_mse,
            "info_preserved": info, "fn": info & (worst >= cfg.threshold),
            "model_evals": torch.tensor(score.evals)}
