"""Evaluation of a reconstructor over a dataset, in fastMRI's per-volume convention.

Per volume (METHOD.md §3), with ``max`` the volume's maximum (the batch's ``max``):
NMSE = ||gt - pred||^2 / ||gt||^2 over the volume, PSNR = 10 log10(max^2 / MSE)
with the MSE over the volume, SSIM = mean over slices of the 7x7-window SSIM with
data range ``max``. The same numbers are computed for the zero-filled input, the
baseline every reconstructor must beat. Slices are streamed: only per-slice sums are
kept, so a large validation set does not have to fit in memory. Under DDP every rank
evaluates its own volumes and the per-slice sums are gathered (slices duplicated by
a padding sampler count once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

from fastfn.train.distributed import DistInfo, all_gather_objects

METRICS = ("nmse", "psnr", "ssim")


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


def slice_stats(pred: torch.Tensor, target: torch.Tensor, maxval: torch.Tensor
                ) -> torch.Tensor:
    """Per-slice sums for the volume metrics.

    pred, target: real (B, h, w); maxval: (B,) the volume max of each slice's volume.
    Returns float64 (B, 4): squared error sum, squared target sum, pixel count, SSIM.
    """
    from fastfn.metrics import ssim

    pred, target = pred.float(), target.float()
    sse = ((target - pred) ** 2).flatten(1).sum(1, dtype=torch.float64)
    energy = (target ** 2).flatten(1).sum(1, dtype=torch.float64)
    count = torch.full_like(sse, float(target[0].numel()))
    s = torch.stack([ssim(target[i:i + 1], pred[i:i + 1], maxval=maxval[i]).reshape(())
                     for i in range(target.shape[0])]).to(torch.float64)
    return torch.stack([sse, energy, count, s], dim=1)


def volume_metrics(rows: Iterable[torch.Tensor], maxval: float) -> dict[str, float]:
    """Volume NMSE/PSNR/SSIM from per-slice ``slice_stats`` rows (4,) of one volume."""
    r = torch.stack(list(rows)).to(torch.float64)
    sse, energy, count = r[:, 0].sum().item(), r[:, 1].sum().item(), r[:, 2].sum().item()
    mse = sse / count
    return {"nmse": sse / energy if energy > 0 else math.nan,
            "psnr": 10.0 * math.log10(maxval ** 2 / mse) if mse > 0 else math.inf,
            "ssim": r[:, 3].mean().item(),
            "slices": int(r.shape[0])}


def _means(per_volume: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    if not per_volume:
        return {k: math.nan for k in METRICS}
    return {k: sum(v[k] for v in per_volume.values()) / len(per_volume) for k in METRICS}


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
    stats: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, float]] = {}
    panels: list[dict[str, Any]] = []
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            target = batch["target"]
            if target.numel() == 0:
                raise ValueError(f"evaluation needs targets; file {batch['fname'][0]} has none "
                                 f"(a test-set file?)")
            target = target.to(device)
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
            m, z = slice_stats(pred, target, maxval).cpu(), slice_stats(zf, target, maxval).cpu()
            for j, (fname, sl) in enumerate(zip(batch["fname"], batch["slice"].tolist())):
                stats[(str(fname), int(sl))] = (m[j], z[j], float(maxval[j]))
                if len(panels) < keep_panels:
                    panels.append({"fname": str(fname), "slice": int(sl),
                                   "target": target[j].cpu(), "zero_filled": zf[j].cpu(),
                                   "recon": pred[j].cpu()})
    finally:
        model.train(was_training)
    if dist.distributed:
        merged: dict[tuple[str, int], Any] = {}
        for part in all_gather_objects(stats, dist):
            merged.update(part)
        stats = merged
    if not stats:
        raise ValueError("evaluation saw no batch: the validation data is empty")
    by_volume: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    for (fname, _), value in sorted(stats.items()):
        by_volume.setdefault(fname, []).append(value)
    per_volume = {f: volume_metrics((v[0] for v in vals), vals[0][2])
                  for f, vals in by_volume.items()}
    zf_volume = {f: volume_metrics((v[1] for v in vals), vals[0][2])
                 for f, vals in by_volume.items()}
    return EvalResult(per_volume, _means(per_volume), zf_volume, _means(zf_volume), panels)
