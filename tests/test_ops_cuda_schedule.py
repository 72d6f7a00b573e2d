"""The CUDA kernels' schedule run on the CPU (tests/cuda_schedule_emulation): what only the
schedule decides. Every operator test of test_ops_masked_fft.py and test_ops_features.py
also runs on it (their `emu` variants); here the thread order, the launch limits and the
filling of uninitialised memory."""
from __future__ import annotations

import pytest
import torch

from fastfn import ops
from fastfn.reference import features as ref_features
from masked_fft_inputs import complex_randn, dc_inputs, random_2d_mask


@pytest.fixture
def emulation(cuda_schedule_emulation):
    return cuda_schedule_emulation


def _masked_fft_results(seed: int) -> list[torch.Tensor]:
    """Outputs and every gradient of the masked-FFT ops over their paths and sizes."""
    torch.manual_seed(seed)
    results = []
    for H, W in ((8, 6), (7, 5), (9, 12)):
        x = complex_randn(2, H, W, dtype=torch.complex128, generator=torch.Generator().manual_seed(seed))
        results += [ops.fft2c(x), ops.ifft2c(x), ops.undersample(x, random_2d_mask(H, W, 2))]
        for coils in (None, 3):
            for mask_2d in (False, True):
                d = dc_inputs(2, H, W, coils=coils, dtype=torch.complex128, accel=3, mask_2d=mask_2d,
                              per_batch_mask=True, seed=seed + H)
                names = ["x", "k0"] + ([] if coils is None else ["sens"])
                leaves = {k: d[k].clone().requires_grad_() for k in names}
                lam = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
                for weight in (None, lam):
                    out = ops.data_consistency(leaves["x"], leaves["k0"], d["mask"] * 0.75, lam=weight,
                                               sens=leaves.get("sens"))
                    g = complex_randn(*out.shape, dtype=torch.complex128)
                    wrt = list(leaves.values()) + ([lam] if weight is not None else [])
                    results += [out, *torch.autograd.grad(out, wrt, g)]
    return results


def test_thread_orders_agree_bit_for_bit(emulation):
    """Threads visited forward and in reverse: every output and gradient identical (no
    thread reads what another writes in the same pass)."""
    with emulation.active(reverse=False):
        forward = _masked_fft_results(seed=3)
    with emulation.active(reverse=True):
        backward = _masked_fft_results(seed=3)
    assert len(forward) == len(backward) > 100
    for a, b in zip(forward, backward):
        assert not a.isnan().any()
        assert torch.equal(a, b)


def test_launch_limits_do_not_change_results(emulation):
    """The small test grid (loops iterate many times) and CUDA's own limits (one element
    per thread here) give identical results."""
    with emulation.active():
        small = _masked_fft_results(seed=5)
    with emulation.active(threads_per_block=256, min_threads_x=32, max_blocks_x=1 << 16, max_blocks_y=65535,
                          max_lanes=256):
        cuda_like = _masked_fft_results(seed=5)
    for a, b in zip(small, cuda_like):
        assert torch.equal(a, b)


def test_uninitialised_memory_is_nan_under_emulation(emulation):
    """What makes an element no thread writes visible: fresh buffers are NaN."""
    with emulation.active():
        assert torch.empty(16, dtype=torch.complex64).isnan().all()
        assert torch.empty(3, 4, dtype=torch.float64).isnan().all()
    assert not torch.are_deterministic_algorithms_enabled()


def _overlapping_features(dtype):
    """Two images, three features each: features 0 and 1 of an image share pixels,
    feature 2 repeats pixels (its intensities add), padding in between."""
    H, W = 9, 7
    idx = torch.tensor([[[10, 11, 12, 17, -1, 24], [11, 12, 18, 25, 32, -1], [40, 40, 3, 3, 3, -1]],
                        [[0, 1, 7, 8, 62, -1], [62, 61, 55, 54, -1, -1], [20, -1, 20, 21, 20, 27]]])
    g = torch.Generator().manual_seed(7)
    vals = torch.rand(*idx.shape, generator=g, dtype=torch.float64).to(dtype)
    images = torch.rand(2, H, W, generator=g, dtype=torch.float64).to(dtype)
    return images, idx, vals


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_features_overlapping_and_repeated_pixels(emulation, reverse, dtype):
    images, idx, vals = _overlapping_features(dtype)
    with emulation.active(reverse=reverse):
        for ring in (0, 2):
            out, region = ops.insert_features(images, idx, vals, ring)
            want_out, want_region = ref_features.insert_features(images, idx, vals, ring)
            torch.testing.assert_close(out, want_out)
            assert torch.equal(region, want_region)
        N, R = idx.shape[:2]
        grad = torch.randn(N, R, *images.shape[1:], dtype=dtype)
        lo, hi = torch.zeros(N, R, dtype=dtype), torch.full((N, R), 0.9, dtype=dtype)
        step = torch.full((N, R), 0.2, dtype=dtype)
        for normalize in (False, True):
            pert, v = ops.insert_features(images, idx, vals)[0], vals.clone()
            want_pert, want_v = ref_features.feature_step(pert, v, idx, grad, lo, hi, step, normalize)
            ops.feature_step(pert, v, idx, grad, lo, hi, step, normalize)
            torch.testing.assert_close(v, want_v)
            torch.testing.assert_close(pert, want_pert)


def test_feature_check_reports_the_first_fault_like_the_cpu(emulation):
    """The device check (one kernel, atomic minima) names the fault the CPU loop meets
    first: a range fault before a later empty feature, an empty feature before a later
    range fault."""
    images = torch.rand(2, 4, 4)
    vals = torch.rand(2, 2, 3)
    cases = [
        torch.tensor([[[1, 2, 3], [-1, -1, -1]], [[1, 99, 2], [5, 6, 7]]]),   # empty [0, 1] first
        torch.tensor([[[1, 2, 3], [4, -5, 6]], [[-1, -1, -1], [5, 6, 7]]]),   # range [0, 1, 1] first
        torch.tensor([[[1, 2, 3], [4, 5, 6]], [[1, 2, 16], [-1, -1, 17]]]),   # range [1, 0, 2]
    ]
    for idx in cases:
        messages = []
        for use_emulation in (False, True):
            with (emulation.active() if use_emulation else torch.no_grad()):
                with pytest.raises(RuntimeError) as err:
                    ops.insert_features(images, idx, vals)
            messages.append(str(err.value).splitlines()[0])
        assert messages[0] == messages[1]


def test_feature_step_rejects_grad_sharing_perturbed():
    pert = torch.rand(1, 2, 4, 4)
    vals = torch.rand(1, 2, 3)
    idx = torch.tensor([[[0, 1, 2], [3, 4, 5]]])
    b = torch.zeros(1, 2)
    with pytest.raises(RuntimeError, match="grad shares memory with perturbed"):
        torch.ops.fastfn.feature_step(pert, vals, idx, pert, b, b + 1, b + 0.1, False)
