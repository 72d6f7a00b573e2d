"""NMSE, PSNR and SSIM in the fastMRI convention, in torch on the tensors' device.

fastMRI's evaluation (docs/METHOD.md section 3), per volume of S slices:

- NMSE = ||target - pred||^2 / ||target||^2 over the whole volume;
- PSNR = 10 log10(R^2 / MSE), MSE over the whole volume, R = the volume's max;
- SSIM = mean over slices of the 2D SSIM of each slice (7x7 uniform window, K1 = 0.01,
  K2 = 0.03, sample covariance, mean over the windows that fit inside the image),
  data range R = the volume's max.

These equal ``skimage.metrics.structural_similarity`` / ``peak_signal_noise_ratio``
with fastMRI's arguments. Metrics are computed in float64; every function takes
``(pred, target)`` in that order. Images are real ``(..., h, w)``.

`VolumeMetrics` accumulates per-slice predictions (in any order, from any number of
batches or processes) into per-volume metrics.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

Number = Union[float, torch.Tensor]


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() < 2 or pred.shape[-1] == 0 or pred.shape[-2] == 0:
        raise ValueError(f"{name}: expected images (..., h, w) with h, w > 0, got {tuple(pred.shape)}")
    if pred.is_complex() or target.is_complex():
        raise ValueError(f"{name}: expected real magnitude images, got {pred.dtype} / {target.dtype}")


def _per_image_range(data_range: Number, batch: int, like: torch.Tensor) -> torch.Tensor:
    """data_range as (batch, 1, 1) in like's dtype/device; a scalar is broadcast."""
    r = torch.as_tensor(data_range, dtype=like.dtype, device=like.device).reshape(-1)
    if r.numel() not in (1, batch):
        raise ValueError(f"data_range must be a scalar or have one value per image ({batch}), "
                         f"got {r.numel()} values")
    return r.expand(batch).reshape(batch, 1, 1)


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, data_range: Number,
                   win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """2D SSIM of each image, differentiable, in the inputs' dtype.

    pred, target: real (..., h, w) with h, w >= win_size; data_range: scalar or one
    value per image (prod of the leading dims). Returns (...) : the mean SSIM over the
    (h - win_size + 1) x (w - win_size + 1) windows that lie inside the image.
    """
    _check_pair(pred, target, "ssim")
    lead, (h, w) = pred.shape[:-2], pred.shape[-2:]
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: images {(h, w)} are smaller than the {win_size}x{win_size} window")
    x = pred.reshape(-1, 1, h, w)
    y = target.reshape(-1, 1, h, w)
    n = x.shape[0]
    r = _per_image_range(data_range, n, x).unsqueeze(1)                       # (N, 1, 1, 1)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2

    def mean(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(z, win_size, stride=1)

    # skimage's use_sample_covariance=True: unbiased (co)variances within a window.
    cov_norm = win_size ** 2 / (win_size ** 2 - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead)


def ssim(pred: torch.Tensor, target: torch.Tensor, maxval: Optional[Number] = None) -> torch.Tensor:
    """Per-slice SSIM (fastMRI/skimage settings) in float64.

    pred, target: (B, h, w); maxval: the data range, scalar or (B,) (fastMRI: the
    volume max); None uses each slice's own target max. Returns float64 (B,).
    """
    _check_pair(pred, target, "ssim")
    p, t = pred.double(), target.double()
    if maxval is None:
        maxval = t.amax(dim=(-2, -1)).reshape(-1)
    return ssim_per_image(p, t, maxval)


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice NMSE ||target - pred||^2 / ||target||^2: (B, h, w) -> float64 (B,)."""
    _check_pair(pred, target, "nmse")
    p, t = pred.double(), target.double()
    return ((t - p) ** 2).sum(dim=(-2, -1)) / (t ** 2).sum(dim=(-2, -1))


def psnr(pred: torch.Tensor, target: torch.Tensor, maxval: Optional[Number] = None) -> torch.Tensor:
    """Per-slice PSNR 10 log10(maxval^2 / MSE): (B, h, w) -> float64 (B,).

    maxval: scalar or (B,) (fastMRI: the volume max); None uses each slice's target max.
    """
    _check_pair(pred, target, "psnr")
    p, t = pred.double(), target.double()
    mse = ((t - p) ** 2).mean(dim=(-2, -1))
    if maxval is None:
        r = t.amax(dim=(-2, -1))
    else:
        r = _per_image_range(maxval, mse.numel(), t).reshape(mse.shape)
    return 10 * torch.log10(r ** 2 / mse)


def volume_metrics(pred: torch.Tensor, target: torch.Tensor,
                   maxval: Optional[Number] = None) -> Dict[str, float]:
    """fastMRI's metrics of one volume: pred, target (S, h, w); maxval default target.max().

    Returns {"nmse", "psnr", "ssim"} as floats.
    """
    _check_pair(pred, target, "volume_metrics")
    p, t = pred.double(), target.double()
    r = t.max() if maxval is None else torch.as_tensor(maxval, dtype=torch.float64, device=t.device)
    err = ((t - p) ** 2).sum()
    return {
        "nmse": (err / (t ** 2).sum()).item(),
        "psnr": (10 * torch.log10(r ** 2 / (err / t.numel()))).item(),
        "ssim": ssim_per_image(p, t, r).mean().item(),
    }


METRIC_NAMES = ("nmse", "psnr", "ssim")


class VolumeMetrics:
    """Accumulates per-slice predictions into fastMRI per-volume metrics.

    Call :meth:`update` with each batch (any order; a slice seen twice, e.g. from
    a padded distributed sampler, counts once, the last one kept). With ``maxval``
    (the batch's ``max``, the volume max) each slice is reduced to a few numbers at
    once on its device; without it, the slices are kept on the CPU until
    :meth:`compute`, since SSIM needs the volume max as its data range.

    For several processes: gather every process's :meth:`state` (plain Python and
    CPU tensors, e.g. with ``torch.distributed.all_gather_object``) and
    :meth:`merge` them into one.
    """

    def __init__(self) -> None:
        # fname -> slice -> record
        self._slices: Dict[str, Dict[int, Dict[str, Any]]] = defaultdict(dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self._slices.values())

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, fnames: Sequence[str],
               slices: Union[Sequence[int], torch.Tensor],
               maxval: Optional[Union[Sequence[float], torch.Tensor]] = None) -> None:
        """Add a batch: pred, target real (B, h, w); fnames (B,) volume names; slices (B,)
        slice indices; maxval (B,) volume maxima or None."""
        _check_pair(pred, target, "VolumeMetrics.update")
        if pred.dim() != 3:
            raise ValueError(f"VolumeMetrics.update: expected (B, h, w), got {tuple(pred.shape)}")
        b = pred.shape[0]
        slices = [int(s) for s in (slices.tolist() if torch.is_tensor(slices) else slices)]
        if len(fnames) != b or len(slices) != b:
            raise ValueError(f"VolumeMetrics.update: {b} images but {len(fnames)} fnames "
                             f"and {len(slices)} slice indices")
        p, t = pred.double(), target.double()
        stats = torch.stack([((t - p) ** 2).sum(dim=(-2, -1)), (t ** 2).sum(dim=(-2, -1)),
                             t.amax(dim=(-2, -1))], dim=1)
        if maxval is not None:
            r = _per_image_range(maxval, b, t).reshape(b)
            stats = torch.cat([stats, r[:, None], ssim_per_image(p, t, r)[:, None]], dim=1)
        rows = stats.tolist()
        npix = t.shape[-1] * t.shape[-2]
        for i, (fname, s) in enumerate(zip(fnames, slices)):
            rec: Dict[str, Any] = {"sq_err": rows[i][0], "sq_target": rows[i][1],
                                   "target_max": rows[i][2], "npix": npix}
            if maxval is not None:
                rec["maxval"], rec["ssim"] = rows[i][3], rows[i][4]
            else:
                rec["images"] = (pred[i].detach().float().cpu(), target[i].detach().float().cpu())
            self._slices[str(fname)][s] = rec

    def state(self) -> Dict[str, Dict[int, Dict[str, Any]]]:
        """Everything accumulated, as plain dicts (for gathering across processes)."""
        return {f: dict(v) for f, v in self._slices.items()}

    def merge(self, state: Dict[str, Dict[int, Dict[str, Any]]]) -> None:
        """Add another accumulator's :meth:`state`."""
        for fname, recs in state.items():
            self._slices[fname].update(recs)

    def compute(self) -> Dict[str, Dict[str, float]]:
        """Per-volume {"nmse", "psnr", "ssim", "slices"} for every volume seen."""
        out: Dict[str, Dict[str, float]] = {}
        for fname in sorted(self._slices):
            recs: List[Dict[str, Any]] = [self._slices[fname][s] for s in sorted(self._slices[fname])]
            given = [r["maxval"] for r in recs if "maxval" in r]
            vmax = max(given) if given else max(r["target_max"] for r in recs)
            ssims = []
            for r in recs:
                if "ssim" in r:
                    ssims.append(r["ssim"])
                else:
                    p, t = r["images"]
                    ssims.append(ssim_per_image(p.double(), t.double(), vmax).item())
            sq_err = sum(r["sq_err"] for r in recs)
            mse = sq_err / sum(r["npix"] for r in recs)
            out[fname] = {
                "nmse": sq_err / sum(r["sq_target"] for r in recs),
                "psnr": 10 * math.log10(vmax ** 2 / mse) if mse > 0 else math.inf,
                "ssim": sum(ssims) / len(ssims),
                "slices": len(recs),
            }
        return out

    def summary(self, per_volume: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, float]:
        """Mean over volumes of each metric, plus the number of volumes."""
        per_volume = self.compute() if per_volume is None else per_volume
        if not per_volume:
            raise ValueError("VolumeMetrics.summary: no slices were added")
        n = len(per_volume)
        summary = {k: sum(v[k] for v in per_volume.values()) / n for k in METRIC_NAMES}
        summary["volumes"] = n
        return summary

