"""The robustness evaluation protocol: clean quality and false negatives of several models.

For every mask setting and every model, on the same slices:

- clean NMSE / PSNR / SSIM per volume in the fastMRI convention (``fastfn.metrics``);
- the false-negative (FN) rate with its 95% Wilson interval, the information-
  preserved rate and the distribution of the worst masked NMSE per slice, under
  random search and under the gradient attack (``fastfn.attack``).

Every model sees the same feature draws: the generator of batch ``b`` of mask
``m`` and attack ``a`` is seeded from ``(seed, m, b, a)`` only, so random search
scores every model on identical features and the gradient attack starts every
model from identical random supports and intensities.

Outputs in ``out``: ``robustness.json``, ``robustness.md`` (the comparison table),
``worst_<mask>.png`` (the worst-case feature found against the first model,
reconstructed by every model side by side) and ``nmse_<mask>.png`` (the worst
masked-NMSE distributions overlaid).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from fastfn.attack.report import wilson_interval
from fastfn.fileio import atomic_write, atomic_write_bytes, to_plain

ATTACKS = ("random", "pgd")


@dataclass
class AttackSettings:
    """The attack budget of the protocol (shared by the demo's robust training).

    Attributes:
        family: feature family (``fastfn.attack``), default the authors' random walk.
        size: (min, max) feature size (random-walk steps; the authors evaluate at 10).
        intensity: (lo, hi) bounds as fractions of the image's [min, max] range.
        random_restarts: features per slice of random search (the authors: 11).
        pgd_restarts, pgd_steps, pgd_step_size: the gradient attack: starts
            per slice, sign-gradient steps, step as a fraction of the intensity range.
        pgd_screen: S > 1 starts the gradient attack from the pgd_restarts worst of
            S x pgd_restarts scored random features (``fastfn.attack.AttackConfig``).
        threshold: a slice is a false negative when its worst masked NMSE >= this
            and the information was preserved.
        info_threshold: information preserved: zero-filled MSE inside T >= this.
        ring: the loss region T is the feature dilated by ``ring`` pixels.
        seed: base seed of every feature draw.
    """
    family: str = "random_walk"
    size: tuple[int, int] = (10, 10)
    intensity: tuple[float, float] = (0.0, 1.0)
    random_restarts: int = 11
    pgd_restarts: int = 4
    pgd_steps: int = 10
    pgd_step_size: float = 0.1
    pgd_screen: int = 1
    threshold: float = 1e-3
    info_threshold: float = 1e-4
    ring: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)  # type: ignore[assignment]
        self.intensity = tuple(float(v) for v in self.intensity)  # type: ignore[assignment]
        for key in ("random_restarts", "pgd_restarts", "pgd_screen"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.pgd_steps < 0:
            raise ValueError(f"pgd_steps must be >= 0, got {self.pgd_steps}")
        if not 1 <= self.size[0] <= self.size[1]:
            raise ValueError(f"size must be (min, max) with 1 <= min <= max, got {self.size}")


def split_mask_specs(text: str) -> list[str]:
    """``"random:4x@0.08,random:8x@0.04"`` -> ``["random:4x@0.08", "random:8x@0.04"]``.

    A new setting starts at each ``KIND:``; pairs without a kind
    (``"random:4x@0.08,8x@0.04"``) stay together as one mixed mask function.
    """
    groups: list[list[str]] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if re.match(r"^[A-Za-z_]+\s*:", piece):
            groups.append([piece])
        elif groups:
            groups[-1].append(piece)
        else:
            raise ValueError(f"--masks {text!r}: {piece!r} has no mask kind; write e.g. "
                             f"random:4x@0.08,random:8x@0.04")
    if not groups:
        raise ValueError(f"--masks: no mask setting in {text!r}; e.g. random:4x@0.08,random:8x@0.04")
    return [",".join(g) for g in groups]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _stats(worst: torch.Tensor, info: torch.Tensor, fn: torch.Tensor) -> dict[str, Any]:
    """Summary of one (model, mask, attack): per-slice worst NMSE, info flags, FN flags (S,)."""
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


@dataclass
class _ModelResult:
    clean: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per attack: worst feature per slice, kept for the figure (index/values on CPU)
    features: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)


def _clean_metrics(model: torch.nn.Module, batches: Sequence[Mapping[str, Any]],
                   device: torch.device) -> dict[str, Any]:
    """fastMRI per-volume NMSE/PSNR/SSIM of ``model`` over ``batches`` and their means."""
    from fastfn.metrics import VolumeMetrics
    acc, zf = VolumeMetrics(), VolumeMetrics()
    with torch.no_grad():
        for b in batches:
            target = b["target"].to(device)
            pred = model(b["masked_kspace"].to(device), b["mask"].to(device),
                         tuple(target.shape[-2:]))
            acc.update(pred.float(), target, b["fname"], b["slice"], b["max"])
            zf.update(b["zero_filled"].to(device).float(), target, b["fname"], b["slice"], b["max"])
    per_volume = acc.compute()
    return {"mean": acc.summary(per_volume), "per_volume": per_volume,
            "zero_filled_mean": zf.summary()}


def _attack_model(model: torch.nn.Module, batches: Sequence[Mapping[str, Any]],
                  method: str, settings: AttackSettings, mask_index: int,
                  device: torch.device, engine: Any, progress: Any = None
                  ) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]]]:
    """Run one attack over all batches with the protocol's seeds; per-slice results."""
    worst, info, fn, feats = [], [], [], []
    for i, b in enumerate(batches):
        g = torch.Generator(device=device)
        g.manual_seed(_batch_seed(settings.seed, mask_index, i, method))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        r = engine.attack_batch(model, batch, method=method, settings=settings, generator=g)
        worst.append(r["worst_nmse"].detach().cpu())
        info.append(r["info_preserved"].detach().cpu())
        fn.append(r["fn"].detach().cpu())
        for j in range(len(b["fname"])):
            feats.append({"index": r["index"][j].detach().cpu(), "values": r["values"][j].detach().cpu()})
        if progress is not None:
            progress.update(len(b["fname"]))
    return _stats(torch.cat(worst), torch.cat(info), torch.cat(fn)), feats


def _batch_seed(seed: int, mask_index: int, batch_index: int, method: str) -> int:
    return (seed * 1_000_003 + mask_index * 10_007 + batch_index * 101
            + ATTACKS.index(method)) % (2 ** 63 - 1)


def evaluate_robustness(models: Sequence[Any], data: str | Path | None, masks: str | Sequence[str],
                        out: str | Path, *, settings: AttackSettings | None = None,
                        attacks: Sequence[str] = ATTACKS, max_slices: int | None = 64,
                        batch_size: int = 8, device: str | torch.device = "cpu",
                        progress: bool = True, names: Sequence[str] | None = None,
                        engine: Any = None, load_batches: Any = None) -> dict[str, Any]:
    """Evaluate several models with the protocol; write JSON, Markdown and figures.

    Args:
        models: checkpoint paths (``fastfn.train.load_reconstructor``) or
            ``(name, reconstructor)`` pairs.
        data: folder of fastMRI ``.h5`` files; None: the synthetic default
            (validation split).
        masks: mask settings, e.g. ``"random:4x@0.08,random:8x@0.04"`` or a list.
        out: output folder (created).
        settings: the attack budget (default :class:`AttackSettings`).
        attacks: which of "random" and "pgd" to run.
        max_slices: evaluate at most this many slices (the first ones, in file
            order; None: all).
        names: display names of the models (default: the checkpoint file's
            parent folder and stem, or the given pair's name).
        engine: the attack engine (default ``fastfn.train.robust.default_engine()``).
        load_batches: ``fn(data, mask_spec, batch_size, max_slices) -> list of
            batch dicts`` (default: the data layer's dataset and collate).

    Returns the dict written to ``robustness.json``:
    ``{"settings", "models", "masks", "results": {mask: {model: {"clean": {...},
    "random": {...}, "pgd": {...}}}}}``.
    """
    from tqdm.auto import tqdm
    settings = settings or AttackSettings()
    device = torch.device(device)
    mask_specs = split_mask_specs(masks) if isinstance(masks, str) else list(masks)
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"attacks: unknown attack {a!r}; choose from {ATTACKS}")
    if engine is None:
        from fastfn.train.robust import default_engine
        engine = default_engine()
    loader = load_batches or default_load_batches
    loaded = _load_models(models, names, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Any]] = {}
    figures: list[str] = []
    for mi, spec in enumerate(mask_specs):
        batches = loader(data, spec, batch_size, max_slices)
        n_slices = sum(len(b["fname"]) for b in batches)
        if n_slices == 0:
            raise ValueError(f"no slices to evaluate in {data} with mask {spec}")
        per_model: dict[str, _ModelResult] = {}
        for name, model in loaded.items():
            res = _ModelResult(clean=_clean_metrics(model, batches, device))
            for method in attacks:
                bar = tqdm(total=n_slices, desc=f"{spec} {name} {method}", unit="slice",
                           disable=not progress, dynamic_ncols=True)
                try:
                    stats, feats = _attack_model(model, batches, method, settings, mi, device,
                                                 engine, bar)
                finally:
                    bar.close()
                res.attacks[method], res.features[method] = stats, feats
            per_model[name] = res
        results[spec] = {name: {"clean": r.clean, **r.attacks} for name, r in per_model.items()}
        figures += _figures(per_model, loaded, batches, spec, settings, out, device, engine)

    report = {"settings": to_plain(asdict(settings)), "models": list(loaded), "masks": mask_specs,
              "attacks": list(attacks), "data": str(data) if data is not None else "synthetic",
              "results": results, "figures": figures}
    atomic_write_bytes(out / "robustness.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "robustness.md", markdown_table(report).encode())
    return report


def _load_models(models: Sequence[Any], names: Sequence[str] | None,
                 device: torch.device) -> dict[str, torch.nn.Module]:
    loaded: dict[str, torch.nn.Module] = {}
    for i, m in enumerate(models):
        if isinstance(m, (str, Path)):
            from fastfn.train.checkpoint import load_reconstructor
            model, _ = load_reconstructor(m, map_location=device)
            name = f"{Path(m).parent.name}/{Path(m).stem}" if Path(m).parent.name else Path(m).stem
        else:
            name, model = m
        if names is not None:
            name = names[i]
        if name in loaded:
            name = f"{name}#{i}"
        loaded[name] = model.to(device).eval()
    if not loaded:
        raise ValueError("evaluate_robustness: no model given (pass at least one --ckpt)")
    return loaded


def default_load_batches(data: str | Path | None, mask_spec: str, batch_size: int,
                         max_slices: int | None) -> list[dict[str, Any]]:
    """The first ``max_slices`` slices of ``data`` (default: synthetic validation set)
    under ``mask_spec`` (fastMRI's per-volume mask seeds), as collated batches in memory."""
    from fastfn.data import SliceDataset, collate, default_data, parse_mask_spec
    from fastfn.data.transforms import KspaceTransform
    root = Path(data) if data is not None else default_data("val")
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    ds = SliceDataset(root, transform=KspaceTransform(parse_mask_spec(mask_spec), use_seed=True))
    n = len(ds) if max_slices is None else min(len(ds), max_slices)
    idx = list(range(n))
    return [collate([ds[i] for i in idx[s:s + batch_size]]) for s in range(0, n, batch_size)]



def markdown_table(report: Mapping[str, Any]) -> str:
    """The comparison table: one row per mask and model, clean metrics and FN rates."""
    attacks = report.get("attacks", ATTACKS)
    head = ["mask", "model", "NMSE", "PSNR", "SSIM"]
    for a in attacks:
        head += [f"FN rate {a} [95% CI]", f"median worst NMSE {a}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec, per_model in report["results"].items():
        for name, r in per_model.items():
            c = r["clean"]["mean"]
            row = [spec, name, f"{c['nmse']:.4f}", f"{c['psnr']:.2f}", f"{c['ssim']:.4f}"]
            for a in attacks:
                s = r[a]
                lo, hi = s["fn_rate_ci95"]
                row += [f"{s['fn_rate']:.3f} [{lo:.3f}, {hi:.3f}] ({s['fn_count']}/{s['n_slices']})",
                        f"{s['median_worst_nmse']:.2e}"]
            lines.append("| " + " | ".join(row) + " |")
    st = report["settings"]
    lines += ["", f"Features: {st['family']}, size {st['size'][0]}..{st['size'][1]}; random search "
              f"{st['random_restarts']} features per slice; gradient attack {st['pgd_restarts']} starts "
              + (f"(the worst of {st['pgd_screen'] * st['pgd_restarts']} random features) "
                 if st.get("pgd_screen", 1) > 1 else "")
              + f"x {st['pgd_steps']} steps. False negative: worst masked NMSE >= {st['threshold']:g} "
              f"with the information preserved (zero-filled MSE in T >= {st['info_threshold']:g}). "
              f"Every model saw the same slices and feature draws."]
    return "\n".join(lines) + "\n"


# --- figures -----------------------------------------------------------------------------

def _figures(per_model: Mapping[str, _ModelResult], models: Mapping[str, torch.nn.Module],
             batches: Sequence[Mapping[str, Any]], spec: str, settings: AttackSettings,
             out: Path, device: torch.device, engine: Any) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    written = [_distribution_figure(per_model, spec, settings, out / f"nmse_{_slug(spec)}.png")]
    first = next(iter(per_model.values()))
    method = "pgd" if "pgd" in first.attacks else next(iter(first.attacks), None)
    if method is not None:
        written.append(_worst_case_figure(per_model, models, batches, spec, method, settings,
                                          out / f"worst_{_slug(spec)}.png", device, engine))
    return [str(p.name) for p in written]


def _distribution_figure(per_model: Mapping[str, _ModelResult], spec: str,
                         settings: AttackSettings, path: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np
    methods = list(next(iter(per_model.values())).attacks)
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        vals = {n: np.log10(np.clip(np.asarray(r.attacks[method]["worst_nmse"]), 1e-8, None))
                for n, r in per_model.items()}
        lo = min(v.min() for v in vals.values())
        hi = max(max(v.max() for v in vals.values()), math.log10(settings.threshold))
        bins = np.linspace(lo - 0.1, hi + 0.1, 30)
        for n, v in vals.items():
            fn = per_model[n].attacks[method]["fn_rate"]
            ax.hist(v, bins=bins, alpha=0.5, label=f"{n} (FN {fn:.2f})")
        ax.axvline(math.log10(settings.threshold), color="k", ls="--", lw=1, label="FN threshold")
        ax.set_xlabel("log10 worst masked NMSE per slice")
        ax.set_ylabel("slices")
        ax.set_title(f"{method} attack, {spec}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_fig(fig, path)


def _save_fig(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


@torch.no_grad()
def _worst_case_figure(per_model: Mapping[str, _ModelResult],
                       models: Mapping[str, torch.nn.Module], batches: Sequence[Mapping[str, Any]],
                       spec: str, method: str, settings: AttackSettings, path: Path,
                       device: torch.device, engine: Any) -> Path:
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
    sim = engine.apply_feature(one, feat["index"][None].to(device), feat["values"][None].to(device),
                               ring=settings.ring)
    target, region, kspace = sim["target"], sim["region"], sim["masked_kspace"]
    zf = sim["zero_filled"]
    recons = {n: m(kspace, one["mask"], tuple(target.shape[-2:])) for n, m in models.items()}
    from fastfn.losses import masked_nmse
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
    return _save_fig(fig, path)
