"""The robustness studies for several models on the same slices and draws, with their files.

Three studies (docs/METHOD.md section 7; the batched attack-layer functions are in
``fastfn.attack.studies``):

- ``map``: the false-negative susceptibility map of the first ``map_slices`` slices;
- ``detectability``: FN rates over feature sizes x contrasts and the contrast-detail curve;
- ``noise``: adversarial k-space noise against random noise of the same norm, per
  level, for every model and the zero-filled input; aimed at annotated boxes too when
  an annotation file names evaluated slices.

Every model sees the same slices, masks and draws: the draws of a slice (map), of a
(batch, size) (detectability) and of a (batch, level) (noise) are seeded from the
configured seeds and those indices only (``map_slice_seed``, ``cell_seed``,
``noise_seed``). All input is checked before the first model runs.

Files in ``out``: ``studies.json`` (configs, seeds, summaries, figure names) and one
folder per study: ``map/`` (``map.json``, ``slices.jsonl``/``.csv``, per model
``<model>_nmse.npy`` and ``<model>_fn.npy`` grids (N, gh, gw) with their means over
slices, PNGs), ``detectability/`` (``detectability.json``, ``slices.jsonl``/``.csv``,
PNGs), ``noise/`` (``noise.json``, ``slices.jsonl``/``.csv``, PNGs).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fastfn.attack import AttackConfig
from fastfn.attack.studies import (NoiseConfig, SusceptibilityMap, ZeroFilled, cell_config, check_grid,
                                   contrast_detail_batch, contrast_detail_table, grid_locations,
                                   kspace_noise_attack, map_slice_seed, map_summary, noise_seed,
                                   reconstruction_metrics)
from fastfn.attack.studies.kspace_noise import data_range
from fastfn.attack.studies.detectability import check_contrasts
from fastfn.attack.studies.susceptibility import check_map_config
from fastfn.configs import as_plain, from_plain
from fastfn.data.annotations import Box, annotations_path, batch_box_maps, index_boxes, read_annotations, volume_key
from fastfn.data.phantom import LABELS
from fastfn.evaluation import study_figures as figs
from fastfn.evaluation.models import load_models
from fastfn.evaluation.protocol import DEFAULT_ATTACK, default_load_batches
from fastfn.fileio import atomic_write_text
from fastfn.seeding import seeded_generator

STUDIES = ("map", "detectability", "noise")
NOISE_METRICS = ("nmse", "psnr", "ssim")


@dataclass
class StudyConfig:
    """Settings of the robustness studies; the features and the search are the AttackConfig's.

    Attributes:
        stride: susceptibility-map grid stride in pixels.
        map_slices: slices mapped (the first evaluated ones; every location of each is attacked).
        sizes: contrast-detail feature sizes, in the attack family's unit (random-walk
            steps, disk radius in pixels, ...).
        contrasts: contrast-detail contrasts, fractions of the local tissue intensity.
        detect_rate: a cell counts as detected when at least this fraction of its slices'
            worst features is information-preserved and not a false negative.
        noise: the measurement-noise study (levels, steps, step sizes, chunk, seed).
        figure_slices: slices of the map drawn as figures.
    """
    stride: int = 4
    map_slices: int = 4
    sizes: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
    contrasts: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    detect_rate: float = 0.5
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    figure_slices: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.noise, Mapping):
            self.noise = from_plain(NoiseConfig, self.noise, source="StudyConfig.noise")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"StudyConfig.stride must be an integer >= 1, got {self.stride!r}")
        if self.map_slices < 1 or self.figure_slices < 0:
            raise ValueError(f"StudyConfig: map_slices must be >= 1 and figure_slices >= 0, got "
                             f"{self.map_slices}, {self.figure_slices}")
        self.sizes, self.contrasts = check_grid(self.sizes, self.contrasts)
        if not 0 < self.detect_rate <= 1:
            raise ValueError(f"StudyConfig.detect_rate must be in (0, 1], got {self.detect_rate}")

    def to_dict(self) -> dict[str, Any]:
        return as_plain(self)


# ---- helpers -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "model"


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _n(batch: Mapping[str, Any]) -> int:
    return int(batch["target"].shape[0])


def _subset(batch: Mapping[str, Any], rows: Sequence[int]) -> dict[str, Any]:
    """The slices ``rows`` of a batch (tensors with the batch dim and lists alike)."""
    n = _n(batch)
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
            out[k] = v.index_select(0, idx.to(v.device))
        elif isinstance(v, list) and len(v) == n:
            out[k] = [v[i] for i in rows]
        else:
            out[k] = v
    return out


def first_slices(batches: Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first ``n`` slices of ``batches``, batched as they were."""
    out, left = [], n
    for b in batches:
        if left <= 0:
            break
        k = min(left, _n(b))
        out.append(_subset(b, range(k)) if k < _n(b) else dict(b))
        left -= k
    return out


