"""Robust (FNAF) training as a trainer ``extra_loss`` (docs/METHOD.md section 6).

    minimise over theta:  L(f(A y), y) + beta * L_feat(f(A(y + d*)), y + d*)
    d* = argmax over d in D of the masked NMSE  ||T (y + d - f(A(y + d)))||^2 / ||T (y + d)||^2

The trainer computes the clean term; :func:`make_robust_loss` builds the second
one. Per batch it searches features with the attack engine (``fastfn.attack``)
configured by ``RobustConfig.attack``: with method "random" the worst of
``random_restarts`` random features per image (1 is the authors' cheap form: one
random feature), with "pgd" a few projected sign-gradient steps on the
intensities from ``pgd_restarts`` random starts (the inner maximisation), keeping
the worst per image. The search runs on the bare module with
``torch.autograd.grad`` w.r.t. the intensities only (no parameter gradients, no
DDP hooks); the loss on the chosen features then goes through the model with
gradients, weighted

    beta * (feature_weight * masked L1 or masked NMSE over T
            + image_weight * L1 over the whole perturbed image).

The authors used masked L1 + full L1 (the defaults here). Options that keep the
adversarial term from swamping the clean reconstruction, all off by default:
``beta_ramp_steps`` (beta grows linearly from its start), ``normalize_to_clean`` (the term's
size tied to the batch's clean L1, see :func:`make_robust_loss`), ``gradient_projection``
and ``gradient_ratio`` (the term's gradient projected off the clean gradient where they
conflict, and capped relative to it: :func:`combine_gradients`) and, through
``attack.features``, intensities relative to the local tissue
(``intensity_mode="local"``). Features are drawn
from a generator seeded by ``(attack.seed, step, rank)``, so a resumed run draws
exactly the features the uninterrupted run would have, and DDP ranks draw
different ones.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

from fastfn.attack import AttackConfig, FeatureConfig, run_attack
from fastfn.configs import as_plain, check_choice, from_plain
from fastfn.losses import masked_l1, masked_nmse
from fastfn.seeding import derive_seed, seeded_generator
from fastfn.train.distributed import unwrap_model

if TYPE_CHECKING:  # the trainer's hook type; trainer -> config -> robust at run time
    from fastfn.train.trainer import ExtraLoss

FEATURE_LOSSES = ("l1", "nmse")

#: where the keys of the flat layout of older versions live now (RobustConfig.migrate)
LEGACY_KEYS: dict[str, tuple[str, ...]] = {
    "family": ("attack.features.family",), "size": ("attack.features.size",),
    "intensity": ("attack.features.intensity",), "ring": ("attack.features.ring",),
    "restarts": ("attack.random_restarts", "attack.pgd_restarts"),
    "pgd_steps": ("attack.pgd_steps",), "pgd_step_size": ("attack.pgd_step_size",),
    "seed": ("attack.seed",),
}


def default_attack(**changes: Any) -> AttackConfig:
    """Robust training's feature search unless configured otherwise: one random
    feature per image (the authors' form), random walks of 10..99 steps (the authors'
    U-Net training), 3 gradient steps when the method is "pgd"; ``changes`` (search or
    feature settings by name, e.g. ``method="pgd", size=(5, 15)``) applied on top."""
    base = AttackConfig(features=FeatureConfig(size=(10, 99)), method="random", random_restarts=1,
                        pgd_restarts=1, pgd_steps=3, pgd_step_size=0.25)
    return base.replace(**changes) if changes else base


@dataclass
class RobustConfig:
    """Settings of robust training; plain values so it sits in a YAML config.

    Attributes:
        attack: the feature search and the allowed features (``fastfn.attack.AttackConfig``;
            default :func:`default_attack`). Keys missing from a YAML or checkpoint
            ``attack`` mapping take :func:`default_attack`'s values.
        beta: weight of the adversarial term relative to the clean loss.
        start_step: the adversarial term is on from this optimiser step; before it the step
            is plain clean training (no feature search, no cost). 0: from the first step.
        feature_loss: "l1" (masked L1 over T) or "nmse" (masked NMSE over T).
        feature_weight, image_weight: weights of the masked and the full-image terms.
        curriculum_steps: > 0 ramps the largest feature size linearly from the smallest to
            the largest of ``attack.features.size`` over that many optimiser steps; 0: no ramp.
        beta_ramp_steps: > 0 ramps beta linearly from beta/N at ``start_step`` to beta at
            ``start_step + N - 1`` (N = this value), so the adversarial term comes in
            gradually; 0: the full beta from ``start_step`` on.
        normalize_to_clean: True ties the adversarial term's size to the clean loss: per batch it is
            rescaled to beta times the L1 of the batch's clean reconstruction (one extra
            forward pass without gradients), the scale factor held constant in the gradient;
            beta is then the term's size relative to the clean L1, whatever the data's
            intensities or the features. False: beta times the raw feature loss.
        gradient_projection: True removes from the adversarial term's parameter gradient
            its component against the clean loss's gradient when the two conflict
            (negative inner product; PCGrad, Yu et al. 2020), so to first order an
            adversarial update never makes the clean reconstruction worse. The trainer
            then backpropagates the two terms separately (same cost: the two forward
            graphs are separate anyway) and averages gradients over DDP ranks itself.
        gradient_ratio: > 0 caps the norm of the adversarial term's gradient (after beta
            and the projection) at this multiple of the clean gradient's norm, so the term
            cannot swamp the clean loss whatever its scale; 0: no cap.
    """
    attack: AttackConfig = field(default_factory=default_attack)
    beta: float = 1.0
    start_step: int = 0
    feature_loss: str = field(default="l1", metadata={"choices": FEATURE_LOSSES})
    feature_weight: float = 1.0
    image_weight: float = 1.0
    curriculum_steps: int = 0
    beta_ramp_steps: int = 0
    normalize_to_clean: bool = False
    gradient_projection: bool = False
    gradient_ratio: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.attack, Mapping):
            self.attack = AttackConfig.from_dict(self.migrate({"attack": self.attack})["attack"],
                                                 source="robust.attack")
        if not isinstance(self.attack, AttackConfig):
            raise TypeError(f"robust.attack must be an AttackConfig (e.g. default_attack(method='pgd')) "
                            f"or a mapping, got {self.attack!r}")
        check_choice("robust", "feature_loss", self.feature_loss, FEATURE_LOSSES)
        for key in ("beta", "feature_weight", "image_weight", "gradient_ratio"):
            if getattr(self, key) < 0:
                raise ValueError(f"robust.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("curriculum_steps", "start_step", "beta_ramp_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"robust.{key} must be >= 0, got {getattr(self, key)}")

    def to_dict(self) -> dict[str, Any]:
        return as_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "robust config") -> "RobustConfig":
        """Build from a mapping (YAML, a checkpoint), the flat layout of older versions
        included; unknown keys raise KeyError naming them."""
        return from_plain(cls, d, source=source)

    @classmethod
    def migrate(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """The current layout of ``d``: older flat keys (``attack: "pgd"``, ``family``,
        ``size``, ``restarts``, ...) moved into ``attack``, and a partial ``attack``
        mapping completed with :func:`default_attack`'s values."""
        d = dict(d)
        attack = d.get("attack")
        if isinstance(attack, AttackConfig):
            return d
        given = {"method": attack} if isinstance(attack, str) else AttackConfig.migrate(attack or {})
        for old, paths in LEGACY_KEYS.items():
            if old in d:
                value = d.pop(old)
                for path in paths:
                    _set_path(given, path.split(".")[1:], value)
        d["attack"] = _deep_merge(as_plain(default_attack()), given)
        return d

    def beta_at(self, step: int) -> float:
        """The weight beta of optimiser step ``step`` (0 before ``start_step``; the ramp)."""
        if step < self.start_step:
            return 0.0
        if self.beta_ramp_steps <= 0:
            return self.beta
        return self.beta * min(1.0, (step - self.start_step + 1) / self.beta_ramp_steps)

    def size_at(self, step: int) -> tuple[float, float]:
        """Feature size range at optimiser step ``step`` (the curriculum)."""
        lo, hi = self.attack.features.size
        if self.curriculum_steps <= 0 or step >= self.curriculum_steps:
            return lo, hi
        return lo, lo + int(round((hi - lo) * step / self.curriculum_steps))

    def attack_at(self, step: int) -> AttackConfig:
        """The feature search of optimiser step ``step`` (its size by the curriculum)."""
        size = self.size_at(step)
        return self.attack if size == self.attack.features.size else self.attack.replace(size=size)


