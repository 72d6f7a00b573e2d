"""The figures of the robustness studies (PNG, written atomically with ``figures.save_figure``).

- ``map_slice<k>.png``: the susceptibility map of one slice overlaid on its target,
  the models side by side on one colour scale (log10 worst masked NMSE), false
  negatives outlined;
- ``map_hist.png``: the worst masked NMSE over all mapped locations, per model;
- ``detectability_heat.png``: FN rate over sizes x contrasts, the models side by side;
- ``contrast_detail.png``: the contrast-detail curves (smallest detected contrast per size);
- ``noise_<aim>.png``: NMSE / PSNR / SSIM against the noise level, adversarial (solid)
  beside random noise of the same norm (dashed), the zero-filled input in grey.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fastfn.evaluation.figures import save_figure

YARDSTICK = "zero-filled"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def map_slice_figure(target: np.ndarray, maps: Mapping[str, np.ndarray], fn: Mapping[str, np.ndarray],
                     fractions: Mapping[str, float], title: str, path: Path) -> Path:
    """One slice: target (h, w) with each model's map (h, w; NaN off the grid cells) of
    log10 worst masked NMSE on one colour scale, FN cells (h, w; 1 where FN) outlined."""
    plt = _plt()
    logs = {n: np.log10(np.clip(m, 1e-8, None)) for n, m in maps.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in logs.values()] or [np.zeros(1)])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-3.0, 0.0)
    if vmax <= vmin:
        vmax = vmin + 1e-3
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps) + 0.8, 3.6), squeeze=False)
    im = None
    for ax, (name, v) in zip(axes[0], logs.items()):
        ax.imshow(target, cmap="gray", vmin=0, vmax=float(target.max()) or 1.0)
        im = ax.imshow(np.ma.masked_invalid(v), cmap="inferno", vmin=vmin, vmax=vmax, alpha=0.65)
        f = np.nan_to_num(fn[name], nan=0.0)
        if f.any():
            ax.contour(f, levels=[0.5], colors="c", linewidths=0.6)
        ax.set_title(f"{name}\nFN over {100 * fractions[name]:.0f}% of the anatomy", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, label="log10 worst masked NMSE")
    fig.suptitle(title + " (FN cells outlined in cyan)", fontsize=9)
    return save_figure(fig, path)


def map_histogram_figure(edges: Sequence[float], counts: Mapping[str, Sequence[int]], threshold: float,
                         path: Path) -> Path:
    """Histogram of log10 worst masked NMSE over the mapped locations, one per model (shared bins)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    e = np.asarray(edges)
    for name, c in counts.items():
        ax.stairs(np.asarray(c), e, label=name, lw=1.4)
    ax.axvline(math.log10(threshold), color="k", ls="--", lw=1, label="FN threshold")
    ax.set_xlabel("log10 worst masked NMSE per location")
    ax.set_ylabel("locations")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def detectability_heat_figure(tables: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """FN rate per (size, contrast) cell, the models side by side on the scale 0..1."""
    plt = _plt()
    first = next(iter(tables.values()))
    sizes, contrasts = first["sizes"], first["contrasts"]
    fig, axes = plt.subplots(1, len(tables), figsize=(0.55 * len(contrasts) * len(tables) + 2.5,
                                                      0.45 * len(sizes) + 1.6), squeeze=False)
    im = None
    for ax, (name, tab) in zip(axes[0], tables.items()):
        rate = np.asarray(tab["fn_rate"], dtype=float)
        im = ax.imshow(rate, cmap="viridis", vmin=0, vmax=1, origin="lower", aspect="auto")
        for i in range(rate.shape[0]):
            for j in range(rate.shape[1]):
                ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if rate[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(contrasts)), [f"{c:g}" for c in contrasts], fontsize=7)
        ax.set_yticks(range(len(sizes)), [f"{s:g}" for s in sizes], fontsize=7)
        ax.set_xlabel("contrast", fontsize=8)
        ax.set_ylabel("feature size", fontsize=8)
        ax.set_title(f"{name}: FN rate", fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, label="false-negative rate")
    fig.suptitle("contrast: intensity as a fraction of the local tissue intensity", fontsize=8)
    return save_figure(fig, path)


def contrast_detail_figure(tables: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """The contrast-detail curves: per size, the smallest contrast detected on at least
    ``detect_rate`` of the slices; sizes detected at no contrast of the grid are marked
    above the largest contrast."""
    plt = _plt()
    first = next(iter(tables.values()))
    top = max(first["contrasts"]) * 1.5
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, tab in tables.items():
        sizes = np.asarray(tab["sizes"], dtype=float)
        curve = np.array([np.nan if c is None else c for c in tab["curve"]], dtype=float)
        line, = ax.plot(sizes, curve, marker="o", label=name)
        missing = np.isnan(curve)
        if missing.any():
            ax.scatter(sizes[missing], np.full(missing.sum(), top), marker="^", color=line.get_color())
    ax.axhline(top, color="0.7", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("feature size")
    ax.set_ylabel("smallest detected contrast")
    ax.set_title(f"contrast-detail (detected on >= {first['detect_rate']:g} of slices; "
                 f"triangles: not at any contrast)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def noise_figure(levels: Sequence[float], curves: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
                 metrics: Sequence[str], title: str, path: Path) -> Path:
    """Mean metrics against the noise level: ``curves[model][kind][metric]`` per level,
    kind "adversarial" (solid) and "random" (dashed); the zero-filled input in grey."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    x = np.asarray(levels, dtype=float)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        k = 0
        for name, c in curves.items():
            colour = "0.5" if name == YARDSTICK else colours[k % len(colours)]
            k += name != YARDSTICK
            ax.plot(x, c["adversarial"][metric], color=colour, marker="o", ms=3, label=f"{name} adversarial")
            ax.plot(x, c["random"][metric], color=colour, ls="--", marker=".", ms=3, label=f"{name} random")
        ax.set_xlabel("noise level ||e|| / ||m k||")
        ax.set_ylabel(metric)
        if metric.endswith("nmse"):
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
