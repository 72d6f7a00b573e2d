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


def _mask_in_form(mask: torch.Tensor, form: str) -> torch.Tensor:
    if form == "bool":
        return mask.bool()
    if form == "expanded over the batch":
        return mask[:1].expand_as(mask)
    return mask


@pytest.mark.parametrize("form", ["bool", "float32 beside complex128", "expanded over the batch"])
def test_one_plan_per_mask_that_the_wrapper_has_to_copy(form):
    """A mask the op cannot take as it is (another dtype, a batch expanded with stride 0)
    is copied once and the copy reused: one plan and one measurement across the 10 DC
    layers, forward and backward, and again across a second call; the result equals the
    one from the op-ready float mask."""
    torch.manual_seed(0)
    dtype = torch.complex128 if "complex128" in form else torch.complex64
    model = CascadeNet(num_cascades=10, chans=4, num_convs=2, dc="soft").to(dtype.to_real())
    k0, mask = _cascade_inputs("cpu")
    if form == "expanded over the batch":
        mask = mask[:1].expand_as(mask).clone()
        k0 = k0 * mask
    k0 = k0.to(dtype)
    given = _mask_in_form(mask, form)
    masked_fft_ops.reset_column_plan_cache()
    out = model(k0, given)
    out.sum().backward()
    counters = masked_fft_ops.column_plan_counters()
    assert counters["built"] == 1 and counters["measurements_built"] == 1, counters
    model(k0, given)
    assert masked_fft_ops.column_plan_counters()["built"] == 1
    with torch.no_grad():
        torch.testing.assert_close(out, model(k0, mask.to(dtype.to_real())))


def test_a_copied_mask_follows_in_place_writes_and_new_masks():
    """The wrapper's copy of a bool mask is reused only while the mask is unchanged: an
    in-place write, or a new mask with other values, gives results equal to the
    reference with the new values."""
    from fastfn.reference import masked_fft as ref
    d = dc_inputs(2, 8, 10, dtype=torch.complex64, accel=2, seed=7)
    mask = d["mask"] > 0.5
    masked_fft_ops.reset_column_plan_cache()
    first = ops.data_consistency(d["x"], d["k0"], mask)
    torch.testing.assert_close(first, ref.data_consistency(d["x"], d["k0"], mask.float()))
    mask[..., :3] = ~mask[..., :3]
    second = ops.data_consistency(d["x"], d["k0"], mask)
    torch.testing.assert_close(second, ref.data_consistency(d["x"], d["k0"], mask.float()))
    assert masked_fft_ops.column_plan_counters()["built"] == 2
    for seed in range(3):  # fresh masks, each freed before the next (addresses may repeat)
        fresh = torch.rand(2, 1, 10, generator=torch.Generator().manual_seed(seed)) > 0.5
        torch.testing.assert_close(ops.data_consistency(d["x"], d["k0"], fresh),
                                   ref.data_consistency(d["x"], d["k0"], fresh.float()))
        del fresh


@pytest.mark.parametrize("multicoil", [False, True])
def test_with_the_caches_disabled_writes_past_the_version_counter_are_followed(multicoil):
    """Writes through .data do not bump the version the caches key on; with the caches
    switched off every call plans and measures anew and follows them, and the switch
    restores reuse on exit."""
    from fastfn.reference import masked_fft as ref
    d = dc_inputs(2, 8, 10, dtype=torch.complex128, accel=2, seed=4, coils=3 if multicoil else None)
    k0, mask, sens = d["k0"].clone(), d["mask"] > 0.5, d.get("sens")
    masked_fft_ops.reset_column_plan_cache()
    with masked_fft_ops.column_caches_disabled():
        ops.data_consistency(d["x"], k0, mask, lam=0.3, sens=sens)
        k0.data[..., 2, :] *= -2.0
        mask.data[..., :2] = ~mask.data[..., :2]
        out = ops.data_consistency(d["x"], k0, mask, lam=0.3, sens=sens)
        counters = masked_fft_ops.column_plan_counters()
    torch.testing.assert_close(out, ref.data_consistency(d["x"], k0, mask.double(), lam=0.3, sens=sens))
    assert counters["built"] == 2 and counters["reused"] == 0, counters
    assert counters["measurements_built"] == 2 and counters["measurements_reused"] == 0, counters
    ops.data_consistency(d["x"], k0, mask, lam=0.3, sens=sens)
    ops.data_consistency(d["x"], k0, mask, lam=0.3, sens=sens)
    counters = masked_fft_ops.column_plan_counters()
    assert counters["built"] == 3 and counters["reused"] == 1, counters


def test_a_multicoil_mask_expanded_over_the_coils_is_shared_by_them():
    """(B, C, 1, W) with a stride-0 coil dim does not vary over the coils: accepted, and
    equal to the reference with the (B, 1, 1, W) mask."""
    from fastfn.reference import masked_fft as ref
    d = dc_inputs(2, 8, 10, dtype=torch.complex128, accel=2, seed=2, coils=3, per_batch_mask=True)
    mask = d["mask"].double()  # (2, 1, 1, 10)
    out = ops.data_consistency(d["x"], d["k0"], mask.expand(2, 3, 1, 10), sens=d["sens"])
    torch.testing.assert_close(out, ref.data_consistency(d["x"], d["k0"], mask, sens=d["sens"]))


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
def test_attack_engine_pgd_steps_without_host_sync():
    """The engine's own PGD step (Scorer forward + backward over two chunks of
    candidates through a cascade, then feature_step): after the first step of a batch,
    no step synchronises."""
    from fastfn.attack import AttackConfig, FeatureConfig, engine, from_batch, placement_region

    torch.manual_seed(0)
    B, H, W = 3, 24, 20
    model = CascadeNet(num_cascades=3, chans=4, num_convs=2).cuda().eval()
    mask = column_mask(W, B, accel=3, center=4).cuda()
    image = torch.rand(B, H, W, device="cuda").to(torch.complex64)
    kspace = ops.fft2c(image)
    batch = {"kspace": kspace, "masked_kspace": kspace * mask, "mask": mask, "target": image.abs(),
             "max": image.abs().amax((-2, -1))}
    cfg = AttackConfig(features=FeatureConfig(margin=3), pgd_restarts=4, chunk=7)
    targets = batch["target"]
    c = engine.draw(targets, cfg, 4, torch.Generator(device="cuda").manual_seed(1),
                    placement_region(targets, cfg.features))
    pert, reg = ops.insert_features(targets, c.index, c.values, cfg.features.ring)
    pert = pert.contiguous()
    score = engine.Scorer(model, from_batch(batch), cfg.chunk)
    span = c.hi - c.lo

    def step():
        _, grad = score(pert, reg, grad=True)
        ops.feature_step(pert, c.values, c.index, grad, c.lo, c.hi, 0.1 * span, cfg.normalize)

    step()  # the batch's first step: chunk masks, plans, cuFFT plans
    with _sync_is_an_error():
        step()
        step()


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
