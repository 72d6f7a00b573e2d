"""Metrics against fastMRI's evaluation, which is skimage with these settings:

    nmse = np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2
    psnr = peak_signal_noise_ratio(gt, pred, data_range=gt.max())
    ssim = mean_i structural_similarity(gt[i], pred[i], data_range=gt.max())   # 7x7, K1 .01, K2 .03
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

skm = pytest.importorskip("skimage.metrics")

from fastfn.metrics import VolumeMetrics, nmse, psnr, ssim, volume_metrics  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def fastmri_eval(gt: np.ndarray, pred: np.ndarray, maxval=None) -> dict:
    maxval = gt.max() if maxval is None else maxval
    return {
        "nmse": np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2,
        "psnr": skm.peak_signal_noise_ratio(gt, pred, data_range=maxval),
        "ssim": np.mean([skm.structural_similarity(g, p, data_range=maxval) for g, p in zip(gt, pred)]),
    }


def smooth_volume(slices: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A blurred-blob target (MR-like: smooth, non-negative) and a noisy, blurred prediction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((slices, h, w))
    for s in range(slices):
        for _ in range(5):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 10)
            gt[s] += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    pred = gt + 0.05 * rng.standard_normal(gt.shape) + 0.02 * np.roll(gt, 1, axis=-1)
    return gt.astype(np.float32), np.abs(pred).astype(np.float32)


@pytest.mark.parametrize("shape,seed", [((3, 40, 33), 0), ((2, 64, 64), 1), ((4, 21, 50), 2)])
def test_volume_metrics_equal_fastmri(shape, seed, device):
    gt, pred = smooth_volume(*shape, seed=seed)
    ours = volume_metrics(torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device))
    ref = fastmri_eval(gt, pred)
    for key in ("nmse", "psnr", "ssim"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-4, rel=1e-6), key


def test_metrics_on_real_mr_volume(shared_data):
    """Real anatomy (brain PD FSE) with additive noise as the 'reconstruction'."""
    images = np.load(shared_data / "brain_pd_fse.npz")["images"][8:11].astype(np.float32)
    rng = np.random.default_rng(0)
    pred = np.abs(images + 0.03 * images.max() * rng.standard_normal(images.shape)).astype(np.float32)
    ours = volume_metrics(torch.from_numpy(pred), torch.from_numpy(images))
    ref = fastmri_eval(images, pred)
    for key in ("nmse", "psnr", "ssim"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-4, rel=1e-6), key


def test_per_slice_metrics_equal_skimage(device):
    gt, pred = smooth_volume(3, 30, 36, seed=3)
    vmax = np.array([1.5, 2.0, 0.7], dtype=np.float32)
    g, p = torch.from_numpy(gt).to(device), torch.from_numpy(pred).to(device)
    got_ssim = ssim(p, g, torch.from_numpy(vmax).to(device)).cpu().numpy()
    got_psnr = psnr(p, g, torch.from_numpy(vmax).to(device)).cpu().numpy()
    got_nmse = nmse(p, g).cpu().numpy()
    for i in range(3):
        assert got_ssim[i] == pytest.approx(skm.structural_similarity(gt[i], pred[i], data_range=vmax[i]), abs=1e-4)
        assert got_psnr[i] == pytest.approx(skm.peak_signal_noise_ratio(gt[i], pred[i], data_range=vmax[i]),
                                            abs=1e-4)
        assert got_nmse[i] == pytest.approx(np.sum((gt[i] - pred[i]) ** 2) / np.sum(gt[i] ** 2), rel=1e-6)
    # maxval None: each slice's own max
    own = ssim(p, g).cpu().numpy()
    assert own[1] == pytest.approx(skm.structural_similarity(gt[1], pred[1], data_range=gt[1].max()), abs=1e-4)


def test_identical_images_score_perfectly():
    gt, _ = smooth_volume(2, 20, 20, seed=4)
    g = torch.from_numpy(gt)
    m = volume_metrics(g, g)
    assert m["nmse"] == 0 and m["ssim"] == pytest.approx(1.0) and m["psnr"] == float("inf")


def _batches(gt, pred, fname, batch_size, rng):
    order = list(range(len(gt)))
    rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield (torch.from_numpy(pred[idx]), torch.from_numpy(gt[idx]), [fname] * len(idx), idx)


@pytest.mark.parametrize("with_maxval", [True, False])
def test_volume_accumulator_equals_fastmri(with_maxval):
    rng = random.Random(0)
    vols = {"a.h5": smooth_volume(5, 24, 28, seed=5), "b.h5": smooth_volume(3, 24, 28, seed=6)}
    acc = VolumeMetrics()
    batches = [b for f, (g, p) in vols.items() for b in _batches(g, p, f, 2, rng)]
    rng.shuffle(batches)
    batches.append(batches[0])                       # a duplicated slice (padded sampler) counts once
    for pred, target, fnames, idx in batches:
        maxval = torch.full((len(idx),), float(vols[fnames[0]][0].max())) if with_maxval else None
        acc.update(pred, target, fnames, idx, maxval)
    per_volume = acc.compute()
    for fname, (gt, pred) in vols.items():
        ref = fastmri_eval(gt, pred)
        assert per_volume[fname]["slices"] == len(gt)
        for key in ("nmse", "psnr", "ssim"):
            assert per_volume[fname][key] == pytest.approx(ref[key], abs=1e-4), (fname, key)
    summary = acc.summary()
    assert summary["volumes"] == 2
    assert summary["ssim"] == pytest.approx(np.mean([per_volume[f]["ssim"] for f in vols]))


def test_accumulator_merge_equals_single_process():
    gt, pred = smooth_volume(4, 20, 20, seed=7)
    single, rank0, rank1 = VolumeMetrics(), VolumeMetrics(), VolumeMetrics()
    single.update(torch.from_numpy(pred), torch.from_numpy(gt), ["v"] * 4, [0, 1, 2, 3])
    rank0.update(torch.from_numpy(pred[:2]), torch.from_numpy(gt[:2]), ["v"] * 2, [0, 1])
    rank1.update(torch.from_numpy(pred[2:]), torch.from_numpy(gt[2:]), ["v"] * 2, torch.tensor([2, 3]))
    rank0.merge(rank1.state())
    for key in ("nmse", "psnr", "ssim", "slices"):
        assert rank0.compute()["v"][key] == pytest.approx(single.compute()["v"][key])


def test_bad_inputs():
    a = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match="differ in shape"):
        nmse(a, torch.rand(2, 16, 15))
    with pytest.raises(ValueError, match="smaller than the 7x7 window"):
        ssim(torch.rand(1, 5, 16), torch.rand(1, 5, 16))
    with pytest.raises(ValueError, match="one value per image"):
        psnr(a, a, torch.ones(3))
    with pytest.raises(ValueError, match="2 images but 1 fnames"):
        VolumeMetrics().update(a, a, ["x"], [0, 1])
    with pytest.raises(ValueError, match="no slices"):
        VolumeMetrics().summary()
