"""The figures of the evaluation reports (PNG, written atomically).

- ``nmse_<mask>.png``: the worst masked-NMSE distributions of every model, overlaid,
  per attack method, with the false-negative threshold;
- ``worst_<mask>.png``: the feature that was worst against the first model,
  reconstructed by every model side by side, full view and zoom with T outlined.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from fastfn.attack import AttackConfig, apply_feature
from fastfn.fileio import atomic_write
from fastfn.losses import masked_nmse


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def protocol_figures(per_model: Mapping[str, Any], models: Mapping[str, torch.nn.Module],
                     batches: Sequence[Mapping[str, Any]], spec: str, attack: AttackConfig,
                     out: Path, device: torch.device) -> list[str]:
    """The protocol's figures of one mask: the worst masked-NMSE distributions
    (``nmse_<mask>.png``) and the worst-case feature of the first model reconstructed by
    every model (``worst_<mask>.png``). per_model: name -> ``protocol.ModelResult``.
    Returns the file names written."""
    import matplotlib
    matplotlib.use("Agg")
    written = [_distribution_figure(per_model, spec, attack.threshold, out / f"nmse_{_slug(spec)}.png")]
    first = next(iter(per_model.values()))
    method = "pgd" if "pgd" in first.attacks else next(iter(first.attacks), None)
    if method is not None:
        written.append(_worst_case_figure(per_model, models, batches, spec, method, attack.features.ring,
                                          out / f"worst_{_slug(spec)}.png", device))
    return [str(p.name) for p in written]


def _distribution_figure(per_model: Mapping[str, Any], spec: str, threshold: float,
                         path: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np
    methods = list(next(iter(per_model.values())).attacks)
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        vals = {n: np.log10(np.clip(np.asarray(r.attacks[method]["worst_nmse"]), 1e-8, None))
                for n, r in per_model.items()}
        lo = min(v.min() for v in vals.values())
        hi = max(max(v.max() for v in vals.values()), math.log10(threshold))
        bins = np.linspace(lo - 0.1, hi + 0.1, 30)
        for n, v in vals.items():
            fn = per_model[n].attacks[method]["fn_rate"]
            ax.hist(v, bins=bins, alpha=0.5, label=f"{n} (FN {fn:.2f})")
        ax.axvline(math.log10(threshold), color="k", ls="--", lw=1, label="FN threshold")
        ax.set_xlabel("log10 worst masked NMSE per slice")
        ax.set_ylabel("slices")
        ax.set_title(f"{method} attack, {spec}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


@torch.no_grad()
def _worst_case_figure(per_model: Mapping[str, Any],
                       models: Mapping[str, torch.nn.Module], batches: Sequence[Mapping[str, Any]],
                       spec: str, method: str, ring: int, path: Path, device: torch.device) -> Path:
    """The feature that was worst against the first model, reconstructed by every model."""
    import matplotlib.pyplot as plt
    first = next(iter(per_model.values()))
    worst = torch.tensor(first.attacks[method]["worst_nmse"])
    s = int(worst.argmax())
    # locate slice s in the batches
    for b in batches:
        if s < len(b["fname"]):
            break
        s -= len(b["fname"])
    one = {k: (v[s:s + 1].to(device) if isinstance(v, torch.Tensor) and v.dim() > 0
               and v.shape[0] == len(b["fname"]) else v) for k, v in b.items()}
    one["fname"], one["slice"] = [b["fname"][s]], b["slice"][s:s + 1]
    feat = first.features[method][int(worst.argmax())]
    sim = apply_feature(one, feat["index"][None].to(device), feat["values"][None].to(device), ring=ring)
    target, region, kspace = sim["target"], sim["region"], sim["masked_kspace"]
    zf = sim["zero_filled"]
    recons = {n: m(kspace, one["mask"], tuple(target.shape[-2:])) for n, m in models.items()}
    ys, xs = torch.nonzero(region[0] > 0, as_tuple=True)
    cy, cx = int(ys.float().mean()), int(xs.float().mean())
    half = max(16, int(max(ys.max() - ys.min(), xs.max() - xs.min())) + 8)
    h, w = target.shape[-2:]
    top, left = max(0, min(cy - half, h - 2 * half)), max(0, min(cx - half, w - 2 * half))
    crop = (slice(top, top + 2 * half), slice(left, left + 2 * half))
    vmax = float(target[0].max())
    cols = [("target + feature", target[0]), ("zero-filled", zf[0])]
    cols += [(f"{n}\nmasked NMSE {float(masked_nmse(r, target, region)[0]):.2e}", r[0])
             for n, r in recons.items()]
    fig, axes = plt.subplots(2, len(cols), figsize=(2.6 * len(cols), 5.4), squeeze=False)
    outline = region[0].cpu().numpy()
    for j, (title, img) in enumerate(cols):
        a = img.detach().float().cpu().numpy()
        axes[0, j].imshow(a, cmap="gray", vmin=0, vmax=vmax)
        axes[0, j].set_title(title, fontsize=8)
        axes[1, j].imshow(a[crop], cmap="gray", vmin=0, vmax=vmax)
        axes[1, j].contour(outline[crop], levels=[0.5], colors="r", linewidths=0.6)
        for ax in axes[:, j]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].add_patch(plt.Rectangle((left, top), 2 * half, 2 * half, fill=False, ec="y", lw=0.8))
    fig.suptitle(f"{spec}: worst {method} feature against {next(iter(models))} "
                 f"({one['fname'][0]}, slice {int(one['slice'][0])}); zoom below, T outlined",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
