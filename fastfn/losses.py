"""Training losses: SSIM (fastMRI-style), L1/L2, and masked losses over a region T.

Every loss takes ``(pred, target, ...)`` real magnitude images (B, h, w) (a
singleton channel dim (B, 1, h, w) is also accepted by the image losses).

Masked losses are the attack's and robust training's measure of a feature's error
(docs/METHOD.md sections 2 and 5): with T the region mask (the feature and its ring),

    masked NMSE = ||T (y' - f)||^2 / ||T y'||^2     per image,
    masked L1   = sum |T (y' - f)| / sum T          per image.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fastfn.metrics import Number, ssim_per_image


def _squeeze_channel(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0] if x.dim() == 4 and x.shape[1] == 1 else x


class SSIMLoss(nn.Module):
    """1 - mean SSIM over the batch (7x7 uniform window, K1 0.01, K2 0.03, sample covariance).

    forward(pred, target, data_range): (B, h, w) or (B, 1, h, w); data_range scalar or
    (B,) (fastMRI trains with the volume max). Differentiable, in the inputs' dtype.
    """

    def __init__(self, win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> None:
        super().__init__()
        self.win_size, self.k1, self.k2 = win_size, k1, k2

    def forward(self, pred: torch.Tensor, target: torch.Tensor, data_range: Number) -> torch.Tensor:
        pred, target = _squeeze_channel(pred), _squeeze_channel(target)
        s = ssim_per_image(pred, target, data_range, self.win_size, self.k1, self.k2)
        return 1 - s.mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor, data_range: Optional[Number] = None) -> torch.Tensor:
    """Mean absolute error (data_range is ignored; it is there so every image loss has one signature)."""
    return F.l1_loss(pred, target)


def l2_loss(pred: torch.Tensor, target: torch.Tensor, data_range: Optional[Number] = None) -> torch.Tensor:
    """Mean squared error (data_range is ignored)."""
    return F.mse_loss(pred, target)


ImageLoss = Callable[[torch.Tensor, torch.Tensor, Optional[Number]], torch.Tensor]
LOSS_NAMES = ("l1", "l2", "ssim")


def build_loss(name: str) -> ImageLoss:
    """Image loss ``fn(pred, target, data_range) -> scalar`` by name: "l1", "l2" or "ssim"."""
    losses: Dict[str, ImageLoss] = {"l1": l1_loss, "l2": l2_loss, "ssim": SSIMLoss()}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return losses[name]


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _check_region(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, name: str) -> torch.Tensor:
    if pred.shape != target.shape or region.shape != target.shape or target.dim() < 2:
        raise ValueError(f"{name}: pred {tuple(pred.shape)}, target {tuple(target.shape)} and region "
                         f"{tuple(region.shape)} must all be (B, h, w)")
    return region.to(pred.dtype)


def masked_nmse(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                reduction: str = "none", eps: float = 1e-12) -> torch.Tensor:
    """||T (target - pred)||^2 / ||T target||^2 per image (the FNAF loss).

    pred, target: real (B, h, w); region T: bool or float (B, h, w) (soft weights
    allowed). Returns (B,) for reduction="none" (default), else the mean / sum.
    The denominator is clamped to eps (a region where the target is all zero).
    """
    t = _check_region(pred, target, region, "masked_nmse")
    num = ((t * (target - pred)) ** 2).sum(dim=(-2, -1))
    den = ((t * target) ** 2).sum(dim=(-2, -1)).clamp_min(eps)
    return _reduce(num / den, reduction)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
              reduction: str = "mean", eps: float = 1e-12) -> torch.Tensor:
    """Mean |pred - target| over the region T of each image: sum |T (pred - target)| / sum T.

    pred, target: real (B, h, w); region: bool or float (B, h, w). Images with an empty
    region contribute 0. Returns (B,) for reduction="none", else the mean / sum.
    """
    t = _check_region(pred, target, region, "masked_l1")
    num = (t * (pred - target)).abs().sum(dim=(-2, -1))
    return _reduce(num / t.sum(dim=(-2, -1)).clamp_min(eps), reduction)
