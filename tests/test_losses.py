"""Losses: SSIM loss = 1 - SSIM (skimage as the reference), masked NMSE / L1 from their formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

skm = pytest.importorskip("skimage.metrics")

from fastfn.losses import SSIMLoss, build_loss, masked_l1, masked_nmse  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def images(batch: int = 3, h: int = 24, w: int = 20, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    target = torch.nn.functional.avg_pool2d(torch.rand(batch, 1, h + 4, w + 4, generator=g), 5, 1)[:, 0]
    pred = (target + 0.1 * torch.randn(batch, h, w, generator=g)).abs()
    return pred.to(dtype), target.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_loss_is_one_minus_skimage_ssim(dtype, device):
    pred, target = images(dtype=dtype)
    data_range = torch.tensor([1.0, 0.8, 1.3], dtype=dtype)
    loss = SSIMLoss()(pred.to(device).unsqueeze(1), target.to(device).unsqueeze(1), data_range.to(device))
    ref = np.mean([skm.structural_similarity(t.double().numpy(), p.double().numpy(), data_range=float(r))
                   for p, t, r in zip(pred, target, data_range)])
    assert loss.item() == pytest.approx(1 - ref, abs=1e-4 if dtype == torch.float32 else 1e-10)


def test_ssim_loss_gradient_matches_finite_differences():
    pred, target = images(batch=2, h=8, w=7, dtype=torch.float64)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: SSIMLoss()(p, target, 1.0), (pred,))


def test_ssim_loss_training_step_improves_ssim():
    pred, target = images(batch=2)
    pred.requires_grad_(True)
    loss_fn = SSIMLoss()
    before = loss_fn(pred, target, 1.0)
    before.backward()
    with torch.no_grad():
        after = loss_fn(pred - 0.05 * pred.grad / pred.grad.abs().max(), target, 1.0)
    assert after < before


def test_build_loss():
    pred, target = images()
    assert build_loss("l1")(pred, target, None) == F.l1_loss(pred, target)
    assert build_loss("l2")(pred, target, None) == F.mse_loss(pred, target)
    assert build_loss("ssim")(pred, target, 1.0) == SSIMLoss()(pred, target, 1.0)
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        build_loss("huber")


def test_masked_nmse_formula_and_locality(device):
    pred, target = (x.to(device) for x in images())
    region = torch.zeros_like(target, dtype=torch.bool)
    region[0, 3:6, 4:9] = True
    region[1, 10:12, 10:11] = True
    region[2, 0, 0] = True
    got = masked_nmse(pred, target, region)
    assert got.shape == (3,)
    for i in range(3):
        r = region[i]
        expected = ((target[i][r] - pred[i][r]) ** 2).sum() / (target[i][r] ** 2).sum()
        torch.testing.assert_close(got[i], expected)
    # Errors outside the region do not count; inside they do.
    outside = pred + 5 * (~region).float()
    torch.testing.assert_close(masked_nmse(outside, target, region), got)
    assert masked_nmse(target, target, region).abs().max() == 0
    assert masked_nmse(pred, target, region, reduction="mean") == pytest.approx(got.mean().item())


def test_masked_l1_formula():
    pred, target = images()
    region = torch.zeros_like(target)
    region[:, 5:10, 5:8] = 1.0
    region[2] = 0                                           # empty region contributes 0
    got = masked_l1(pred, target, region, reduction="none")
    for i in range(2):
        r = region[i].bool()
        torch.testing.assert_close(got[i], (pred[i][r] - target[i][r]).abs().mean())
    assert got[2] == 0
    assert masked_l1(pred, target, region) == pytest.approx(got.mean().item())


def test_masked_losses_reject_bad_input():
    pred, target = images()
    with pytest.raises(ValueError, match="region"):
        masked_nmse(pred, target, torch.ones(3, 24, 19))
    with pytest.raises(ValueError, match="reduction"):
        masked_l1(pred, target, torch.ones_like(target), reduction="max")
