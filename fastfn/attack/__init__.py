"""fastfn.attack: find the small features a reconstructor fails to reconstruct (FNAF).

Library entry points:

- :class:`AttackConfig` and :func:`run_attack` (one batch), :func:`attack_dataset`
  (a loader, with the report of ``fastfn.attack.report``);
- the engine functions used by robust training and the evaluation
  (``fastfn.train.robust``, ``fastfn.evaluation``): :func:`search_features`,
  :func:`attack_batch`, :func:`apply_feature`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from fastfn.attack.acquisition import Acquisition, estimate_sens, from_batch
from fastfn.attack.engine import METHODS, AttackConfig, Candidates, Scorer, pgd, random_search, refine, run_attack
from fastfn.attack.features import FAMILIES, FeatureConfig, draw_supports, placement_region
from fastfn.attack.runner import attack_dataset
from fastfn.ops import insert_features

__all__ = ["AttackConfig", "FeatureConfig", "FAMILIES", "METHODS", "Acquisition", "from_batch", "estimate_sens",
           "run_attack", "attack_dataset", "random_search", "pgd", "refine", "Scorer", "Candidates",
           "draw_supports", "placement_region", "search_features", "attack_batch", "apply_feature"]


def search_features(model: nn.Module, batch: Mapping[str, Any], *, method: str, family: str = "random_walk",
                    size: tuple[float, float] = (10, 10), intensity: tuple[float, float] = (0.0, 1.0),
                    restarts: int = 1, steps: int = 0, step_size: float = 0.25, ring: int = 1,
                    generator: torch.Generator | None = None, **settings: Any) -> dict[str, torch.Tensor]:
    """The worst of ``restarts`` features per slice (robust training's inner search).

    Returns detached ``target``/``region`` (N, h, w), ``masked_kspace``, ``nmse`` (N,)
    and the feature ``index``/``values`` (N, P); see :func:`run_attack`.
    """
    cfg = AttackConfig.from_settings(settings, family=family, size=size, intensity=intensity, ring=ring,
                                     pgd_step_size=step_size)
    return run_attack(model, batch, cfg, method=method, generator=generator, restarts=restarts, steps=steps)


def attack_batch(model: nn.Module, batch: Mapping[str, Any], *, method: str = "random", settings: Any = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """:func:`run_attack` with settings given as any object/dict of AttackConfig's field names."""
    return run_attack(model, batch, AttackConfig.from_settings(settings), method=method, generator=generator)


def apply_feature(batch: Mapping[str, Any], index: torch.Tensor, values: torch.Tensor,
                  ring: int = 1) -> dict[str, torch.Tensor]:
    """Insert one given feature per slice (index/values (N, P)) into a batch.

    Returns the perturbed ``target`` and its ``region`` (N, h, w), the simulated
    ``masked_kspace`` and the ``zero_filled`` magnitude (N, h, w) of that acquisition.
    """
    acq = from_batch(batch)
    t = acq.targets
    pert, reg = insert_features(t, index[:, None].contiguous(), values[:, None].to(t.dtype).contiguous(), ring)
    delta = pert[:, 0] - t
    with torch.no_grad():
        k = acq.simulate(delta)
        zf = acq.zero_filled_magnitude() + acq.zero_filled_change(delta)
    return {"target": pert[:, 0], "region": reg[:, 0], "masked_kspace": k, "zero_filled": zf}