def _names(batch: Mapping[str, Any]) -> list[str]:
    return [f"{batch['fname'][j]} slice {int(batch['slice'][j])}" for j in range(_n(batch))]


def _write_records(folder: Path, records: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    atomic_write_text(folder / "slices.jsonl", "".join(json.dumps(r, default=_plain) + "\n" for r in records))
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    wr.writeheader()
    wr.writerows(records)
    atomic_write_text(folder / "slices.csv", buf.getvalue())


def _plain(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_plain, allow_nan=True) + "\n")


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="", disable=not progress, dynamic_ncols=True)


# ---- susceptibility map -----------------------------------------------------------------------

def map_locations(batches: Sequence[Mapping[str, Any]], attack: AttackConfig, stride: int
                  ) -> list[list[torch.Tensor]]:
    """The grid locations of every slice of every batch (CPU); raises ValueError naming the
    slice when the stride or the feature size leaves a slice without location."""
    check_map_config(attack)
    return [grid_locations(b["target"].float(), attack.features, stride, _names(b)) for b in batches]


def concat_maps(maps: Sequence[SusceptibilityMap], slices_per_map: Sequence[int]) -> SusceptibilityMap:
    """Several batches' maps as one (slice indices offset by the slices before)."""
    offsets = np.cumsum([0, *slices_per_map[:-1]])
    first = maps[0]
    cat = lambda key: torch.cat([getattr(m, key) for m in maps])  # noqa: E731
    return SusceptibilityMap(
        shape=first.shape, stride=first.stride,
        slice=torch.cat([m.slice + int(o) for m, o in zip(maps, offsets)]),
        rows=cat("rows"), cols=cat("cols"), worst_nmse=cat("worst_nmse"), info_mse=cat("info_mse"),
        info_preserved=cat("info_preserved"), fn=cat("fn"), index=cat("index"), values=cat("values"),
        label=cat("label") if all(m.label is not None for m in maps) else None,
        model_evals=sum(m.model_evals for m in maps))


def map_study(models: Mapping[str, nn.Module], batches: Sequence[Mapping[str, Any]], attack: AttackConfig,
              *, stride: int = 4, device: str | torch.device = "cpu", progress: bool = True,
              locations: Sequence[Sequence[torch.Tensor]] | None = None) -> dict[str, SusceptibilityMap]:
    """The susceptibility map of every slice of ``batches`` for every model (on the CPU).

    Slice k of the data (its position over all batches) is drawn with
    ``map_slice_seed(attack.seed, k)`` for every model. locations: from :func:`map_locations`
    (computed here when not given; that check runs before any model)."""
    from fastfn.attack.studies import susceptibility_map
    device = torch.device(device)
    locations = locations if locations is not None else map_locations(batches, attack, stride)
    total = sum(len(loc) for locs in locations for loc in locs)
    out: dict[str, SusceptibilityMap] = {}
    for name, model in models.items():
        parts, offset = [], 0
        bar = _bar(total, f"map {name}", progress)
        try:
            for b, locs in zip(batches, locations):
                n = _n(b)
                seeds = [map_slice_seed(attack.seed, offset + j) for j in range(n)]
                m = susceptibility_map(model, _to(b, device), attack, stride, slice_seeds=seeds,
                                       locations=[loc.to(device) for loc in locs], progress=bar.update)
                parts.append(m.to("cpu"))
                offset += n
        finally:
            bar.close()
        out[name] = concat_maps(parts, [_n(b) for b in batches])
    return out


