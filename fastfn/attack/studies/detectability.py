"""Contrast-detail (detectability): false negatives over a grid of feature sizes and contrasts.

docs/METHOD.md section 7: for sizes s (the family's unit: random-walk steps, disk
radius in pixels, ...) and contrasts c (the intensity as a fraction of the mean
tissue intensity under the feature: ``FeatureConfig(intensity_mode="local",
intensity=(c, c))``), the attack of section 5 at that size and contrast; per cell
the FN rate with its 95% Wilson interval, the mean worst masked NMSE and the
information-preserved rate.

Every cell of one batch is exactly ``run_attack(model, batch, cell_config(cfg, s, c),
generator)`` with the generator seeded by :func:`cell_seed` from (seed, batch, size
index) only: every model and every contrast of a size see the same supports and
locations, so along a row of the table only the contrast changes.

The curve a radiologist reads: per size, the smallest contrast at which the worst
feature is *detected* (information preserved and not a false negative) on at least
``detect_rate`` of the slices. A feature the undersampling erased (information not
preserved) is neither a false negative nor detected. The masked NMSE of a feature
that the model drops and nothing else is below (c / (1 + c))^2 (T also holds the
tissue under the feature), so with threshold t, dropping a feature of contrast
below sqrt(t) / (1 - sqrt(t)) is not a false negative: c < 0.033 at METHOD's 1e-3,
c < 0.81 at the demo's 0.2. Read the curve together with the threshold.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from fastfn.attack.config import AttackConfig
from fastfn.attack.engine import run_attack
from fastfn.attack.report import wilson_interval
from fastfn.seeding import derive_seed, seeded_generator

#: keeps the contrast-detail draws apart from the other draws of one seed
DETECT_STREAM = 29


def check_grid(sizes: Sequence[float], contrasts: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validated (sizes, contrasts) as float tuples: both non-empty, sizes > 0, contrasts > 0, no repeats."""
    sizes, contrasts = tuple(float(s) for s in sizes), tuple(float(c) for c in contrasts)
    for name, vals in (("sizes", sizes), ("contrasts", contrasts)):
        if not vals:
            raise ValueError(f"contrast-detail: no {name} given")
        if any(not math.isfinite(v) or v <= 0 for v in vals):
            raise ValueError(f"contrast-detail: {name} must be finite and > 0, got {list(vals)}")
        if len(set(vals)) != len(vals):
            raise ValueError(f"contrast-detail: {name} repeat a value: {list(vals)}")
    return sizes, contrasts


def faintest_missable(threshold: float) -> float:
    """The smallest contrast a false negative can have at ``threshold``: a feature of
    contrast c that the model drops leaves a masked NMSE of about (c / (1 + c))^2, so
    below sqrt(t) / (1 - sqrt(t)) even a dropped feature is not a false negative."""
    r = math.sqrt(threshold)
    return r / (1 - r) if r < 1 else math.inf


def check_contrasts(contrasts: Sequence[float], threshold: float) -> None:
    """Refuse contrasts a false negative cannot have at ``threshold`` (their cells would
    count as detected whatever the model does)."""
    low = faintest_missable(threshold)
    faint = [c for c in contrasts if c < low]
    if faint:
        raise ValueError(f"contrast-detail: contrasts {faint} are below {low:.3g}, the faintest contrast that "
                         f"can be a false negative at threshold {threshold:g} (a dropped feature of contrast c "
                         f"leaves a masked NMSE of about (c/(1+c))^2): raise them or lower the threshold")


def cell_config(cfg: AttackConfig, size: float, contrast: float) -> AttackConfig:
    """The attack of one cell: features of exactly ``size`` at exactly ``contrast``
    times the local tissue intensity; everything else as in ``cfg``."""
    return cfg.replace(size=(size, size), intensity_mode="local", intensity=(contrast, contrast))


def cell_seed(seed: int, batch_index: int, size_index: int) -> int:
    """Seed of the draws of batch ``batch_index`` at size ``size_index`` (every contrast alike)."""
    return derive_seed(seed, (batch_index, 101), (size_index, 7_741), (DETECT_STREAM, 1))


