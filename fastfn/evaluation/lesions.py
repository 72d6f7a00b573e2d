"""Reconstruction error where real pathology is: fastMRI+-style bounding-box annotations.

fastMRI+ (Zhao et al. 2021) ships one CSV row per box::

    file,slice,study_level,x,y,width,height,label
    file1000001,17,No,104,151,22,13,Meniscus Tear

``x`` is the first column of the box in the (cropped) reconstruction image,
``width``/``height`` its size in pixels, and ``y``, as in fastMRI+ (whose knee
boxes were drawn on vertically flipped images), counts from the bottom: the top
row of the box is ``h - y - height`` (``y_origin="top"`` reads files whose ``y``
is the top row). Rows with
``study_level`` = Yes describe the whole study and have no box; they are skipped.
This module reads such files, measures NMSE (and SSIM where the box is at least
the 7x7 SSIM window) inside the boxes per label for each model, and builds a
box-weighted loss term for the trainer (Caliva, Cheng et al., MELBA 2021 did both).
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

REQUIRED_COLUMNS = ("file", "slice", "x", "y", "width", "height", "label")
SSIM_WINDOW = 7  # fastMRI's SSIM window; smaller boxes get NMSE only


@dataclass(frozen=True)
class Box:
    """One annotated box of slice ``slice``: columns ``x:x+width``, ``height`` rows,
    ``y`` counted from the bottom (``y_origin="bottom"``, fastMRI+) or the top."""
    file: str  # volume name without the ``.h5`` suffix
    slice: int
    x: int
    y: int
    width: int
    height: int
    label: str
    y_origin: str = "bottom"

    def clipped(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) inside an (h, w) image, or None when outside it."""
        top = h - self.y - self.height if self.y_origin == "bottom" else self.y
        bottom, right = min(top + self.height, h), min(self.x + self.width, w)
        top, left = max(top, 0), max(self.x, 0)
        if bottom <= top or right <= left:
            return None
        return top, bottom, left, right


def volume_key(fname: str) -> str:
    """``"/data/file1000001.h5"`` -> ``"file1000001"`` (how fastMRI+ names volumes)."""
    name = Path(str(fname)).name
    return name[:-3] if name.endswith(".h5") else name


def read_annotations(path: str | Path, *, y_origin: str = "bottom") -> list[Box]:
    """Read a fastMRI+-style annotation CSV into boxes (study-level rows are skipped).

    Args:
        path: CSV file with at least the columns file, slice, x, y, width, height, label.
        y_origin: "bottom" (fastMRI+: ``y`` counts rows from the image's bottom) or
            "top" (``y`` is the box's top row).

    Raises FileNotFoundError for a missing file and ValueError naming the file,
    line and column for a missing column or a value that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    if y_origin not in ("bottom", "top"):
        raise ValueError(f"read_annotations: y_origin must be 'bottom' or 'top', got {y_origin!r}")
    boxes: list[Box] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"annotation file {path}: missing column(s) {missing}; "
                             f"expected {', '.join(REQUIRED_COLUMNS)} (got {columns})")
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if row.get("study_level", "").lower() in ("yes", "true", "1"):
                continue
            if all(row[c] == "" for c in ("x", "y", "width", "height")):
                continue  # a label without a box
            values = {}
            for c in ("slice", "x", "y", "width", "height"):
                try:
                    values[c] = int(float(row[c]))
                except ValueError:
                    raise ValueError(f"annotation file {path}, line {line}: column {c!r} "
                                     f"must be a number, got {row[c]!r}") from None
            if values["width"] <= 0 or values["height"] <= 0:
                raise ValueError(f"annotation file {path}, line {line}: box width and height "
                                 f"must be > 0, got {values['width']}x{values['height']}")
            boxes.append(Box(file=volume_key(row["file"]), label=row["label"],
                             y_origin=y_origin, **values))
    return boxes


def index_boxes(boxes: Iterable[Box]) -> dict[tuple[str, int], list[Box]]:
    """Boxes grouped by (volume, slice)."""
    out: dict[tuple[str, int], list[Box]] = defaultdict(list)
    for b in boxes:
        out[(b.file, b.slice)].append(b)
    return dict(out)


def box_weight_map(boxes: Sequence[Box], shape: tuple[int, int],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 (h, w) map: 1 inside any of ``boxes`` (clipped to the image), 0 elsewhere."""
    h, w = shape
    m = torch.zeros(h, w, dtype=torch.float32, device=device)
    for b in boxes:
        c = b.clipped(h, w)
        if c is not None:
            m[c[0]:c[1], c[2]:c[3]] = 1.0
    return m


