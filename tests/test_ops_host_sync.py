"""No host synchronisation inside the operators: the column plan of a mask is built once
and reused (counted on the CPU), and on a GPU a cascade, a VarNet and a PGD step run
under torch.cuda.set_sync_debug_mode("error"), and a cascade forward replays from a
CUDA graph (those skip without a GPU)."""
from __future__ import annotations

import contextlib

import pytest
import torch

import fastfn.ops.masked_fft as masked_fft_ops
from fastfn import ops
from fastfn.models.cascade import CascadeNet
from masked_fft_inputs import column_mask, complex_randn, dc_inputs


def _cascade_inputs(device, B=2, H=16, W=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = column_mask(W, B, accel=3, center=2, generator=g)  # (B, 1, W) float32
    k0 = complex_randn(B, H, W, generator=g) * mask
    return k0.to(device), mask.to(device)


def _ten_cascades_forward_backward():
    """A 10-cascade soft-DC network's forward and backward from empty column caches:
    the model, its inputs and the caches' counters after it."""
    torch.manual_seed(0)
    model = CascadeNet(num_cascades=10, chans=4, num_convs=2, dc="soft")
    k0, mask = _cascade_inputs("cpu")
    masked_fft_ops.reset_column_plan_cache()
    model(k0, mask).sum().backward()
    return model, k0, mask, masked_fft_ops.column_plan_counters()


def test_one_plan_per_mask_across_a_cascade_forward_and_backward():
    """10 DC layers, forward and backward: one column plan for the one mask."""
    model, k0, mask, counters = _ten_cascades_forward_backward()
    assert counters["built"] == 1, counters
    assert counters["reused"] == 2 * 10 - 1, counters   # 10 forward and 10 backward DC calls
    assert counters["device_to_host"] == 0               # a CPU mask needs no copy
    # a second forward with the same mask reuses the plan too
    model(k0, mask)
    assert masked_fft_ops.column_plan_counters()["built"] == 1


def test_one_measurement_per_k0_across_a_cascade_forward_and_backward():
    """The ifft along H of k0's sampled columns is prepared by the first DC layer and reused
    by the other nine and by the ten backward calls (soft DC: the lam gradient reads it)."""
    model, k0, mask, counters = _ten_cascades_forward_backward()
    assert counters["measurements_built"] == 1, counters
    assert counters["measurements_reused"] == 9 + 10, counters
    # the next call scales k0 anew (CascadeNet normalises it): one more measurement
    model(k0, mask)
    counters = masked_fft_ops.column_plan_counters()
    assert counters["measurements_built"] == 2 and counters["measurements_reused"] == 19 + 9, counters


@pytest.mark.parametrize("multicoil", [False, True])
def test_a_changed_k0_gets_a_new_measurement(multicoil):
    """An in-place write to k0 (or a view of it) bumps its version: the next call measures
    again and follows the new values; each result equals the reference."""
    from fastfn.reference import masked_fft as ref
    d = dc_inputs(2, 8, 10, dtype=torch.complex128, accel=2, seed=5, coils=3 if multicoil else None)
    k0 = d["k0"].clone()
    mask = d["mask"].double()  # the op's real dtype: the same mask tensor (and plan) every call
    masked_fft_ops.reset_column_plan_cache()
    first = ops.data_consistency(d["x"], k0, mask, sens=d.get("sens"))
    again = ops.data_consistency(d["x"] * 2, k0, mask, sens=d.get("sens"))
    assert masked_fft_ops.column_plan_counters()["measurements_reused"] == 1
    torch.testing.assert_close(again, ref.data_consistency(d["x"] * 2, k0, mask, sens=d.get("sens")))
    k0[..., 1, :].mul_(3.0)  # through a view
    second = ops.data_consistency(d["x"], k0, mask, sens=d.get("sens"))
    assert masked_fft_ops.column_plan_counters()["measurements_built"] == 2
    torch.testing.assert_close(second, ref.data_consistency(d["x"], k0, mask, sens=d.get("sens")))
    assert not torch.allclose(first, second)
    # the same k0 under a changed mask: a new plan, so a new measurement
    mask = mask.clone()
    mask[..., :2] = 1.0 - mask[..., :2]
    third = ops.data_consistency(d["x"], k0, mask, sens=d.get("sens"))
    assert masked_fft_ops.column_plan_counters()["measurements_built"] == 3
    torch.testing.assert_close(third, ref.data_consistency(d["x"], k0, mask, sens=d.get("sens")))


def test_a_changed_mask_gets_a_new_plan():
    """An in-place write to the mask (or to a view of it) bumps its version: the plan is
    rebuilt and the result follows the new mask."""
    d = dc_inputs(2, 8, 10, dtype=torch.complex128, accel=2, seed=3)
    mask = d["mask"].clone()
    masked_fft_ops.reset_column_plan_cache()
    first = ops.data_consistency(d["x"], d["k0"], mask)
    mask[..., :3] = 1.0 - mask[..., :3]
    second = ops.data_consistency(d["x"], d["k0"], mask)
    assert masked_fft_ops.column_plan_counters()["built"] == 2
    from fastfn.reference import masked_fft as ref
    torch.testing.assert_close(second, ref.data_consistency(d["x"], d["k0"], mask))
    assert not torch.allclose(first, second)
    # a new tensor with equal values is a new key (no stale plan from a freed mask)
    ops.data_consistency(d["x"], d["k0"], mask.clone())
    assert masked_fft_ops.column_plan_counters()["built"] == 3


@contextlib.contextmanager
def _sync_is_an_error():
    torch.cuda.synchronize()
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@pytest.mark.cuda
def test_cascade_forward_backward_without_host_sync():
    torch.manual_seed(0)
    model = CascadeNet(num_cascades=10, chans=4, num_convs=2, dc="soft").cuda()
    k0, mask = _cascade_inputs("cuda")
    model(k0, mask).sum().backward()  # the mask's plan, built once (its one copy to the host)
    masked_fft_ops.reset_column_plan_cache()
    model(k0, mask).sum().backward()
    with _sync_is_an_error():
        model.zero_grad()
        model(k0, mask).sum().backward()
    assert masked_fft_ops.column_plan_counters()["device_to_host"] == 1


@pytest.mark.cuda
def test_varnet_forward_backward_without_host_sync():
    from fastfn.models.varnet import VarNet

    torch.manual_seed(0)
    model = VarNet(num_cascades=2, chans=4, pools=2).cuda()
    B, C, H, W = 1, 3, 32, 24
    mask = column_mask(W, B, accel=3, center=4).reshape(B, 1, 1, W).cuda()
    k0 = complex_randn(B, C, H, W).cuda() * mask
    model(k0, mask).sum().backward()
    with _sync_is_an_error():
        model.zero_grad()
        model(k0, mask).sum().backward()


@pytest.mark.cuda
def test_pgd_step_without_host_sync():
    """One attack step: insert (its one index check, outside), then score forward and
    backward through the model and one feature_step, with no sync."""
    torch.manual_seed(0)
    model = CascadeNet(num_cascades=2, chans=4, num_convs=2).cuda()
    N, R, P, H, W = 2, 3, 5, 16, 12
    images = torch.rand(N, H, W, device="cuda")
    idx = torch.randint(0, H * W, (N, R, P), device="cuda")
    vals = torch.rand(N, R, P, device="cuda")
    mask = column_mask(W, 1, accel=3, center=2).cuda()
    pert, region = ops.insert_features(images, idx, vals, 1)
    lo = torch.zeros(N, R, device="cuda")
    hi = torch.ones(N, R, device="cuda")
    step = torch.full((N, R), 0.1, device="cuda")

    def pgd_step():
        p = pert.detach().requires_grad_()
        k = ops.fft2c(p.reshape(N * R, H, W).to(torch.complex64)) * mask
        loss = (model(k, mask.expand(N * R, 1, W)) * region.reshape(N * R, H, W)).sum()
        (grad,) = torch.autograd.grad(loss, p)
        ops.feature_step(pert, vals, idx, grad, lo, hi, step, False)

    pgd_step()  # warm-up: plans, cuFFT plans, allocator
    with _sync_is_an_error():
        pgd_step()


@pytest.mark.cuda
def test_cascade_forward_replays_from_a_cuda_graph():
    torch.manual_seed(0)
    model = CascadeNet(num_cascades=4, chans=4, num_convs=2, dc="soft").cuda().eval()
    k0, mask = _cascade_inputs("cuda")
    with torch.no_grad():
        eager = model(k0, mask)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model(k0, mask)  # warm-up on the capture stream: plans, cuFFT plans
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = model(k0, mask)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(captured, eager)
        # new values in the static k0: the replay measures them (a graph captures no
        # measurement prepared before it)
        k0.mul_(0.5)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(captured, model(k0, mask))