def write_map_study(out: Path, maps: Mapping[str, SusceptibilityMap], batches: Sequence[Mapping[str, Any]],
                    attack: AttackConfig, stride: int, figure_slices: int = 2, bins: int = 30) -> dict[str, Any]:
    """``map.json``, per-slice records, the ``.npy`` grids and the figures of a map study; returns
    the summary written to ``map.json``."""
    out.mkdir(parents=True, exist_ok=True)
    thr = attack.threshold
    targets = torch.cat([b["target"].float().cpu() for b in batches])
    fnames = [f for b in batches for f in b["fname"]]
    slice_ids = [int(s) for b in batches for s in b["slice"]]
    N = targets.shape[0]
    logs = {n: np.log10(np.clip(m.worst_nmse.double().numpy(), 1e-12, None)) for n, m in maps.items()}
    pooled = np.concatenate(list(logs.values()))
    lo, hi = float(min(pooled.min(), math.log10(thr))), float(max(pooled.max(), math.log10(thr)))
    edges = np.linspace(lo - 0.05, hi + 0.05, bins + 1)
    summary: dict[str, Any] = {"stride": stride, "threshold": thr, "n_slices": N, "attack": attack.to_dict(),
                               "seeds": {"attack_seed": attack.seed,
                                         "slice_seed": "fastfn.attack.studies.map_slice_seed(attack_seed, k)"},
                               "histogram": {"log10_edges": edges.tolist(), "counts": {}}, "models": {},
                               "files": {}}
    records = []
    for name, m in maps.items():
        s = map_summary(m, thr, LABELS)
        s["model_evals"] = m.model_evals
        s["per_slice"] = []
        for k in range(N):
            sel = m.slice == k
            sub = _select(m, sel)
            per = {"model": name, "fname": fnames[k], "slice": slice_ids[k], **map_summary(sub, thr, LABELS)}
            s["per_slice"].append(per)
            records.append(per)
        summary["models"][name] = s
        summary["histogram"]["counts"][name] = np.histogram(logs[name], edges)[0].tolist()
        grid = m.grid(n_slices=N).numpy()
        fn_grid = m.grid(m.fn.double(), n_slices=N).numpy()
        stem = _slug(name)
        np.save(out / f"{stem}_nmse.npy", grid)
        np.save(out / f"{stem}_fn.npy", fn_grid)
        with warnings.catch_warnings():   # grid points that are a location in no slice: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            np.save(out / f"{stem}_mean_nmse.npy", np.nanmean(grid, axis=0))
            np.save(out / f"{stem}_fn_rate.npy", np.nanmean(fn_grid, axis=0))
        summary["files"][name] = [f"{stem}_{k}.npy" for k in ("nmse", "fn", "mean_nmse", "fn_rate")]
    figures = [figs.map_histogram_figure(edges, summary["histogram"]["counts"], thr, out / "map_hist.png").name]
    for k in range(min(figure_slices, N)):
        images = {n: m.image(n_slices=N)[k].numpy() for n, m in maps.items()}
        fn_img = {n: m.image(m.fn.double(), n_slices=N)[k].numpy() for n, m in maps.items()}
        fractions = {n: summary["models"][n]["per_slice"][k]["fn_fraction"] for n in maps}
        figures.append(figs.map_slice_figure(targets[k].numpy(), images, fn_img, fractions,
                                             f"{fnames[k]} slice {slice_ids[k]}: {attack.features.family} "
                                             f"size {attack.features.size[1]:g}, stride {stride}",
                                             out / f"map_slice{k}.png").name)
    summary["figures"] = figures
    _json(out / "map.json", summary)
    _write_records(out, records, ("model", "fname", "slice", "n_locations", "fn_fraction", "miss_fraction",
                                  "info_preserved_fraction", "mean_worst_nmse", "median_worst_nmse"))
    return summary


