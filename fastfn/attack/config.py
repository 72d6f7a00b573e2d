"""The attack's one configuration: the allowed features inside the search settings.

``AttackConfig(features=FeatureConfig(...), method=..., ...)`` is used unchanged by
``fastfn.attack`` (one batch or a data set), the evaluation protocol, the demo and
robust training (``RobustConfig.attack``). Each setting is validated here or in
:class:`~fastfn.attack.features.FeatureConfig`, nowhere else.

Stored configs of older versions had the feature settings flat beside the search
settings (``{"family": ..., "size": ..., "pgd_steps": ...}``); :meth:`AttackConfig.migrate`
moves them into ``features`` so such files still load.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from fastfn.attack.features import FeatureConfig
from fastfn.configs import as_plain, check_choice, from_plain

METHODS = ("random", "pgd", "pgd+refine")
SCHEDULES = ("constant", "linear", "cosine")
FEATURE_KEYS = tuple(f.name for f in dataclasses.fields(FeatureConfig))


@dataclass
class AttackConfig:
    """The attack: the allowed features (D) and how they are searched.

    Attributes:
        features: the allowed features (family, size, intensity, placement, ring).
        method: the search: "random" (the authors' random search), "pgd" (projected
            sign-gradient ascent on the intensities) or "pgd+refine" (then location refinement).
        random_restarts: random features per slice of random search (the authors: 11).
        pgd_restarts: starts per slice of the gradient attack.
        pgd_screen: S > 1 draws S x pgd_restarts random features per slice, scores them
            (forward only) and starts the gradient steps from the pgd_restarts worst;
            1: random starts.
        pgd_steps: sign-gradient steps per start.
        pgd_step_size: first step as a fraction of the feature's intensity range.
        schedule: step schedule over the steps: constant, or linear / cosine decay from
            pgd_step_size to pgd_step_size * final_step.
        final_step: last step relative to the first (linear and cosine schedules).
        normalize: step along g * sqrt(P) / ||g|| instead of sign(g).
        refine_iters: location-refinement rounds of "pgd+refine": each tries the 8 shifts
            of the best feature by refine_step pixels and keeps improvements.
        refine_step: shift of location refinement in pixels.
        threshold: a slice is a false negative when its worst masked NMSE >= threshold
            (the authors: 1e-3) and the information was preserved.
        info_threshold: information preserved when the zero-filled MSE inside T, relative
            to the squared image max, is >= info_threshold (the authors: 1e-4).
        chunk: most images per model call (bounds memory).
        seed: base seed of the feature draws.
    """
    features: FeatureConfig = field(default_factory=FeatureConfig)
    method: str = field(default="random", metadata={"choices": METHODS})
    random_restarts: int = 11
    pgd_restarts: int = 4
    pgd_screen: int = 1
    pgd_steps: int = 10
    pgd_step_size: float = 0.25
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    final_step: float = 0.1
    normalize: bool = False
    refine_iters: int = 2
    refine_step: int = 2
    threshold: float = 1e-3
    info_threshold: float = 1e-4
    chunk: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.features, Mapping):
            self.features = from_plain(FeatureConfig, self.features, source="AttackConfig.features")
        check_choice("AttackConfig", "method", self.method, METHODS)
        check_choice("AttackConfig", "schedule", self.schedule, SCHEDULES)
        for key in ("random_restarts", "pgd_restarts", "pgd_screen", "chunk", "refine_step"):
            if getattr(self, key) < 1:
                raise ValueError(f"AttackConfig.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("pgd_steps", "refine_iters"):
            if getattr(self, key) < 0:
                raise ValueError(f"AttackConfig.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("pgd_step_size", "final_step", "threshold", "info_threshold"):
            if getattr(self, key) < 0:
                raise ValueError(f"AttackConfig.{key} must be >= 0, got {getattr(self, key)}")

    @property
    def restarts(self) -> int:
        """Candidate features per slice of the configured method."""
        return self.random_restarts if self.method == "random" else self.pgd_restarts

    def with_restarts(self, restarts: int) -> "AttackConfig":
        """A copy whose configured method uses ``restarts`` candidates per slice."""
        key = "random_restarts" if self.method == "random" else "pgd_restarts"
        return dataclasses.replace(self, **{key: restarts})

    def replace(self, **changes: Any) -> "AttackConfig":
        """A copy with search settings and/or feature settings changed (flat names)."""
        feature = {k: changes.pop(k) for k in list(changes) if k in FEATURE_KEYS}
        if feature:
            changes["features"] = dataclasses.replace(self.features, **feature)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists)."""
        return as_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "attack config") -> "AttackConfig":
        """From a nested dict, or the flat layout of older versions; unknown keys raise
        KeyError naming them."""
        return from_plain(cls, d, source=source)

    @classmethod
    def migrate(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """Move feature settings stored flat (older versions) into ``features``."""
        d = dict(d)
        flat = {k: d.pop(k) for k in FEATURE_KEYS if k in d}
        if flat:
            nested = d.get("features")
            merged = dict(as_plain(nested) if isinstance(nested, FeatureConfig) else nested or {})
            d["features"] = {**flat, **merged}
        return d
