"""Evaluation of a reconstructor over a dataset, in fastMRI's per-volume convention.

Per volume (docs/METHOD.md section 3), with ``max`` the volume's maximum (the batch's ``max``):
NMSE = ||gt - pred||^2 / ||gt||^2 over the volume, PSNR = 10 log10(max^2 / MSE)
with the MSE over the volume, SSIM = mean over slices of the 7x7-window SSIM with
data range ``max``. The same numbers are computed for the zero-filled input, the
baseline every reconstructor must beat. Slices are streamed: only per-slice sums are
kept (``fastfn.metrics.VolumeMetrics``), so a large validation set does not have to
fit in memory. Under DDP every rank evaluates its own volumes and the accumulators
are gathered (slices duplicated by a padding sampler count once).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

from fastfn.metrics import VolumeMetrics
from fastfn.train.distributed import DistInfo, all_gather_objects


@dataclass
class EvalResult:
    """``per_volume[fname] = {"nmse", "psnr", "ssim", "slices"}`` and their means, for the
    model and for the zero-filled baseline; ``panels``: a few slices kept for plotting."""
    per_volume: dict[str, dict[str, float]]
    mean: dict[str, float]
    zero_filled_per_volume: dict[str, dict[str, float]]
    zero_filled_mean: dict[str, float]
    panels: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"model": {"mean", "per_volume"}, "zero_filled": {...}}``."""
        return {"model": {"mean": self.mean, "per_volume": self.per_volume},
                "zero_filled": {"mean": self.zero_filled_mean,
                                "per_volume": self.zero_filled_per_volume},
                "volumes": len(self.per_volume),
                "slices": int(sum(v["slices"] for v in self.per_volume.values()))}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[Mapping[str, Any]], device: torch.device,
             *, max_batches: int | None = None, keep_panels: int = 0,
             dist: DistInfo | None = None, autocast_dtype: torch.dtype | None = None
             ) -> EvalResult:
    """Evaluate ``model`` (a Reconstructor) over ``loader``'s batches (fastfn batch dicts).

    Every batch needs a non-empty ``target``; the output is requested at the target's
    size. ``max_batches`` limits the batches per rank; ``keep_panels`` keeps that many
    slices (target, zero-filled, reconstruction on CPU) for PNG panels.
    Raises ValueError when the loader yields no batch or a batch without a target.
    """
    dist = dist or DistInfo(device=device)
    was_training = model.training
    model.eval()
    acc, acc_zf = VolumeMetrics(), VolumeMetrics()
    panels: list[dict[str, Any]] = []
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            target = batch["target"]
            if target.numel() == 0:
                raise ValueError(f"evaluation needs targets; file {batch['fname'][0]} has none "
                                 f"(a test-set file?)")
            target = target.to(device).float()
            kspace, mask = batch["masked_kspace"].to(device), batch["mask"].to(device)
            maxval = batch["max"].to(device=device, dtype=torch.float32)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                pred = model(kspace, mask, crop_size=tuple(target.shape[-2:]))
            pred = pred.float()
            zf = batch["zero_filled"].to(device).float()
            if zf.shape != target.shape:
                raise ValueError(f"zero_filled has shape {tuple(zf.shape)} but target "
                                 f"{tuple(target.shape)} (file {batch['fname'][0]})")
            names = [str(f) for f in batch["fname"]]
            acc.update(pred, target, names, batch["slice"], maxval)
            acc_zf.update(zf, target, names, batch["slice"], maxval)
            seen += target.shape[0]
            for j in range(min(keep_panels - len(panels), target.shape[0])):
                panels.append({"fname": names[j], "slice": int(batch["slice"][j]),
                               "target": target[j].cpu(), "zero_filled": zf[j].cpu(),
                               "recon": pred[j].cpu()})
    finally:
        model.train(was_training)
    if dist.distributed:
        for a in (acc, acc_zf):
            for j, state in enumerate(all_gather_objects(a.state(), dist)):
                if j != dist.rank:
                    a.merge(state)
    if len(acc) == 0:
        raise ValueError("evaluation saw no batch: the validation data is empty")
    per_volume, zf_volume = acc.compute(), acc_zf.compute()
    return EvalResult(per_volume, _means(acc, per_volume), zf_volume, _means(acc_zf, zf_volume),
                      panels)


def _means(acc: VolumeMetrics, per_volume: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: float(v) for k, v in acc.summary(per_volume).items() if k != "volumes"}


__all__ = ["EvalResult", "evaluate"]