def _select(m: SusceptibilityMap, sel: torch.Tensor) -> SusceptibilityMap:
    pick = lambda t: t[sel] if isinstance(t, torch.Tensor) else t  # noqa: E731
    return SusceptibilityMap(shape=m.shape, stride=m.stride, slice=pick(m.slice), rows=pick(m.rows),
                             cols=pick(m.cols), worst_nmse=pick(m.worst_nmse), info_mse=pick(m.info_mse),
                             info_preserved=pick(m.info_preserved), fn=pick(m.fn), index=pick(m.index),
                             values=pick(m.values), label=pick(m.label), model_evals=0)


# ---- contrast-detail --------------------------------------------------------------------------

def detectability_study(models: Mapping[str, nn.Module], batches: Sequence[Mapping[str, Any]],
                        attack: AttackConfig, *, sizes: Sequence[float], contrasts: Sequence[float],
                        detect_rate: float = 0.5, device: str | torch.device = "cpu", progress: bool = True
                        ) -> dict[str, dict[str, Any]]:
    """The contrast-detail table of every model over ``batches``: ``{model: {"table":
    contrast_detail_table(...), "worst_nmse" / "info_preserved" / "fn": (S, C, N) tensors,
    "model_evals"}}``. Batch b at size index i is drawn with ``cell_seed(attack.seed, b, i)``."""
    sizes, contrasts = check_grid(sizes, contrasts)
    check_contrasts(contrasts, attack.threshold)
    for s in sizes:
        for c in contrasts:
            cell_config(attack, s, c)
    if not 0 < detect_rate <= 1:
        raise ValueError(f"contrast-detail: detect_rate must be in (0, 1], got {detect_rate}")
    device = torch.device(device)
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        parts, evals = [], 0
        bar = _bar(len(batches) * len(sizes) * len(contrasts), f"contrast-detail {name}", progress)
        try:
            for bi, b in enumerate(batches):
                r = contrast_detail_batch(model, _to(b, device), attack, sizes, contrasts, batch_index=bi,
                                          progress=bar.update)
                parts.append(r)
                evals += r["model_evals"]
        finally:
            bar.close()
        res = {k: torch.cat([p[k] for p in parts], dim=2) for k in ("worst_nmse", "info_preserved", "fn")}
        res["table"] = contrast_detail_table(res["worst_nmse"], res["info_preserved"], res["fn"], sizes,
                                             contrasts, detect_rate)
        res["model_evals"] = evals
        out[name] = res
    return out


def write_detectability_study(out: Path, results: Mapping[str, Mapping[str, Any]],
                              batches: Sequence[Mapping[str, Any]], attack: AttackConfig) -> dict[str, Any]:
    """``detectability.json``, per-slice records and the figures; returns the JSON's content."""
    out.mkdir(parents=True, exist_ok=True)
    fnames = [f for b in batches for f in b["fname"]]
    slice_ids = [int(s) for b in batches for s in b["slice"]]
    records = []
    for name, r in results.items():
        tab = r["table"]
        for i, s in enumerate(tab["sizes"]):
            for j, c in enumerate(tab["contrasts"]):
                for k in range(len(fnames)):
                    records.append({"model": name, "fname": fnames[k], "slice": slice_ids[k], "size": s,
                                    "contrast": c, "worst_nmse": float(r["worst_nmse"][i, j, k]),
                                    "info_preserved": bool(r["info_preserved"][i, j, k]),
                                    "fn": bool(r["fn"][i, j, k])})
    tables = {n: r["table"] for n, r in results.items()}
    figures = [figs.detectability_heat_figure(tables, out / "detectability_heat.png").name,
               figs.contrast_detail_figure(tables, out / "contrast_detail.png").name]
    summary = {"attack": attack.to_dict(), "threshold": attack.threshold,
               "seeds": {"attack_seed": attack.seed,
                         "cell_seed": "fastfn.attack.studies.cell_seed(attack_seed, batch, size_index)"},
               "models": {n: {**r["table"], "model_evals": r["model_evals"]} for n, r in results.items()},
               "figures": figures}
    _json(out / "detectability.json", summary)
    _write_records(out, records, ("model", "fname", "slice", "size", "contrast", "worst_nmse", "info_preserved",
                                  "fn"))
    return summary


