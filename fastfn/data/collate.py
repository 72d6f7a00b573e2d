"""Stack :class:`fastfn.data.KspaceTransform` samples into the batch dict of the contract.

fastMRI trains with batch size 1 because k-space widths differ between volumes
(e.g. 368 and 372 columns). :func:`collate` brings the k-space (and mask) of a
batch to one width and height instead:

- ``"pad"`` (default): zero-pad to the largest size. Padded columns get mask 0, so
  a reconstructor treats them as not measured; no measured data is dropped.
- ``"crop"``: centre-crop to the smallest size (drops the outermost frequencies).

Both change the pixel grid of ``ifft2c(kspace)`` slightly against the stored
target (a width change of 1% resamples the image by 1%), which is why targets
and zero-filled images, already cropped to the crop size per sample, are not
touched and must agree in size. ``sens`` maps (image domain) cannot follow a
k-space resize: a batch mixing sizes with ``sens`` raises.

:func:`check_batch` checks the part of the contract a model relies on (mask width,
targets, a sampled centre) before training or evaluation starts.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import torch

__all__ = ["collate", "fit_kspace", "check_batch"]

_STACKED = ("kspace", "masked_kspace", "mask", "target", "zero_filled", "max", "slice",
            "num_low_frequencies", "sens", "labels")


def fit_kspace(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Centre-crop or zero-pad the last two dims of ``k`` to (h, w), keeping the k-space
    centre (index size // 2) at index new_size // 2."""
    H, W = k.shape[-2:]
    out = k.new_zeros(k.shape[:-2] + (h, w))
    # Source and destination windows along each dim, aligned at the centre index.
    src, dst = [], []
    for cur, new in ((H, h), (W, w)):
        n = min(cur, new)
        src.append(slice(cur // 2 - n // 2, cur // 2 - n // 2 + n))
        dst.append(slice(new // 2 - n // 2, new // 2 - n // 2 + n))
    out[..., dst[0], dst[1]] = k[..., src[0], src[1]]
    return out


def collate(samples: Sequence[Dict[str, Any]], kspace_size: str = "pad") -> Dict[str, Any]:
    """Batch a list of sample dicts: tensors stacked on a new dim 0, ``fname`` a list.

    Args:
        kspace_size: ``"pad"`` or ``"crop"``: how differing k-space sizes are made equal
            (see the module docstring).
    Raises:
        ValueError: on an empty batch, differing coil counts, target/zero-filled
            sizes or keys, or ``sens`` with differing k-space sizes.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    if kspace_size not in ("pad", "crop"):
        raise ValueError(f"collate: kspace_size must be 'pad' or 'crop', got {kspace_size!r}")
    keys = set(samples[0])
    for s in samples[1:]:
        if set(s) != keys:
            raise ValueError(f"collate: samples have different keys: {sorted(keys)} vs {sorted(s)} "
                             f"({s.get('fname')})")
    shapes = {tuple(s["kspace"].shape) for s in samples}
    if len({sh[:-2] for sh in shapes}) > 1:
        raise ValueError(f"collate: k-space coil dims differ within the batch: {sorted(shapes)}")
    items: Dict[str, List[Any]] = {k: [s[k] for s in samples] for k in keys}
    if len(shapes) > 1:
        if "sens" in keys:
            raise ValueError(f"collate: k-space sizes differ ({sorted(shapes)}) and samples carry "
                             "'sens' maps, which cannot be resized with the k-space; use batch size 1")
        pick = max if kspace_size == "pad" else min
        h = pick(sh[-2] for sh in shapes)
        w = pick(sh[-1] for sh in shapes)
        for key in ("kspace", "masked_kspace"):
            items[key] = [fit_kspace(k, h, w) for k in items[key]]
        items["mask"] = [fit_kspace(m, 1, w) for m in items["mask"]]
    batch: Dict[str, Any] = {}
    for key, values in items.items():
        if key == "fname":
            batch[key] = list(values)
        elif key in _STACKED or isinstance(values[0], torch.Tensor):
            sizes = {tuple(v.shape) for v in values}
            if len(sizes) > 1:
                raise ValueError(f"collate: '{key}' sizes differ within the batch: {sorted(sizes)}; "
                                 "use a fixed crop_size in the transform")
            batch[key] = torch.stack(values)
        else:
            batch[key] = list(values)
    return batch


def check_batch(batch: Mapping[str, Any], mask_spec: str, what: str) -> None:
    """Raise ValueError when a collated batch cannot be trained or evaluated on.

    Checks that the mask ``(B, 1, W)`` has as many columns as ``masked_kspace``
    ``(B, [C,] H, W)``, that ``target`` is not empty (test-set files have none), and
    that the mask samples at least one column and ``num_low_frequencies`` is >= 1.
    ``mask_spec`` and ``what`` ("training", "validation", ...) only name things in
    the error message.
    """
    k, m = batch["masked_kspace"], batch["mask"]
    fname = batch["fname"][0]
    if m.shape[-1] != k.shape[-1]:
        raise ValueError(f"{what} data: mask {mask_spec!r} has {m.shape[-1]} columns but the "
                         f"k-space of {fname} has {k.shape[-1]}")
    if batch["target"].numel() == 0:
        raise ValueError(f"{what} data: {fname} has no target image (a test-set file?); "
                         f"training and evaluation need fully sampled targets")
    low = int(batch["num_low_frequencies"].min())
    if low < 1 or float(m.sum()) < 1:
        raise ValueError(f"{what} data: mask {mask_spec!r} samples no centre columns of "
                         f"{fname} (k-space width {k.shape[-1]}); its centre fraction is too "
                         f"small for this width")
