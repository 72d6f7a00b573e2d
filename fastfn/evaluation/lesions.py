"""Reconstruction error where real pathology is: metrics inside annotated boxes.

For each model, the NMSE (and SSIM where the box is at least the 7x7 SSIM window)
inside the boxes of a fastMRI+-style annotation file (``fastfn.data.annotations``),
per label; :func:`evaluate_lesions` runs it over a data folder and writes
``lesions.json`` and ``lesions.md``.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from fastfn.data import KspaceTransform, SliceDataset, collate, parse_mask_spec
from fastfn.data.annotations import Box, annotations_path, index_boxes, read_annotations, volume_key
from fastfn.evaluation.models import load_models
from fastfn.evaluation.protocol import DataSource, data_source
from fastfn.evaluation.tables import lesion_table
from fastfn.fileio import atomic_write_bytes
from fastfn.metrics import ssim

SSIM_WINDOW = 7  # fastMRI's SSIM window; smaller boxes get NMSE only


@torch.no_grad()
def lesion_metrics(models: Mapping[str, torch.nn.Module], batches: Iterable[Mapping],
                   boxes: Sequence[Box], *, device: torch.device | str = "cpu",
                   ssim_fn: Callable[[torch.Tensor, torch.Tensor, float], float] | None = None,
                   ) -> dict:
    """Reconstruction error inside annotated boxes, per label and per model.

    Args:
        models: name -> reconstructor (the ``Reconstructor`` interface).
        batches: batch dicts (``masked_kspace``, ``mask``, ``target`` (B, h, w),
            ``max`` (B,), ``fname``, ``slice``); only annotated slices are reconstructed.
        boxes: from :func:`read_annotations`.
        ssim_fn: ``ssim_fn(gt (h, w), pred (h, w), data_range) -> float``; default
            fastMRI's SSIM from ``fastfn.metrics``.

    Returns ``{"labels": {label: {model: {"nmse", "nmse_pooled", "ssim", "n_boxes",
    "n_ssim_boxes"}}}, "n_boxes": int, "n_slices": int, "unmatched_boxes": int}``:
    ``nmse`` is the mean over boxes of ||gt - pred||^2 / ||gt||^2 inside the box,
    ``nmse_pooled`` the same ratio pooled over all the label's pixels, ``ssim`` the
    mean over boxes of at least 7x7 pixels (None when there is none).
    """
    if ssim_fn is None:
        ssim_fn = _default_ssim
    index = index_boxes(boxes)
    # label -> model -> accumulators
    acc: dict = defaultdict(lambda: defaultdict(lambda: {"nmse": [], "err": 0.0, "ref": 0.0,
                                                         "ssim": []}))
    seen: set[tuple[str, int]] = set()
    for batch in batches:
        keys = [(volume_key(f), int(s)) for f, s in zip(batch["fname"], batch["slice"])]
        rows = [i for i, k in enumerate(keys) if k in index]
        if not rows:
            continue
        if batch["target"].numel() == 0:
            raise ValueError(f"lesion metrics need fully sampled targets; {batch['fname'][rows[0]]} has none "
                             f"(a test or challenge file?)")
        sel = torch.tensor(rows)
        target = batch["target"][sel].to(device)
        kspace = batch["masked_kspace"][sel].to(device)
        mask = batch["mask"][sel].to(device) if batch["mask"].shape[0] > 1 else batch["mask"].to(device)
        vmax = batch["max"][sel]
        h, w = target.shape[-2:]
        preds = {name: m(kspace, mask, (h, w)) for name, m in models.items()}
        for j, i in enumerate(rows):
            seen.add(keys[i])
            for b in index[keys[i]]:
                c = b.clipped(h, w)
                if c is None:
                    continue
                gt = target[j, c[0]:c[1], c[2]:c[3]]
                ref = float((gt ** 2).sum())
                for name, pred in preds.items():
                    p = pred[j, c[0]:c[1], c[2]:c[3]]
                    err = float(((gt - p) ** 2).sum())
                    a = acc[b.label][name]
                    a["err"] += err
                    a["ref"] += ref
                    a["nmse"].append(err / ref if ref > 0 else math.nan)
                    if min(gt.shape) >= SSIM_WINDOW:
                        a["ssim"].append(float(ssim_fn(gt, p, float(vmax[j]))))
    labels = {}
    for label, per_model in sorted(acc.items()):
        labels[label] = {}
        for name, a in per_model.items():
            finite = [v for v in a["nmse"] if math.isfinite(v)]
            labels[label][name] = {
                "nmse": sum(finite) / len(finite) if finite else None,
                "nmse_pooled": a["err"] / a["ref"] if a["ref"] > 0 else None,
                "ssim": sum(a["ssim"]) / len(a["ssim"]) if a["ssim"] else None,
                "n_boxes": len(a["nmse"]),
                "n_ssim_boxes": len(a["ssim"]),
            }
    matched = sum(len(index[k]) for k in seen)
    return {"labels": labels, "n_boxes": len(boxes), "n_slices": len(seen),
            "unmatched_boxes": len(boxes) - matched}


def _default_ssim(gt: torch.Tensor, pred: torch.Tensor, data_range: float) -> float:
    return float(ssim(pred[None], gt[None], maxval=data_range))


def evaluate_lesions(models: Sequence[Any], data: DataSource, out: str | Path, *,
                     annotations: str | Path | None = None, mask: str = "random:4x@0.08",
                     y_origin: str = "bottom", names: Sequence[str] | None = None,
                     batch_size: int = 8, device: str | torch.device = "cpu",
                     warnings: Sequence[str] = ()) -> dict:
    """:func:`lesion_metrics` over a data folder for checkpoints or (name, model) pairs;
    writes ``lesions.json`` and ``lesions.md`` into ``out`` and returns the result
    (with ``warnings``, notes such as a contaminated evaluation split).

    ``annotations`` defaults to ``DATA_annotations.csv`` beside the data folder
    (``fastfn.data.annotations.annotations_path``; the synthetic generator writes one); ``data`` None is the synthetic validation set.
    """
    root = data_source(data)
    if annotations is None and not isinstance(root, Path):
        raise ValueError("evaluate_lesions: give the annotation file of a list of volumes")
    csv_path = Path(annotations) if annotations is not None else annotations_path(root)
    boxes = read_annotations(csv_path, y_origin=y_origin)
    loaded = load_models(models, names, torch.device(device))
    wanted = {(b.file, b.slice) for b in boxes}
    ds = SliceDataset(root, transform=KspaceTransform(parse_mask_spec(mask), use_seed=True))
    idx = [i for i, r in enumerate(ds.raw_samples)
           if (volume_key(str(r.fname)), int(r.slice_ind)) in wanted]  # only annotated slices

    def batches():
        for s in range(0, len(idx), batch_size):
            yield collate([ds[i] for i in idx[s:s + batch_size]])

    result = {**lesion_metrics(loaded, batches(), boxes, device=device), "warnings": list(warnings)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "lesions.json", json.dumps(
        {**result, "annotations": str(csv_path), "mask": mask, "models": list(loaded)},
        indent=2).encode())
    atomic_write_bytes(out / "lesions.md", lesion_table(result).encode())
    return result