def _set_path(d: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator for the draws of one step: a function of (seed, step, rank) only."""
    return seeded_generator(derive_seed(seed, (step, 7919), (rank, 104_729)), device)


def make_robust_loss(config: RobustConfig, *, rank: int = 0) -> ExtraLoss:
    """The trainer ``extra_loss`` of robust training with ``config``.

    Args:
        config: the robust settings.
        rank: this process's DDP rank (decorrelates the feature draws per rank).

    Returns ``fn(model, batch, step) -> (loss, logs)``: ``loss`` a scalar in the
    autograd graph of ``model``'s parameters, ``logs`` floats (``feat_loss``,
    ``image_loss``, ``adv_nmse`` (the mean masked NMSE of the chosen features
    before the update), ``beta`` (the weight of this step) and ``robust_s`` (the
    seconds this term took); with ``config.normalize_to_clean`` also ``clean_l1`` and
    ``scale``).

    With ``config.normalize_to_clean`` the term is ``beta * (c / a) * L_feat`` with ``a`` the
    value of the feature loss ``L_feat`` and ``c`` the L1 of the model's clean
    reconstruction of the batch, both without gradients: the term's value is ``beta * c``
    and its gradient that of ``L_feat`` scaled by ``beta * c / a``. The clean forward is
    an extra one (the trainer's own clean loss is not passed to ``extra_loss``, and it
    may be SSIM rather than L1); it runs in train mode, like the trainer's.
    """
    # the logs of the default settings keep the columns they always had
    extra_keys = config.normalize_to_clean or config.beta_ramp_steps > 0

    def robust_loss(model: nn.Module, batch: Mapping[str, Any], step: int
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        t0 = time.perf_counter()
        target = batch["target"]
        if step < config.start_step:
            # same log keys as a robust step, so the CSV logs keep their columns
            logs = {"feat_loss": 0.0, "image_loss": 0.0, "adv_nmse": 0.0, "robust_s": 0.0}
            if extra_keys:
                logs.update({"beta": 0.0, "clean_l1": 0.0, "scale": 0.0} if config.normalize_to_clean
                            else {"beta": 0.0})
            return torch.zeros((), device=target.device), logs
        g = step_generator(config.attack.seed, step, rank, target.device)
        adv = adversarial_examples(unwrap_model(model), batch, config, step, g)
        pred = model(adv["masked_kspace"], batch["mask"], tuple(target.shape[-2:]))
        loss, logs = feature_loss(pred, adv["target"], adv["region"], config)
        logs["adv_nmse"] = float(adv["worst_nmse"].mean())
        beta = config.beta_at(step)
        if config.normalize_to_clean:
            clean = clean_l1(model, batch)
            scale = float(clean) / max(float(loss.detach()), 1e-12)
            logs.update({"clean_l1": float(clean), "scale": scale})
            loss = loss * scale
        if extra_keys:
            logs["beta"] = beta
        logs["robust_s"] = time.perf_counter() - t0
        return beta * loss, logs

    if config.gradient_projection or config.gradient_ratio > 0:
        robust_loss.combine_gradients = functools.partial(  # type: ignore[attr-defined]
            combine_gradients, project=config.gradient_projection, ratio=config.gradient_ratio)
    return robust_loss


def combine_gradients(clean: Sequence[torch.Tensor | None], extra: Sequence[torch.Tensor | None],
                      *, project: bool, ratio: float
                      ) -> tuple[list[torch.Tensor | None], dict[str, float]]:
    """The step's parameter gradients from the clean term's and the adversarial term's.

    Args:
        clean, extra: per parameter, the gradient of the clean loss and of the adversarial
            term (``beta`` included), each the parameter's shape or None (no gradient).
        project: where ``<g_c, g_a> < 0``, replace ``g_a`` by ``g_a - <g_c, g_a> / |g_c|^2 g_c``
            (its component orthogonal to ``g_c``).
        ratio: > 0: then scale ``g_a`` down to ``|g_a| <= ratio * |g_c|``.

    Norms and inner products are over all parameters together. Returns ``g_c + g_a`` per
    parameter (None where both are None) and the logs ``grad_cos`` (cosine of ``g_c`` and
    ``g_a`` before either change), ``grad_ratio`` (``|g_a| / |g_c|`` before either change),
    ``projected`` and ``capped`` (1.0 when that change was applied, else 0.0).
    """
    pairs = [(c, a) for c, a in zip(clean, extra, strict=True) if c is not None and a is not None]
    dot = sum((c.double() * a.double()).sum() for c, a in pairs) if pairs else torch.zeros(())
    nc2 = sum(c.double().square().sum() for c in clean if c is not None)
    na2 = sum(a.double().square().sum() for a in extra if a is not None)
    dot, nc2, na2 = (float(v) for v in (dot, nc2, na2))
    logs = {"grad_cos": dot / math.sqrt(nc2 * na2) if nc2 > 0 and na2 > 0 else 0.0,
            "grad_ratio": math.sqrt(na2 / nc2) if nc2 > 0 else 0.0,
            "projected": 0.0, "capped": 0.0}
    coef, scale = 0.0, 1.0
    if project and dot < 0 and nc2 > 0:
        coef = dot / nc2
        na2 = max(na2 - dot * dot / nc2, 0.0)  # |g_a - coef g_c|^2
        logs["projected"] = 1.0
    if ratio > 0 and nc2 > 0 and na2 > (ratio * ratio) * nc2:
        scale = ratio * math.sqrt(nc2 / na2)
        logs["capped"] = 1.0
    out: list[torch.Tensor | None] = []
    for c, a in zip(clean, extra, strict=True):
        if a is None:
            out.append(c)
            continue
        adv = a if c is None or coef == 0.0 else a - coef * c
        adv = adv if scale == 1.0 else adv * scale
        out.append(adv if c is None else c + adv)
    return out, logs


def clean_l1(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """L1 of ``model``'s reconstruction of the clean batch against its target, without
    gradients (a scalar tensor; the reference size of ``RobustConfig.normalize_to_clean``)."""
    target = batch["target"]
    with torch.no_grad():
        pred = model(batch["masked_kspace"], batch["mask"], tuple(target.shape[-2:]))
    return torch.nn.functional.l1_loss(pred.float(), target.float())


def feature_loss(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                 config: RobustConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``feature_weight * masked loss over region + image_weight * L1 over the image``.

    pred, target, region: real (B, h, w). Returns the scalar loss (before beta)
    and the two terms as floats.
    """
    if config.feature_loss == "l1":
        feat = masked_l1(pred, target, region, reduction="mean")
    else:
        feat = masked_nmse(pred, target, region, reduction="mean")
    full = torch.nn.functional.l1_loss(pred, target)
    loss = config.feature_weight * feat + config.image_weight * full
    return loss, {"feat_loss": float(feat.detach()), "image_loss": float(full.detach())}


def adversarial_examples(model: nn.Module, batch: Mapping[str, Any], config: RobustConfig,
                         step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The worst feature per image found by ``config.attack_at(step)``.

    Returns detached tensors (see :func:`fastfn.attack.run_attack`): ``target`` (B, h, w)
    the perturbed target y + d, ``region`` (B, h, w) its loss region T,
    ``masked_kspace`` the simulated undersampled acquisition of y + d (the batch's
    layout), ``worst_nmse`` (B,) the masked NMSE of the chosen features at search time.
    """
    return run_attack(model, batch, config.attack_at(step), generator)
