"""The robustness evaluation protocol: clean quality and false negatives of several models.

For every mask setting and every model, on the same slices:

- clean NMSE / PSNR / SSIM per volume in the fastMRI convention (the evaluation loop
  of ``fastfn.train.evaluate``);
- the false-negative (FN) rate with its 95% Wilson interval, the information-
  preserved rate and the distribution of the worst masked NMSE per slice, under each
  attack method (``fastfn.attack``; by default random search and the gradient attack).

Every model sees the same feature draws: the generator of batch ``b`` of mask
``m`` and method ``a`` is seeded from ``(seed, m, b, a)`` only, so random search
scores every model on identical features and the gradient attack starts every
model from identical random supports and intensities.

Outputs in ``out``: ``robustness.json``, ``robustness.md`` (``fastfn.evaluation.tables``)
and the figures of ``fastfn.evaluation.figures``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import torch

from fastfn.attack import METHODS, AttackConfig, run_attack
from fastfn.attack.report import wilson_interval
from fastfn.data import SliceDataset, collate, default_data, parse_mask_spec, split_mask_specs
from fastfn.data.transforms import KspaceTransform
from fastfn.evaluation.figures import protocol_figures
from fastfn.evaluation.models import load_models
from fastfn.evaluation.tables import markdown_table
from fastfn.fileio import atomic_write_bytes
from fastfn.seeding import derive_seed, seeded_generator
from fastfn.train.distributed import DistInfo, all_gather_objects
from fastfn.train.evaluate import evaluate

#: the attack methods the protocol runs by default
DEFAULT_ATTACKS = ("random", "pgd")

#: the attack budget of the protocol unless given: the authors' random search (11
#: random walks of 10 steps per slice) and 4 x 10 gradient steps
DEFAULT_ATTACK = AttackConfig()

#: where evaluated slices come from: a folder, a file or a list of files of fastMRI
#: volumes; None: the synthetic validation set
DataSource = Union[str, Path, Sequence[Union[str, Path]], None]


@dataclass
class ModelResult:
    """One model under one mask: clean metrics, per-method statistics and, per method,
    the worst feature of every slice (index/values on the CPU, for the figures)."""
    clean: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)


def batch_seed(seed: int, mask_index: int, batch_index: int, method: str) -> int:
    """The seed of one (mask, batch, method) draw of the protocol."""
    return derive_seed(seed, (mask_index, 10_007), (batch_index, 101), (METHODS.index(method), 1))


def slice_stats(worst: torch.Tensor, info: torch.Tensor, fn: torch.Tensor) -> dict[str, Any]:
    """Summary of one (model, mask, method): per-slice worst NMSE, info flags, FN flags (S,)."""
    n, k = int(fn.numel()), int(fn.sum())
    lo, hi = wilson_interval(k, n)
    w = worst.double()
    return {"n_slices": n, "fn_count": k, "fn_rate": k / n if n else math.nan,
            "fn_rate_ci95": [lo, hi],
            "info_preserved_rate": float(info.double().mean()) if n else math.nan,
            "mean_worst_nmse": float(w.mean()) if n else math.nan,
            "median_worst_nmse": float(w.median()) if n else math.nan,
            "p90_worst_nmse": float(w.quantile(0.9)) if n else math.nan,
            "worst_nmse": [float(v) for v in w],
            "info_preserved": [bool(v) for v in info]}


def fn_rate_at(stats: Mapping[str, Any], threshold: float) -> float:
    """The FN rate of one result of the protocol at another threshold (from its per-slice
    worst masked NMSE and information-preserved flags)."""
    flags = [w >= threshold and i for w, i in zip(stats["worst_nmse"], stats["info_preserved"])]
    return sum(flags) / len(flags) if flags else math.nan


def clean_metrics(model: torch.nn.Module, batches: Sequence[Mapping[str, Any]],
                  device: torch.device) -> dict[str, Any]:
    """fastMRI per-volume NMSE/PSNR/SSIM of ``model`` over ``batches``, their means and
    the zero-filled input's means (each mean with its number of ``volumes``)."""
    r = evaluate(model, batches, device)
    n = len(r.per_volume)
    return {"mean": {**r.mean, "volumes": n}, "per_volume": r.per_volume,
            "zero_filled_mean": {**r.zero_filled_mean, "volumes": n}}


def attack_model(model: torch.nn.Module, batches: Sequence[Mapping[str, Any]], cfg: AttackConfig,
                 mask_index: int, device: torch.device, progress: Any = None,
                 dist: DistInfo | None = None) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    """One attack (``cfg.method``) over all batches with the protocol's seeds: its
    statistics and the worst feature of every slice.

    Under ``dist`` (several processes), rank r attacks batches ``i % world_size == r``
    with the seeds of their global index and every rank receives all results, so the
    statistics equal the single-process ones.
    """
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    mine: dict[int, dict[str, Any]] = {}
    for i, b in enumerate(batches):
        if i % world != rank:
            continue
        g = seeded_generator(batch_seed(cfg.seed, mask_index, i, cfg.method), device)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        r = run_attack(model, batch, cfg, g)
        mine[i] = {k: r[k].detach().cpu() for k in ("worst_nmse", "info_preserved", "fn", "index", "values")}
        if progress is not None:
            progress.update(len(b["fname"]))
    per_batch = mine
    if world > 1:
        per_batch = {i: r for part in all_gather_objects(mine, dist) for i, r in part.items()}
    order = [per_batch[i] for i in range(len(batches))]
    feats = [{"index": r["index"][j], "values": r["values"][j]} for r in order for j in range(len(r["fn"]))]
    stats = slice_stats(*(torch.cat([r[k] for r in order]) for k in ("worst_nmse", "info_preserved", "fn")))
    return stats, feats


