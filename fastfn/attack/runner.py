"""Attack a whole data set: batches through the engine, per-slice records, summary.

The search of each batch stays on the device; per-slice numbers are copied to the
host once per batch, after the search (they are the output).
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from fastfn.attack.config import AttackConfig
from fastfn.attack.engine import run_attack
from fastfn.data.transforms import zero_filled_magnitude
from fastfn.seeding import derive_seed, seeded_generator

#: keeps attack_dataset's draws apart from robust training's (step, 7919) draws of one seed
DATASET_STREAM = 17


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of batch ``batch_index``'s feature draws: results do not depend on what ran before."""
    return derive_seed(seed, (batch_index, 7919), (DATASET_STREAM, 1))


def attack_dataset(model: nn.Module, batches: Iterable[Mapping[str, Any]], cfg: AttackConfig,
                   device: str | torch.device = "cpu", keep_worst: int = 0,
                   max_slices: int | None = None, progress: Any = None, *,
                   rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Run the attack over ``batches`` (batch dicts of the architecture contract).

    Args:
        model: the reconstructor (moved to ``device``, put in eval mode during the search).
        batches: an iterable of batches (e.g. a DataLoader with fastfn.data.collate).
        cfg: the attack (method, budget, features); see :func:`fastfn.attack.run_attack`.
        device: where the search runs.
        keep_worst: keep images of the K worst slices for the report's panels
            (one extra, untimed model forward per batch when > 0).
        max_slices: stop after this many slices (counted over all ranks).
        progress: optional object with ``update(n)`` (e.g. tqdm).
        rank, world_size: this process's share of a sharded run: it attacks batches
            ``b`` with ``b % world_size == rank`` of the same batch sequence every rank
            iterates, each with the seed of its global index ``b``, so the union of the
            ranks' results (:func:`merge_results`) is the single-process result.

    Returns a dict: ``records`` (one dict per slice: batch, fname, slice, worst_nmse,
    info_mse, info_preserved, fn, feature rows/cols/values), ``summary`` (see
    :func:`fastfn.attack.report.summarize`), ``worst`` (list of image dicts for panels).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"attack_dataset: rank {rank} outside world size {world_size}")
    device = torch.device(device)
    model = model.to(device)
    records: list[dict[str, Any]] = []
    worst: list[dict[str, Any]] = []
    seconds, evals, n_features, seen = 0.0, 0, 0, 0
    for b, batch in enumerate(batches):
        if max_slices is not None and seen >= max_slices:
            break
        first, seen = seen, seen + len(batch["fname"])
        if b % world_size != rank:
            continue
        batch = _to(batch, device)
        g = seeded_generator(batch_seed(cfg.seed, b), device)
        _sync(device)
        t0 = time.perf_counter()
        r = run_attack(model, batch, cfg, generator=g)
        _sync(device)
        seconds += time.perf_counter() - t0
        evals += int(r["model_evals"])
        N = r["worst_nmse"].shape[0]
        n_features += N * cfg.restarts
        host = {k: r[k].detach().cpu() for k in ("worst_nmse", "info_mse", "info_preserved", "fn", "index", "values")}
        w = r["target"].shape[-1]
        start = len(records)
        for j in range(N):
            if max_slices is not None and first + j >= max_slices:
                break
            idx = host["index"][j]
            keep = idx >= 0
            records.append({
                "batch": b,
                "fname": str(batch["fname"][j]),
                "slice": int(batch["slice"][j]),
                "worst_nmse": float(host["worst_nmse"][j]),
                "info_mse": float(host["info_mse"][j]),
                "info_preserved": bool(host["info_preserved"][j]),
                "fn": bool(host["fn"][j]),
                "feature_rows": (idx[keep] // w).tolist(),
                "feature_cols": (idx[keep] % w).tolist(),
                "feature_values": [round(float(v), 7) for v in host["values"][j][keep]],
            })
        if keep_worst > 0:
            worst = _keep_worst(model, batch, r, worst, keep_worst, records[start:])
        if progress is not None:
            progress.update(N)
    part = {"records": records, "worst": worst, "seconds": seconds, "evals": evals,
            "features": n_features, "world_size": world_size}
    return merge_results([part], cfg, device, keep_worst) if world_size == 1 else part


def merge_results(parts: Sequence[Mapping[str, Any]], cfg: AttackConfig, device: torch.device | str,
                  keep_worst: int = 0) -> dict[str, Any]:
    """The result of a whole run from the parts of its ranks (each :func:`attack_dataset`
    with its ``rank``): records in the single-process order, the summary, the worst cases.
    Times are the slowest rank's (the wall time of the run)."""
    from fastfn.attack.report import summarize
    records = sorted((r for p in parts for r in p["records"]), key=lambda r: r["batch"])
    worst = sorted((w for p in parts for w in p["worst"]), key=lambda c: -c["worst_nmse"])[:keep_worst]
    seconds = max(p["seconds"] for p in parts)
    evals = sum(p["evals"] for p in parts)
    summary = summarize(records, cfg.threshold)
    summary.update({"method": cfg.method, "model_evals": evals, "attack_seconds": seconds,
                    "features_evaluated": sum(p["features"] for p in parts),
                    "features_per_second": sum(p["features"] for p in parts) / seconds if seconds > 0 else math.nan,
                    "model_evals_per_second": evals / seconds if seconds > 0 else math.nan,
                    "slices_per_second": len(records) / seconds if seconds > 0 else math.nan,
                    "config": cfg.to_dict(), "device": str(device), "world_size": len(parts)})
    return {"records": records, "summary": summary, "worst": worst}


@torch.no_grad()
def _keep_worst(model: nn.Module, batch: Mapping[str, Any], r: Mapping[str, torch.Tensor],
                worst: list[dict[str, Any]], k: int, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge this batch's winners into the K worst cases, with the images for a panel."""
    floor = min((c["worst_nmse"] for c in worst), default=-math.inf) if len(worst) >= k else -math.inf
    order = torch.argsort(r["worst_nmse"], descending=True).tolist()
    pick = [j for j in order if j < len(recs) and float(r["worst_nmse"][j]) > floor][:k]
    if not pick:
        return worst
    sel = torch.tensor(pick, device=r["target"].device)
    h, w = r["target"].shape[-2:]
    k_sel = r["masked_kspace"].index_select(0, sel)
    mask = batch["mask"].index_select(0, sel)
    recon = model(k_sel, mask, (h, w)).float()
    zf = zero_filled_magnitude(k_sel, (h, w))
    for n, j in enumerate(pick):
        worst.append({**recs[j], "target_img": r["target"][j].cpu(), "region_img": r["region"][j].cpu(),
                      "zero_filled_img": zf[n].cpu(), "recon_img": recon[n].cpu()})
    worst.sort(key=lambda c: -c["worst_nmse"])
    return worst[:k]
