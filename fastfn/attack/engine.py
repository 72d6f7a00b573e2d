"""The FNAF attack engine: random search, projected gradient ascent, location refinement.

For a batch of N slices and R candidate features per slice, everything is one
batched pass on the batch's device: ``insert_features`` (perturbed targets y' and
loss regions T) -> simulated acquisition (``fastfn.attack.acquisition``) -> model
-> masked NMSE ``||T (y' - f(x'))||^2 / ||T y'||^2`` -> (PGD) backward ->
``feature_step``. Candidates go through the model in chunks of ``chunk`` images
to bound memory; no per-sample Python loop and no host round trip inside a search.

Per slice the engine returns the worst masked NMSE, the feature that achieved it
(``index``/``values`` in the compact form of ``fastfn.attack.features``), whether
the information was preserved (METHOD.md section 5: the zero-filled image with and
without the feature differs inside T by an MSE, relative to the squared image
max, of at least ``info_threshold``) and the false-negative flag
(worst NMSE >= ``threshold`` and information preserved).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
from torch import nn

from fastfn.attack import features as feat
from fastfn.attack.acquisition import Acquisition, from_batch
from fastfn.losses import masked_nmse
from fastfn.ops import feature_step, insert_features

METHODS = ("random", "pgd", "pgd+refine")
SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class AttackConfig:
    """The attack: the allowed features (D) and the search budget.

    Feature settings (see :class:`fastfn.attack.features.FeatureConfig`): family,
    size, line_width, intensity_mode, intensity, placement, margin, foreground, ring.

    Search settings:
        random_restarts: random features per slice of random search (authors: 11).
        pgd_restarts: starts per slice of the gradient attack.
        pgd_screen: S > 1 draws S x pgd_restarts random features per slice, scores them
            (forward only, S x pgd_restarts model evaluations) and starts the gradient
            steps from the pgd_restarts worst: location and shape come from the
            random draws, the gradient steps then push the intensities. 1: random starts.
        pgd_steps: sign-gradient steps T per start.
        pgd_step_size: initial step as a fraction of the feature's intensity range.
        schedule: step schedule over the T steps: "constant", "linear" or "cosine"
            decay from pgd_step_size to pgd_step_size * final_step.
        final_step: last step relative to the first (linear/cosine).
        normalize: step along g * sqrt(P) / ||g|| instead of sign(g).
        refine_iters: location-refinement rounds ("pgd+refine"): each tries the 8
            shifts by ``refine_step`` pixels of the best feature, keeps improvements.
        refine_step: shift in pixels.
        threshold: false negative when the worst masked NMSE >= threshold (1e-3).
        info_threshold: information preserved when the zero-filled MSE inside T,
            relative to the squared image max, is >= info_threshold (1e-4).
        chunk: most images per model call (memory bound).
        seed: base seed of the feature draws.
    """
    family: str = "random_walk"
    size: tuple[float, float] = (10, 10)
    line_width: int = 1
    intensity_mode: str = "image"
    intensity: tuple[float, float] = (0.0, 1.0)
    placement: str = "anatomy"
    margin: int = 8
    foreground: float = 0.1
    ring: int = 1
    random_restarts: int = 11
    pgd_restarts: int = 4
    pgd_screen: int = 1
    pgd_steps: int = 10
    pgd_step_size: float = 0.25
    schedule: str = "cosine"
    final_step: float = 0.1
    normalize: bool = False
    refine_iters: int = 2
    refine_step: int = 2
    threshold: float = 1e-3
    info_threshold: float = 1e-4
    chunk: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"AttackConfig.schedule: {self.schedule!r} not in {SCHEDULES}")
        for key in ("random_restarts", "pgd_restarts", "pgd_screen", "chunk"):
            if getattr(self, key) < 1:
                raise ValueError(f"AttackConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.pgd_steps < 0 or self.refine_iters < 0 or self.refine_step < 1:
            raise ValueError("AttackConfig: pgd_steps and refine_iters must be >= 0, refine_step >= 1")
        self.features  # validates the feature settings

    @property
    def features(self) -> feat.FeatureConfig:
        names = {f.name for f in fields(feat.FeatureConfig)}
        return feat.FeatureConfig(**{k: getattr(self, k) for k in names})

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> "AttackConfig":
        """From any object with (some of) these attribute names (e.g. the evaluation's
        AttackSettings), a dict, or None; ``overrides`` win."""
        if isinstance(settings, cls) and not overrides:
            return settings
        if settings is None:
            base: dict[str, Any] = {}
        elif isinstance(settings, Mapping):
            base = dict(settings)
        else:
            base = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        base.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(base) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"AttackConfig: unknown settings {sorted(unknown)}")
        return cls(**base)


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

    def __call__(self, perturbed: torch.Tensor, region: torch.Tensor, grad: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """perturbed, region: (N, R, h, w). Returns nmse (N, R) and, when ``grad``,
        d(nmse)/d(perturbed) (N, R, h, w) (each candidate's own gradient)."""
        N, R, h, w = perturbed.shape
        flat_p = perturbed.reshape(N * R, h, w)
        flat_r = region.reshape(N * R, h, w)
        slices = torch.arange(N, device=perturbed.device).repeat_interleave(R)
        targets = self.acq.targets
        nmse, grads = [], []
        for s in range(0, N * R, self.chunk):
            sl = slices[s:s + self.chunk]
            p = flat_p[s:s + self.chunk].detach()
            with torch.set_grad_enabled(grad):
                if grad:
                    p.requires_grad_(True)
                k = self.acq.simulate(p - targets.index_select(0, sl), sl)
                pred = self.model(k, self.acq.mask.index_select(0, sl), (h, w))
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
        pert, reg = insert_features(targets, c.index, c.values, cfg.ring)
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
    pert, reg = insert_features(targets, c.index, c.values, cfg.ring)
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
            pert, reg = insert_features(targets, safe, values, cfg.ring)
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
    """How visible each slice's feature is in the undersampled data (METHOD.md section 5).

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


def run_attack(model: nn.Module, batch: Mapping[str, Any], cfg: AttackConfig, method: str = "random",
               generator: torch.Generator | None = None, restarts: int | None = None,
               steps: int | None = None) -> dict[str, torch.Tensor]:
    """Attack one batch; the worst feature per slice and its flags.

    Args:
        model: a Reconstructor (masked_kspace, mask, crop_size) -> (B, h, w).
        batch: a batch of the architecture contract (fully-sampled ``kspace`` needed).
        cfg: the attack config.
        method: "random", "pgd" or "pgd+refine".
        generator: torch.Generator on the batch's device (None: global RNG).
        restarts, steps: override cfg's restarts (of the chosen method) / pgd_steps.

    Returns a dict of tensors (N = slices): ``worst_nmse`` (N,), ``index``/``values``
    (N, P) of the winning feature, ``target`` (N, h, w) the perturbed target,
    ``region`` (N, h, w) its T, ``masked_kspace`` its simulated acquisition,
    ``info_mse`` (N,), ``info_preserved`` (N,) bool, ``fn`` (N,) bool,
    ``model_evals`` (scalar int64: images through the model, forward passes).
    """
    if method not in METHODS:
        raise ValueError(f"attack: unknown method {method!r}; choose from {METHODS}")
    was_training = model.training
    model.eval()
    try:
        acq = from_batch(batch)
        targets = acq.targets
        region = feat.placement_region(targets, cfg.features)
        score = Scorer(model, acq, cfg.chunk)
        if method == "random":
            R = restarts or cfg.random_restarts
            cands = random_search(score, targets, cfg, R, generator, region)
        else:
            R = restarts or cfg.pgd_restarts
            T = cfg.pgd_steps if steps is None else steps
            cands = pgd(score, targets, cfg, R, T, generator, region)
        best = cands.best()
        if method == "pgd+refine":
            best = refine(score, targets, cfg, best, region)
        info_mse, pert = information_change(acq, targets, best, cfg.ring)
        _, reg = insert_features(targets, best.index, best.values, cfg.ring)
        worst = best.nmse[:, 0]
        info = info_mse >= cfg.info_threshold
        with torch.no_grad():
            k = acq.simulate(pert - targets)
    finally:
        model.train(was_training)
    return {"worst_nmse": worst, "nmse": worst, "index": best.index[:, 0], "values": best.values[:, 0],
            "target": pert, "region": reg[:, 0], "masked_kspace": k, "info_mse": info_mse,
            "info_preserved": info, "fn": info & (worst >= cfg.threshold),
            "model_evals": torch.tensor(score.evals)}
