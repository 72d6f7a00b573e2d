"""Robust (FNAF) training as a trainer ``extra_loss`` (METHOD.md section 6).

    minimise over theta:  L(f(A y), y) + beta * L_feat(f(A(y + d*)), y + d*)
    d* = argmax over d in D of the masked NMSE  ||T (y + d - f(A(y + d)))||^2 / ||T (y + d)||^2

The trainer computes the clean term; :func:`make_robust_loss` builds the second
one. Per batch it draws candidate features with the attack engine
(``fastfn.attack``): with ``attack="random"`` the worst of ``restarts`` random
features per image (``restarts=1`` is the authors' cheap form: one random
feature), with ``attack="pgd"`` a few projected sign-gradient steps on the
intensities from ``restarts`` random starts (the inner maximisation), keeping the
worst per image. The feature search runs on the bare module with
``torch.autograd.grad`` w.r.t. the intensities only (no parameter gradients, no
DDP hooks); the loss on the chosen features then goes through the model with
gradients, weighted

    beta * (feature_weight * masked L1 or masked NMSE over T
            + image_weight * L1 over the whole perturbed image).

The authors used masked L1 + full L1 (the defaults here). Features are drawn
from a generator seeded by ``(seed, step, rank)``, so a resumed run draws exactly
the features the uninterrupted run would have, and DDP ranks draw different ones.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

ROBUST_ATTACKS = ("random", "pgd")
FEATURE_LOSSES = ("l1", "nmse")

ExtraLoss = Callable[[nn.Module, Mapping[str, Any], int], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class RobustConfig:
    """Settings of robust training; plain values so it sits in a YAML config.

    Attributes:
        attack: "random" (random features, the authors' form) or "pgd" (a few
            gradient steps from random starts: the inner maximisation).
        beta: weight of the adversarial term relative to the clean loss.
        family: feature family of the attack engine (e.g. "random_walk").
        size: (min, max) feature size in the family's unit (random-walk steps;
            the authors trained their U-Net with 10..99).
        intensity: (lo, hi) intensity bounds as fractions of each image's
            [min, max] range; (0, 1) is the authors' [min, max] of the image.
        restarts: candidate features per image; the worst is trained on.
        pgd_steps: gradient steps per candidate (attack="pgd").
        pgd_step_size: step as a fraction of the intensity range.
        curriculum_steps: > 0 ramps the largest feature size linearly from
            ``size[0]`` to ``size[1]`` over that many optimiser steps; 0: no ramp.
        start_step: the adversarial term is on from this optimiser step; before it
            the step is plain clean training (no feature search, no cost). 0: from
            the first step. A clean start, then robust training, kept clean SSIM at
            the demo's budget (docs/ROBUSTNESS.md).
        feature_loss: "l1" (masked L1 over T) or "nmse" (masked NMSE over T).
        feature_weight, image_weight: weights of the masked and full-image terms.
        ring: loss region T = the feature dilated by ``ring`` 4-neighbour steps.
        seed: base seed of the feature draws.
    """
    attack: str = "random"
    beta: float = 1.0
    family: str = "random_walk"
    size: tuple[int, int] = (10, 99)
    intensity: tuple[float, float] = (0.0, 1.0)
    restarts: int = 1
    pgd_steps: int = 3
    pgd_step_size: float = 0.25
    curriculum_steps: int = 0
    start_step: int = 0
    feature_loss: str = "l1"
    feature_weight: float = 1.0
    image_weight: float = 1.0
    ring: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)  # type: ignore[assignment]
        self.intensity = tuple(float(v) for v in self.intensity)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the setting that is out of range."""
        if self.attack not in ROBUST_ATTACKS:
            raise ValueError(f"robust.attack must be one of {ROBUST_ATTACKS}, got {self.attack!r}")
        if self.feature_loss not in FEATURE_LOSSES:
            raise ValueError(f"robust.feature_loss must be one of {FEATURE_LOSSES}, "
                             f"got {self.feature_loss!r}")
        if len(self.size) != 2 or not 1 <= self.size[0] <= self.size[1]:
            raise ValueError(f"robust.size must be (min, max) with 1 <= min <= max, got {self.size}")
        if len(self.intensity) != 2 or not self.intensity[0] < self.intensity[1]:
            raise ValueError(f"robust.intensity must be (lo, hi) with lo < hi, got {self.intensity}")
        for key in ("beta", "feature_weight", "image_weight", "pgd_step_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"robust.{key} must be >= 0, got {getattr(self, key)}")
        for key, low in (("restarts", 1), ("pgd_steps", 0), ("curriculum_steps", 0), ("start_step", 0),
                         ("ring", 0)):
            if getattr(self, key) < low:
                raise ValueError(f"robust.{key} must be >= {low}, got {getattr(self, key)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RobustConfig":
        """Build from a mapping (YAML); unknown keys raise KeyError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise KeyError(f"unknown robust config key(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(d))

    def size_at(self, step: int) -> tuple[int, int]:
        """Feature size range at optimiser step ``step`` (the curriculum)."""
        lo, hi = self.size
        if self.curriculum_steps <= 0 or step >= self.curriculum_steps:
            return lo, hi
        return lo, lo + int(round((hi - lo) * step / self.curriculum_steps))


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator for the draws of one step: a function of (seed, step, rank) only."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729) % (2 ** 63 - 1))
    return g


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def make_robust_loss(config: RobustConfig, *, rank: int = 0, engine: Any = None) -> ExtraLoss:
    """The trainer ``extra_loss`` of robust training with ``config``.

    Args:
        config: the robust settings.
        rank: this process's DDP rank (decorrelates the feature draws per rank).
        engine: what draws and searches the features (``search_features``); default
            :func:`default_engine`.

    Returns ``fn(model, batch, step) -> (loss, logs)``: ``loss`` a scalar in the
    autograd graph of ``model``'s parameters, ``logs`` floats (``feat_loss``,
    ``image_loss``, ``adv_nmse`` (the mean masked NMSE of the chosen features
    before the update) and ``robust_s`` (the seconds this term took)).
    """
    config.validate()
    engine = engine if engine is not None else default_engine()

    def robust_loss(model: nn.Module, batch: Mapping[str, Any], step: int
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        t0 = time.perf_counter()
        target = batch["target"]
        if step < config.start_step:
            # same log keys as a robust step, so the CSV logs keep their columns
            return (torch.zeros((), device=target.device),
                    {"feat_loss": 0.0, "image_loss": 0.0, "adv_nmse": 0.0, "robust_s": 0.0})
        g = step_generator(config.seed, step, rank, target.device)
        adv = adversarial_examples(_unwrap(model), batch, config, step, g, engine)
        pred = model(adv["masked_kspace"], batch["mask"], tuple(target.shape[-2:]))
        loss, logs = feature_loss(pred, adv["target"], adv["region"], config)
        logs["adv_nmse"] = float(adv["nmse"].mean())
        logs["robust_s"] = time.perf_counter() - t0
        return config.beta * loss, logs

    return robust_loss


def feature_loss(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                 config: RobustConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``feature_weight * masked loss over region + image_weight * L1 over the image``.

    pred, target, region: real (B, h, w). Returns the scalar loss (before beta)
    and the two terms as floats.
    """
    from fastfn.losses import masked_l1, masked_nmse
    if config.feature_loss == "l1":
        feat = masked_l1(pred, target, region, reduction="mean")
    else:
        feat = masked_nmse(pred, target, region, reduction="mean")
    full = torch.nn.functional.l1_loss(pred, target)
    loss = config.feature_weight * feat + config.image_weight * full
    return loss, {"feat_loss": float(feat.detach()), "image_loss": float(full.detach())}


def adversarial_examples(model: nn.Module, batch: Mapping[str, Any], config: RobustConfig,
                         step: int, generator: torch.Generator, engine: Any
                         ) -> dict[str, torch.Tensor]:
    """The worst of ``config.restarts`` features per image, found with the attack engine.

    Returns detached tensors: ``target`` (B, h, w) the perturbed target y + d,
    ``region`` (B, h, w) its loss region T, ``masked_kspace`` the simulated
    undersampled acquisition of y + d (the batch's layout), ``nmse`` (B,) the
    masked NMSE of the chosen features against ``model`` at search time.
    """
    lo, hi = config.size_at(step)
    was_training = model.training
    try:
        return engine.search_features(
            model, batch, method=config.attack, family=config.family, size=(lo, hi),
            intensity=config.intensity, restarts=config.restarts,
            steps=config.pgd_steps if config.attack == "pgd" else 0,
            step_size=config.pgd_step_size, ring=config.ring, generator=generator)
    finally:
        model.train(was_training)


# --- the feature search used by robust training and the evaluation -------------------------

ENGINE_FUNCTIONS = ("search_features", "attack_batch", "apply_feature")


def default_engine() -> Any:
    """The feature-search engine: :mod:`fastfn.attack` (its ``search_features``,
    ``attack_batch`` and ``apply_feature``). Robust training and the evaluation take
    any object with these functions (tests pass wrappers that count calls)."""
    import fastfn.attack as attack
    return attack