# ---- measurement noise ------------------------------------------------------------------------

def box_index(boxes: Sequence[Box], batches: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], list[Box]]:
    """Boxes by (volume, slice), restricted to the evaluated slices that have a box inside the
    image; ValueError when the boxes name no evaluated slice."""
    index = index_boxes(boxes)
    keep = {}
    for b in batches:
        h, w = b["target"].shape[-2:]
        for f, s in zip(b["fname"], b["slice"]):
            key = (volume_key(f), int(s))
            inside = [x for x in index.get(key, []) if x.clipped(h, w) is not None]
            if inside:
                keep[key] = inside
    if not keep:
        raise ValueError(f"k-space noise: the {len(boxes)} annotation box(es) name no evaluated slice of the "
                         f"data (or lie outside the image)")
    return keep


def noise_study(models: Mapping[str, nn.Module], batches: Sequence[Mapping[str, Any]], noise: NoiseConfig, *,
                boxes: Mapping[tuple[str, int], list[Box]] | None = None, yardstick: bool = True,
                device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Adversarial vs random k-space noise at every level for every model (and the
    zero-filled input when ``yardstick``), aimed at the whole image and, with ``boxes``
    (:func:`box_index`), at the boxes (only slices with boxes).

    Batch b at level index l draws its random noise (the random curve and the search's
    start) with ``noise_seed(noise.seed, b, l)`` for every model.

    Returns ``{"levels", "aims": {aim: {model: {"adversarial": {metric: [mean per level]},
    "random": {...}, "clean": {metric: mean}}}}, "records": [per slice, model, aim, level]}``.
    """
    device = torch.device(device)
    levels = noise.levels
    aims = ["image"] + (["region"] if boxes else [])
    runs: dict[str, nn.Module] = dict(models)
    if yardstick:
        runs[figs.YARDSTICK] = ZeroFilled()
    work = []  # (aim, batch index, batch, box maps or None)
    for bi, b in enumerate(batches):
        maps = batch_box_maps(b, boxes, tuple(b["target"].shape[-2:]), "cpu") if boxes else None
        work.append(("image", bi, b, maps))
        if boxes:
            rows = [j for j in range(_n(b)) if bool(maps[j].any())]
            if rows:
                work.append(("region", bi, _subset(b, rows), maps[rows]))
    result: dict[str, Any] = {"levels": list(levels), "aims": {a: {} for a in aims}, "records": []}
    for name, model in runs.items():
        model = model.to(device)
        acc = {a: {"adversarial": {}, "random": {}, "clean": {}} for a in aims}
        bar = _bar(len(work) * len(levels), f"k-space noise {name}", progress)
        try:
            for aim, bi, b, maps in work:
                bd = _to(b, device)
                maps_d = maps.to(device) if maps is not None else None
                with torch.no_grad():
                    clean_pred = model(bd["masked_kspace"], bd["mask"], tuple(bd["target"].shape[-2:]))
                clean = reconstruction_metrics(clean_pred, bd["target"], data_range(bd), maps_d)
                _add(acc[aim]["clean"], clean)
                for li, level in enumerate(levels):
                    g = seeded_generator(noise_seed(noise.seed, bi, li), device)
                    r = kspace_noise_attack(model, bd, level, noise, boxes=maps_d, aim=aim, generator=g)
                    for kind in ("adversarial", "random"):
                        _add(acc[aim][kind].setdefault(li, {}), r[kind])
                        for j in range(_n(b)):
                            result["records"].append({
                                "model": name, "aim": aim, "level": level, "kind": kind,
                                "fname": b["fname"][j], "slice": int(b["slice"][j]),
                                **{k: float(v[j]) for k, v in r[kind].items()}})
                    bar.update(1)
        finally:
            bar.close()
        for aim in aims:
            a = acc[aim]
            result["aims"][aim][name] = {
                "adversarial": _curves(a["adversarial"], len(levels)),
                "random": _curves(a["random"], len(levels)),
                "clean": {k: _mean(v) for k, v in a["clean"].items()}}
    return result


def _add(acc: dict, metrics: Mapping[str, torch.Tensor]) -> None:
    for k, v in metrics.items():
        acc.setdefault(k, []).append(v)


def _mean(parts: Sequence[torch.Tensor]) -> float:
    v = torch.cat(list(parts)).double()
    v = v[torch.isfinite(v)]
    return float(v.mean()) if v.numel() else math.nan


def _curves(per_level: Mapping[int, Mapping[str, Sequence[torch.Tensor]]], n_levels: int) -> dict[str, list[float]]:
    keys = next(iter(per_level.values())).keys()
    return {k: [_mean(per_level[li][k]) for li in range(n_levels)] for k in keys}


def write_noise_study(out: Path, result: Mapping[str, Any], noise: NoiseConfig) -> dict[str, Any]:
    """``noise.json``, per-slice records and the curves' figures; returns the JSON's content."""
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for aim, curves in result["aims"].items():
        metrics = NOISE_METRICS if aim == "image" else ("region_nmse",)
        title = ("reconstruction error against k-space noise (adversarial solid, random dashed)" if aim == "image"
                 else "error inside the annotated boxes, noise aimed at them")
        figures.append(figs.noise_figure(result["levels"], curves, metrics, title, out / f"noise_{aim}.png").name)
    gaps = {aim: {n: [a - r for a, r in zip(c["adversarial"]["nmse" if aim == "image" else "region_nmse"],
                                           c["random"]["nmse" if aim == "image" else "region_nmse"])]
                  for n, c in curves.items()} for aim, curves in result["aims"].items()}
    summary = {"config": noise.to_dict(), "levels": result["levels"], "aims": result["aims"],
               "adversarial_gap_nmse": gaps,
               "seeds": {"noise_seed": noise.seed,
                         "batch_level_seed": "fastfn.attack.studies.noise_seed(noise_seed, batch, level_index)"},
               "norm": "||e||_2 = level * ||m k||_2 per slice (all coils), e on the sampled positions",
               "figures": figures}
    _json(out / "noise.json", summary)
    _write_records(out, result["records"], ("model", "aim", "level", "kind", "fname", "slice", "nmse", "psnr",
                                            "ssim", "region_nmse"))
    return summary


# ---- all studies --------------------------------------------------------------------------------

def parse_studies(studies: str | Sequence[str]) -> list[str]:
    """``"map,noise"`` or a list -> validated study names in the order of :data:`STUDIES`."""
    names = [s.strip() for s in (studies.split(",") if isinstance(studies, str) else studies) if s.strip()]
    unknown = [s for s in names if s not in STUDIES]
    if unknown or not names:
        raise ValueError(f"studies: unknown or no study {unknown or names!r}; choose from {STUDIES}")
    return [s for s in STUDIES if s in names]


def _default_annotations(data: Any) -> Path | None:
    """The default annotation file of the data: ``<folder>_annotations.csv`` beside a data
    folder (``fastfn.data.annotations.annotations_path``; the synthetic generator writes
    one); None for a file or a list of files."""
    from fastfn.data import default_data
    if data is None:
        return annotations_path(default_data("val"))
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        return annotations_path(data)
    return None


def evaluate_studies(models: Sequence[Any], data: Any, mask: str, out: str | Path, *,
                     studies: str | Sequence[str] = STUDIES, attack: AttackConfig | None = None,
                     config: StudyConfig | None = None, annotations: str | Path | None = None,
                     y_origin: str = "bottom", max_slices: int | None = 64, batch_size: int = 8,
                     device: str | torch.device = "cpu", progress: bool = True,
                     names: Sequence[str] | None = None,
                     load_batches: Callable[..., list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Run the chosen studies for several models on the same slices and draws; write their files.

    Args:
        models: checkpoint paths, ``WeightsFile`` s or ``(name, reconstructor)`` pairs
            (``fastfn.evaluation.models.load_models``).
        data: what ``load_batches`` reads (default loader: a folder of fastMRI ``.h5``
            files); None: the synthetic validation set.
        mask: one mask setting, e.g. ``"random:4x@0.08"``.
        out: output folder (created): ``studies.json`` and ``map/``, ``detectability/``,
            ``noise/``.
        studies: any of :data:`STUDIES` (a comma-separated string or a list).
        attack: features and search of the map and the contrast-detail study (default the
            protocol's ``DEFAULT_ATTACK``); its ``method`` is used as given.
        config: :class:`StudyConfig` (stride, sizes, contrasts, noise levels, ...).
        annotations: fastMRI+-style box CSV for the region-aimed noise attack; None:
            ``<folder>_annotations.csv`` beside the data folder when it exists (the
            synthetic generator writes one), else no region variant.
        max_slices, batch_size, load_batches: the evaluated slices, as in
            ``evaluate_robustness`` (the map uses the first ``config.map_slices`` of them).

    Every check (study names, configs, map locations of every mapped slice, noise levels,
    that the boxes name an evaluated slice) runs before the first model. Returns the
    content of ``studies.json``.
    """
    chosen = parse_studies(studies)
    attack = attack or DEFAULT_ATTACK
    config = config or StudyConfig()
    device = torch.device(device)
    loader = load_batches or default_load_batches
    batches = loader(data, mask, batch_size, max_slices)
    n_slices = sum(_n(b) for b in batches)
    if n_slices == 0:
        raise ValueError(f"no slices to evaluate in {data} with mask {mask}")
    map_batches = first_slices(batches, config.map_slices) if "map" in chosen else []
    locations = map_locations(map_batches, attack, config.stride) if "map" in chosen else None
    if "detectability" in chosen:
        check_contrasts(config.contrasts, attack.threshold)
        for s in config.sizes:
            for c in config.contrasts:
                cell_config(attack, s, c)
    boxes = None
    csv_path = None
    if "noise" in chosen:
        csv_path = Path(annotations) if annotations is not None else _default_annotations(data)
        if csv_path is not None and (annotations is not None or csv_path.is_file()):
            boxes = box_index(read_annotations(csv_path, y_origin=y_origin), batches)
        else:
            csv_path = None
    loaded = load_models(models, names, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"models": list(loaded), "mask": mask, "n_slices": n_slices,
                              "data": "synthetic" if data is None else str(data) if isinstance(data, (str, Path))
                              else [str(p) for p in data], "studies": chosen,
                              "attack": attack.to_dict(), "config": config.to_dict(),
                              "seeds": {"attack": attack.seed, "noise": config.noise.seed}, "results": {},
                              "figures": []}
    if "map" in chosen:
        maps = map_study(loaded, map_batches, attack, stride=config.stride, device=device, progress=progress,
                         locations=locations)
        s = write_map_study(out / "map", maps, map_batches, attack, config.stride, config.figure_slices)
        report["results"]["map"] = {n: {k: v for k, v in m.items() if k != "per_slice"}
                                    for n, m in s["models"].items()}
        report["figures"] += [f"map/{f}" for f in s["figures"]]
    if "detectability" in chosen:
        res = detectability_study(loaded, batches, attack, sizes=config.sizes, contrasts=config.contrasts,
                                  detect_rate=config.detect_rate, device=device, progress=progress)
        s = write_detectability_study(out / "detectability", res, batches, attack)
        report["results"]["detectability"] = {n: {"curve": t["curve"], "sizes": t["sizes"]}
                                              for n, t in s["models"].items()}
        report["figures"] += [f"detectability/{f}" for f in s["figures"]]
    if "noise" in chosen:
        res = noise_study(loaded, batches, config.noise, boxes=boxes, device=device, progress=progress)
        s = write_noise_study(out / "noise", res, config.noise)
        s["annotations"] = str(csv_path) if csv_path is not None else None
        report["results"]["noise"] = {"levels": s["levels"], "aims": s["aims"],
                                      "adversarial_gap_nmse": s["adversarial_gap_nmse"],
                                      "annotations": s["annotations"]}
        report["figures"] += [f"noise/{f}" for f in s["figures"]]
    _json(out / "studies.json", report)
    return report