def evaluate_robustness(models: Sequence[Any], data: DataSource, masks: str | Sequence[str],
                        out: str | Path, *, attack: AttackConfig | None = None,
                        attacks: Sequence[str] = DEFAULT_ATTACKS, max_slices: int | None = 64,
                        batch_size: int = 8, device: str | torch.device = "cpu",
                        progress: bool = True, names: Sequence[str] | None = None,
                        load_batches: Callable[..., list[dict[str, Any]]] | None = None,
                        dist: DistInfo | None = None, warnings: Sequence[str] = ()
                        ) -> dict[str, Any] | None:
    """Evaluate several models with the protocol; write JSON, Markdown and figures.

    Args:
        models: checkpoint paths (``fastfn.train.load_reconstructor``) or
            ``(name, reconstructor)`` pairs.
        data: a folder, file or list of files of fastMRI ``.h5`` volumes; None: the
            synthetic default (validation split).
        masks: mask settings, e.g. ``"random:4x@0.08,random:8x@0.04"`` or a list.
        out: output folder (created).
        attack: the attack budget and features (default :data:`DEFAULT_ATTACK`); its
            ``method`` is replaced by each of ``attacks`` in turn.
        attacks: the attack methods to run (of ``fastfn.attack.METHODS``).
        max_slices: evaluate at most this many slices (the first ones, in file
            order; None: all).
        names: display names of the models (default: the checkpoint file's
            parent folder and stem, or the given pair's name).
        load_batches: ``fn(data, mask_spec, batch_size, max_slices) -> list of
            batch dicts`` (default :func:`default_load_batches`).
        dist: the process group of a ``torchrun`` launch (``fastfn.train.distributed``):
            the attacks are sharded by batch across its ranks (same draws per slice as
            one process); rank 0 alone computes the clean metrics and writes the report
            (``"world_size"`` in it); the other ranks return None.
        warnings: notes the report carries (e.g. a contaminated evaluation split).

    Returns the dict written to ``robustness.json``:
    ``{"attack", "models", "masks", "attacks", "data", "results": {mask: {model:
    {"clean": {...}, "<method>": {...}}}}, "figures", "world_size", "warnings"}``.
    """
    from tqdm.auto import tqdm
    attack = attack or DEFAULT_ATTACK
    device = torch.device(device)
    mask_specs = split_mask_specs(masks) if isinstance(masks, str) else list(masks)
    for a in attacks:
        if a not in METHODS:
            raise ValueError(f"attacks: unknown attack {a!r}; choose from {METHODS}")
    loader = load_batches or default_load_batches
    loaded = load_models(models, names, device)
    main = dist is None or dist.is_main
    out = Path(out)
    if main:
        out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Any]] = {}
    figures: list[str] = []
    for mi, spec in enumerate(mask_specs):
        batches = loader(data, spec, batch_size, max_slices)
        n_slices = sum(len(b["fname"]) for b in batches)
        if n_slices == 0:
            raise ValueError(f"no slices to evaluate in {data} with mask {spec}")
        per_model: dict[str, ModelResult] = {}
        for name, model in loaded.items():
            res = ModelResult(clean=clean_metrics(model, batches, device) if main else {})
            for method in attacks:
                bar = tqdm(total=n_slices, desc=f"{spec} {name} {method}", unit="slice",
                           disable=not (progress and main), dynamic_ncols=True)
                try:
                    stats, feats = attack_model(model, batches, attack.replace(method=method), mi,
                                                device, bar, dist)
                finally:
                    bar.close()
                res.attacks[method], res.features[method] = stats, feats
            per_model[name] = res
        results[spec] = {name: {"clean": r.clean, **r.attacks} for name, r in per_model.items()}
        if main:
            figures += protocol_figures(per_model, loaded, batches, spec, attack, out, device)
    if not main:
        return None

    report = {"attack": attack.to_dict(), "models": list(loaded), "masks": mask_specs,
              "attacks": list(attacks), "data": describe_source(data),
              "results": results, "figures": figures,
              "world_size": dist.world_size if dist is not None else 1, "warnings": list(warnings)}
    atomic_write_bytes(out / "robustness.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "robustness.md", markdown_table(report).encode())
    return report


def data_source(data: DataSource) -> Path | list[Path]:
    """A folder, a file or a list of files of fastMRI volumes (None: the synthetic
    validation set), checked to exist."""
    if data is None:
        return default_data("val")
    paths = [Path(p).expanduser() for p in data] if isinstance(data, (list, tuple)) else [Path(data).expanduser()]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"data {p} does not exist")
    return paths if isinstance(data, (list, tuple)) else paths[0]


def describe_source(data: DataSource) -> str:
    """How a report names its data: the folder, or the number of files and their folder."""
    if data is None:
        return "synthetic"
    if isinstance(data, (list, tuple)):
        return f"{len(data)} files in {Path(data[0]).parent}" if data else "no files"
    return str(data)


def default_load_batches(data: DataSource, mask_spec: str, batch_size: int,
                         max_slices: int | None) -> list[dict[str, Any]]:
    """The first ``max_slices`` slices of ``data`` (default: synthetic validation set)
    under ``mask_spec`` (fastMRI's per-volume mask seeds), as collated batches in memory."""
    ds = SliceDataset(data_source(data), transform=KspaceTransform(parse_mask_spec(mask_spec), use_seed=True))
    n = len(ds) if max_slices is None else min(len(ds), max_slices)
    idx = list(range(n))
    return [collate([ds[i] for i in idx[s:s + batch_size]]) for s in range(0, n, batch_size)]