def batch_box_maps(batch: Mapping, index: Mapping[tuple[str, int], list[Box]],
                   shape: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """(B, h, w) float32 box maps for a batch dict with ``fname`` and ``slice``."""
    maps = [box_weight_map(index.get((volume_key(f), int(s)), []), shape, device)
            for f, s in zip(batch["fname"], batch["slice"])]
    return torch.stack(maps) if maps else torch.zeros(0, *shape, device=device)


def make_box_loss(boxes: Sequence[Box], weight: float = 1.0, kind: str = "l1"
                  ) -> Callable[[torch.nn.Module, Mapping, int], tuple[torch.Tensor, dict]]:
    """A trainer ``extra_loss`` that adds ``weight`` x the error inside the annotated boxes.

    Per batch: reconstruct the clean input (one extra forward), and take the L1
    (``kind="l1"``) or squared error (``"l2"``) averaged over the box pixels of the
    batch, normalised by the mean target intensity there so the weight does not
    depend on the data's scale. Batches without boxes contribute 0 (no forward).
    """
    if kind not in ("l1", "l2"):
        raise ValueError(f"make_box_loss: kind must be 'l1' or 'l2', got {kind!r}")
    if weight < 0:
        raise ValueError(f"make_box_loss: weight must be >= 0, got {weight}")
    index = index_boxes(boxes)

    def box_loss(model: torch.nn.Module, batch: Mapping, step: int
                 ) -> tuple[torch.Tensor, dict]:
        target = batch["target"]
        maps = batch_box_maps(batch, index, tuple(target.shape[-2:]), target.device)
        n = maps.sum()
        if n == 0:
            return target.new_zeros(()), {"box_loss": 0.0}
        pred = model(batch["masked_kspace"], batch["mask"], tuple(target.shape[-2:]))
        err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
        scale = (target.abs() * maps).sum() / n
        scale = scale if kind == "l1" else scale ** 2
        loss = (err * maps).sum() / n / scale.clamp_min(1e-12)
        return weight * loss, {"box_loss": float(loss.detach())}

    return box_loss


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
    from fastfn.metrics import ssim
    return float(ssim(pred[None], gt[None], maxval=data_range))


def lesion_table(result: dict) -> str:
    """Markdown table of :func:`lesion_metrics`' result: one row per label and model."""
    lines = ["| label | model | boxes | NMSE (mean over boxes) | NMSE (pooled) | SSIM |",
             "|---|---|---:|---:|---:|---:|"]
    fmt = (lambda v, f: "n/a" if v is None else format(v, f))
    for label, per_model in result["labels"].items():
        for name, m in per_model.items():
            lines.append(f"| {label} | {name} | {m['n_boxes']} | {fmt(m['nmse'], '.4g')} | "
                         f"{fmt(m['nmse_pooled'], '.4g')} | {fmt(m['ssim'], '.4f')} |")
    return "\n".join(lines) + "\n"


def evaluate_lesions(models: Sequence[Any], data: str | Path | None, out: str | Path, *,
                     annotations: str | Path | None = None, mask: str = "random:4x@0.08",
                     y_origin: str = "bottom", names: Sequence[str] | None = None,
                     batch_size: int = 8, device: str | torch.device = "cpu") -> dict:
    """:func:`lesion_metrics` over a data folder for checkpoints or (name, model) pairs;
    writes ``lesions.json`` and ``lesions.md`` into ``out`` and returns the result.

    ``annotations`` defaults to ``DATA/annotations.csv`` (the synthetic generator
    writes one); ``data`` None is the synthetic validation set.
    """
    import json

    from fastfn.data import KspaceTransform, SliceDataset, collate, default_data, parse_mask_spec
    from fastfn.evaluation.robustness import _load_models
    from fastfn.fileio import atomic_write_bytes
    root = Path(data) if data is not None else default_data("val")
    csv_path = Path(annotations) if annotations is not None else root / "annotations.csv"
    boxes = read_annotations(csv_path, y_origin=y_origin)
    loaded = _load_models(models, names, torch.device(device))
    wanted = {(b.file, b.slice) for b in boxes}
    ds = SliceDataset(root, transform=KspaceTransform(parse_mask_spec(mask), use_seed=True))
    idx = [i for i, r in enumerate(ds.raw_samples)
           if (volume_key(str(r.fname)), int(r.slice_ind)) in wanted]  # only annotated slices

    def batches():
        for s in range(0, len(idx), batch_size):
            yield collate([ds[i] for i in idx[s:s + batch_size]])

    result = lesion_metrics(loaded, batches(), boxes, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "lesions.json", json.dumps(
        {**result, "annotations": str(csv_path), "mask": mask, "models": list(loaded)},
        indent=2).encode())
    atomic_write_bytes(out / "lesions.md", lesion_table(result).encode())
    return result