def contrast_detail_batch(model: nn.Module, batch: Mapping[str, Any], cfg: AttackConfig,
                          sizes: Sequence[float], contrasts: Sequence[float], *, batch_index: int = 0,
                          progress: Callable[[int], Any] | None = None) -> dict[str, torch.Tensor]:
    """Every (size, contrast) cell of one batch.

    Args:
        model: a Reconstructor.
        batch: a batch of the architecture contract (N slices).
        cfg: the attack (family, method, budget, threshold, placement; its size and
            intensity settings are replaced per cell).
        sizes, contrasts: the grid (S sizes, C contrasts).
        batch_index: position of the batch in the evaluated data (seeds the draws).
        progress: called with 1 after each cell (e.g. a tqdm bar's ``update``).

    Returns (S, C, N) tensors on the CPU: ``worst_nmse``, ``info_preserved``, ``fn``,
    and ``model_evals`` (int).
    """
    sizes, contrasts = check_grid(sizes, contrasts)
    cfgs = [[cell_config(cfg, s, c) for c in contrasts] for s in sizes]  # validates before the model runs
    device = batch["target"].device if torch.is_tensor(batch.get("target")) else batch["kspace"].device
    worst, info, fn = [], [], []
    evals = 0
    for i, row in enumerate(cfgs):
        w_row, i_row, f_row = [], [], []
        for c_cfg in row:
            g = seeded_generator(cell_seed(cfg.seed, batch_index, i), device)
            r = run_attack(model, batch, c_cfg, g)
            w_row.append(r["worst_nmse"].detach().cpu())
            i_row.append(r["info_preserved"].detach().cpu())
            f_row.append(r["fn"].detach().cpu())
            evals += int(r["model_evals"])
            if progress is not None:
                progress(1)
        worst.append(torch.stack(w_row))
        info.append(torch.stack(i_row))
        fn.append(torch.stack(f_row))
    return {"worst_nmse": torch.stack(worst), "info_preserved": torch.stack(info), "fn": torch.stack(fn),
            "model_evals": evals}


def contrast_detail_table(worst_nmse: torch.Tensor, info_preserved: torch.Tensor, fn: torch.Tensor,
                          sizes: Sequence[float], contrasts: Sequence[float],
                          detect_rate: float = 0.5) -> dict[str, Any]:
    """The table and the curve from per-slice results (S, C, N) (several batches
    concatenated along N).

    Returns ``{"sizes", "contrasts", "detect_rate", "n_slices", "cells": [{"size",
    "contrast", "n_slices", "fn_count", "fn_rate", "fn_rate_ci95" (Wilson),
    "mean_worst_nmse", "info_preserved_rate", "detected_rate"}, ...] (size-major),
    "fn_rate" / "mean_worst_nmse" / "detected_rate": S x C nested lists,
    "curve": [smallest detected contrast per size, or None]}``.
    """
    sizes, contrasts = check_grid(sizes, contrasts)
    if not 0 < detect_rate <= 1:
        raise ValueError(f"contrast-detail: detect_rate must be in (0, 1], got {detect_rate}")
    S, C, N = fn.shape
    if (S, C) != (len(sizes), len(contrasts)):
        raise ValueError(f"contrast-detail: results of shape {(S, C)} for {len(sizes)} sizes x "
                         f"{len(contrasts)} contrasts")
    cells = []
    grids: dict[str, list[list[float]]] = {"fn_rate": [], "mean_worst_nmse": [], "detected_rate": []}
    curve: list[float | None] = []
    for i, s in enumerate(sizes):
        for key in grids:
            grids[key].append([])
        detected_at = []
        for j, c in enumerate(contrasts):
            f, inf, w = fn[i, j], info_preserved[i, j], worst_nmse[i, j].double()
            k = int(f.sum())
            lo, hi = wilson_interval(k, N)
            det = float((inf & ~f).double().mean()) if N else math.nan
            cell = {"size": s, "contrast": c, "n_slices": N, "fn_count": k,
                    "fn_rate": k / N if N else math.nan, "fn_rate_ci95": [lo, hi],
                    "mean_worst_nmse": float(w.mean()) if N else math.nan,
                    "info_preserved_rate": float(inf.double().mean()) if N else math.nan,
                    "detected_rate": det}
            cells.append(cell)
            for key in grids:
                grids[key][-1].append(cell[key])
            if N and det >= detect_rate:
                detected_at.append(c)
        curve.append(min(detected_at) if detected_at else None)
    return {"sizes": list(sizes), "contrasts": list(contrasts), "detect_rate": detect_rate, "n_slices": N,
            "cells": cells, **grids, "curve": curve}
