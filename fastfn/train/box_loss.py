"""A trainer ``extra_loss`` on annotated boxes: the error where the pathology is.

Caliva, Cheng et al. (MELBA 2021) weighted the reconstruction loss inside annotated
lesion boxes; boxes come from fastMRI+-style CSVs (``fastfn.data.annotations``).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from fastfn.data.annotations import Box, batch_box_maps, index_boxes


def make_box_loss(boxes: Sequence[Box], weight: float = 1.0, kind: str = "l1"
                  ) -> Callable[[torch.nn.Module, Mapping, int], tuple[torch.Tensor, dict]]:
    """A trainer ``extra_loss`` that adds ``weight`` x the error inside the annotated boxes.

    Per batch: reconstruct the clean input (one extra forward), and take the L1
    (``kind="l1"``) or squared error (``"l2"``) averaged over the box pixels of the
    batch, normalised by the mean target intensity there so the weight does not
    depend on the data's scale. Batches without boxes contribute 0 (no forward).
    """
    if kind not in ("l1", "l2"):
        raise ValueError(f"make_box_loss: kind must be 'l1' or 'l2', got {kind!r}")
    if weight < 0:
        raise ValueError(f"make_box_loss: weight must be >= 0, got {weight}")
    index = index_boxes(boxes)

    def box_loss(model: torch.nn.Module, batch: Mapping, step: int
                 ) -> tuple[torch.Tensor, dict]:
        target = batch["target"]
        maps = batch_box_maps(batch, index, tuple(target.shape[-2:]), target.device)
        n = maps.sum()
        if n == 0:
            return target.new_zeros(()), {"box_loss": 0.0}
        pred = model(batch["masked_kspace"], batch["mask"], tuple(target.shape[-2:]))
        err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
        scale = (target.abs() * maps).sum() / n
        scale = scale if kind == "l1" else scale ** 2
        loss = (err * maps).sum() / n / scale.clamp_min(1e-12)
        return weight * loss, {"box_loss": float(loss.detach())}

    return box_loss
