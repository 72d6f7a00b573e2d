"""fastfn.attack: find the small features a reconstructor fails to reconstruct (FNAF).

Library entry points:

- :class:`AttackConfig` (the search) holding a :class:`FeatureConfig` (the allowed
  features), the one configuration of every attack in fastfn;
- :func:`run_attack` (one batch), :func:`attack_dataset` (a loader, with the report
  of ``fastfn.attack.report``);
- :func:`apply_feature`: insert a found feature into a batch again (figures).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from fastfn.attack.acquisition import Acquisition, estimate_sens, from_batch
from fastfn.attack.config import METHODS, AttackConfig
from fastfn.attack.engine import Candidates, Scorer, pgd, random_search, refine, run_attack
from fastfn.attack.features import FAMILIES, FeatureConfig, draw_supports, placement_region
from fastfn.attack.runner import attack_dataset
from fastfn.ops import insert_features

__all__ = ["AttackConfig", "FeatureConfig", "FAMILIES", "METHODS", "Acquisition", "from_batch", "estimate_sens",
           "run_attack", "attack_dataset", "random_search", "pgd", "refine", "Scorer", "Candidates",
           "draw_supports", "placement_region", "apply_feature"]


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
