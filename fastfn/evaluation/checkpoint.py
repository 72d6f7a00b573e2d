"""Evaluation of a checkpoint file, as ``fastfn eval`` does it: ``out/metrics.json``.

Loads a checkpoint of ``fastfn train`` (``fastfn.train.load_reconstructor``), builds
the dataset it is evaluated on (a folder or file of fastMRI ``.h5`` volumes, or the
synthetic default data at the checkpoint's training settings), runs the evaluation
loop ``fastfn.train.evaluate.evaluate`` (per-volume NMSE/PSNR/SSIM of the model and
of the zero-filled input) and writes the report, with optional PNG panels.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from fastfn.data import KspaceTransform, SliceDataset, check_batch, collate, default_data
from fastfn.fileio import atomic_write_bytes
from fastfn.evaluation.models import WeightsFile, load_model
from fastfn.train.data import EpochShuffleSampler, make_loader, mask_function
from fastfn.train.distributed import resolve_device
from fastfn.train.evaluate import evaluate
from fastfn.train.logging import save_panel

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(checkpoint: str | Path | WeightsFile, out: str | Path, *,
                        data: str | Path | None = None,
                        mask: str | None = None, split: str = "val",
                        crop_size: int | None = None, batch_size: int = 1,
                        num_workers: int = 0, device: str = "auto", panels: int = 0,
                        max_batches: int | None = None, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate a checkpoint over a folder of fastMRI files and write ``out/metrics.json``.

    checkpoint: a fastfn checkpoint, or a :class:`~fastfn.evaluation.models.WeightsFile`
    (fastMRI's or a Lightning file; then the training settings are unknown and the
    defaults below apply).

    data: a folder (every ``.h5`` in it) or file; None: the synthetic default data's
    ``split`` at the checkpoint's training settings. mask: a mask spec or ``.npy``
    (default: the one the checkpoint was trained with); validation masks are seeded
    by file name, as fastMRI does. device: as ``fastfn.train.distributed.resolve_device``
    takes it. panels: PNGs of the first that many slices in ``out/panels/``. Returns
    what it writes: checkpoint info, the mask and data, per-volume and mean metrics
    of the model and of the zero-filled input, and ``warnings`` (notes such as a
    contaminated evaluation split).
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    trained = (meta.get("config") or {}).get("data", {})
    mask = mask or trained.get("mask") or "random:4x@0.08"
    if data is None:
        synth = dict(size=trained.get("synth_size", 320), slices=trained.get("synth_slices"),
                     coils=trained.get("synth_coils", 4) if model.multicoil else None,
                     volumes=trained.get("synth_val_volumes") if split == "val" else None)
        src = default_data(split, **synth)
    else:
        src = Path(data).expanduser()
        if not src.exists():
            raise FileNotFoundError(f"data {src} does not exist")
    crop = crop_size if crop_size is not None else trained.get("crop_size")
    challenge = "multicoil" if model.multicoil else "singlecoil"
    try:
        ds = SliceDataset(src, KspaceTransform(mask_function(mask), crop_size=crop, use_seed=True),
                          challenge=challenge)
    except (ValueError, KeyError) as e:
        raise ValueError(f"data {src}: {e}") from e
    if len(ds) == 0:
        raise ValueError(f"data {src} has no usable {challenge} slices")
    loader = make_loader(ds, batch_size, sampler=EpochShuffleSampler(len(ds), shuffle=False),
                         num_workers=num_workers, collate_fn=collate)
    with torch.random.fork_rng(devices=[]):
        check_batch(next(iter(loader)), mask, "evaluation")
    result = evaluate(model, loader, dev, max_batches=max_batches, keep_panels=panels)
    out = Path(out)
    report = {"checkpoint": str(getattr(checkpoint, "path", checkpoint)), "model_name": meta["model_name"],
              "model_config": meta["model_config"], "step": meta["step"], "mask": mask,
              "data": str(src), **result.to_dict(), "warnings": list(warnings)}
    for p in result.panels:
        save_panel(out / "panels" / f"{Path(p['fname']).stem}_s{p['slice']:03d}.png",
                   p["target"], p["zero_filled"], p["recon"], title=f"{p['fname']} slice {p['slice']}")
    atomic_write_bytes(out / "metrics.json", json.dumps(report, indent=2).encode())
    return report
