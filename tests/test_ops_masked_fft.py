"""fastfn.ops masked-FFT operators against the textbook reference (fastfn.reference),
plus gradcheck, opcheck, torch.compile and error messages.

complex128 results must match the reference tightly; complex64 results must err (vs
a complex128 reference) at most a small multiple of what torch's own complex64
pipeline errs.
"""
from __future__ import annotations

import pytest
import torch

import fastfn.ops.masked_fft as masked_fft_ops
from fastfn import ops
from fastfn.reference import masked_fft as ref
from masked_fft_inputs import column_mask, complex_randn, dc_inputs, random_2d_mask

SIZES = [(8, 6), (7, 5), (6, 9), (9, 8)]  # even/even, odd/odd, even/odd, odd/even


def _c128(t):
    return None if t is None else (t.to(torch.complex128) if t.is_complex() else t.double())


def assert_matches(fn_ours, fn_ref, *args, **kwargs):
    """Compare fn_ours(*args) with fn_ref: tight in complex128; in complex64 within 8x
    the error torch's own complex64 reference makes against complex128."""
    out = fn_ours(*args, **kwargs)
    ref128 = fn_ref(*[_c128(a) if isinstance(a, torch.Tensor) else a for a in args],
                    **{k: _c128(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
    scale = ref128.abs().max().clamp_min(1e-30)
    if out.dtype == torch.complex128:
        assert (out - ref128).abs().max() / scale < 1e-12
        return out
    ref64 = fn_ref(*args, **kwargs)
    torch_err = ((ref64.to(torch.complex128) - ref128).abs().max() / scale).item()
    our_err = ((out.to(torch.complex128) - ref128).abs().max() / scale).item()
    assert our_err <= 8 * max(torch_err, 1e-7), (our_err, torch_err)
    return out


# ---------------------------------------------------------------- fft2c / ifft2c


@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_fft2c_ifft2c_match_reference(device, H, W, dtype):
    x = complex_randn(2, 3, H, W, dtype=dtype, device=device)
    assert_matches(ops.fft2c, ref.fft2c, x)
    assert_matches(ops.ifft2c, ref.ifft2c, x)
    torch.testing.assert_close(ops.ifft2c(ops.fft2c(x)), x, rtol=1e-4, atol=1e-5)


def test_fft2c_noncontiguous_realview_and_2d(device):
    base = complex_randn(4, 10, 12, device=device)
    x = base.transpose(-1, -2)[:, ::2]  # (4, 6, 10), strided
    assert not x.is_contiguous()
    assert_matches(ops.fft2c, ref.fft2c, x)
    xr = torch.view_as_real(x[0])  # (6, 10, 2) real view, no batch
    out = ops.fft2c(xr)
    assert out.dtype == torch.float32 and out.shape == xr.shape
    torch.testing.assert_close(torch.view_as_complex(out), ref.fft2c(x[0]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- undersample


@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("kind", ["column", "column_bool", "column_per_batch", "2d", "2d_bool_1d"])
def test_undersample_matches_reference(device, H, W, dtype, kind):
    x = complex_randn(3, H, W, dtype=dtype, device=device)
    if kind.startswith("column"):
        mask = column_mask(W, 3 if kind.endswith("per_batch") else 1, accel=3, center=2, device=device)
    else:
        mask = random_2d_mask(H, W, 1 if kind == "2d_bool_1d" else 3, device=device)
    if kind.endswith("bool") or kind == "2d_bool_1d":
        mask = mask.bool()
    if kind == "2d_bool_1d":
        mask = mask[0]  # (H, W), broadcast over the batch
    assert_matches(ops.undersample, ref.undersample, x, mask)


def test_undersample_batch_shapes_and_realview(device):
    x = complex_randn(2, 3, 8, 6, device=device)
    mask = column_mask(6, 3, accel=2, center=2, device=device)  # (3, 1, 6): varies along dim 1
    assert_matches(ops.undersample, ref.undersample, x, mask)
    xr = torch.view_as_real(x)
    out = ops.undersample(xr, mask)
    assert out.shape == xr.shape and out.dtype == torch.float32
    torch.testing.assert_close(torch.view_as_complex(out), ref.undersample(x, mask), rtol=1e-5, atol=1e-5)


def test_undersample_is_a_projector(device):
    x = complex_randn(2, 8, 8, dtype=torch.complex128, device=device)
    mask = column_mask(8, 1, accel=2, center=2, device=device)
    once = ops.undersample(x, mask)
    torch.testing.assert_close(ops.undersample(once, mask), once)


# ---------------------------------------------------------------- data consistency


@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("coils", [None, 3])
@pytest.mark.parametrize("mask_2d", [False, True])
@pytest.mark.parametrize("lam", [None, 0.7])
def test_dc_matches_reference(device, H, W, dtype, coils, mask_2d, lam):
    d = dc_inputs(2, H, W, coils=coils, dtype=dtype, device=device, accel=3, mask_2d=mask_2d,
                  per_batch_mask=True, seed=H * W)
    assert_matches(ops.data_consistency, ref.data_consistency, d["x"], d["k0"], d["mask"],
                   lam=lam, sens=d.get("sens"))


@pytest.mark.parametrize("coils", [None, 2])
def test_dc_mask_variants(device, coils):
    """bool masks, shared (Bm = 1) masks, fractional float weights, lam as a tensor."""
    d = dc_inputs(3, 8, 10, coils=coils, dtype=torch.complex128, device=device, accel=2)
    sens = d.get("sens")
    mask = d["mask"]
    lam_t = torch.tensor(2.5, dtype=torch.float64, device=device)
    for m in (mask.bool(), mask * 0.5, mask[:1]):
        assert_matches(ops.data_consistency, ref.data_consistency, d["x"], d["k0"], m, lam=None, sens=sens)
        assert_matches(ops.data_consistency, ref.data_consistency, d["x"], d["k0"], m, lam=lam_t, sens=sens)


def test_dc_batch_shapes_noncontiguous_realview(device):
    x = complex_randn(2, 3, 12, 8, device=device).transpose(-1, -2)  # (2, 3, 8, 12) strided
    k0 = complex_randn(2, 3, 12, 8, device=device).transpose(-1, -2)
    mask = column_mask(12, 1, accel=3, center=2, device=device)
    assert not x.is_contiguous()
    assert_matches(ops.data_consistency, ref.data_consistency, x, k0, mask, lam=0.3)
    out = ops.data_consistency(torch.view_as_real(x), torch.view_as_real(k0), mask)
    assert out.shape == (2, 3, 8, 12, 2)
    torch.testing.assert_close(torch.view_as_complex(out), ref.data_consistency(x, k0, mask),
                               rtol=1e-5, atol=1e-5)


def test_hard_dc_keeps_measured_kspace(device):
    """Hard DC replaces the sampled k-space with k0 and keeps the rest (independent check)."""
    d = dc_inputs(2, 8, 8, dtype=torch.complex128, device=device, accel=2)
    out_k = ref.fft2c(ops.data_consistency(d["x"], d["k0"], d["mask"]))
    m = d["mask"].bool().expand_as(out_k)
    torch.testing.assert_close(out_k[m], d["k0"][m])
    torch.testing.assert_close(out_k[~m], ref.fft2c(d["x"])[~m])


def _skip_threads_on_emulation(request, threads, keep=1):
    """The emulated CUDA schedule has no image chunks and visits its threads serially:
    torch's thread count does not change what it runs, so one count (keep) covers it."""
    if request.node.callspec.params.get("device") == "emu" and threads != keep:
        pytest.skip("the emulated CUDA schedule does not depend on torch's thread count")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_column_mask_ops_over_image_chunks(device, threads, request):
    """Images of 1 MiB each: on the CPU the column path runs them in chunks of one image
    per task, coils of one image split across tasks (B = 1), per-image masks read at
    the chunk's offset; the result must not depend on the split."""
    _skip_threads_on_emulation(request, threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        H, W = 256, 512
        for B, coils in [(5, None), (1, 5), (3, 2)]:
            d = dc_inputs(B, H, W, coils=coils, device=device, accel=3, per_batch_mask=True,
                          seed=B + threads)
            for lam in (None, 0.7):
                out = assert_matches(ops.data_consistency, ref.data_consistency, d["x"], d["k0"],
                                     d["mask"], lam=lam, sens=d.get("sens"))
                # coils summed across tasks are added in a fixed order: bitwise repeatable
                again = ops.data_consistency(d["x"], d["k0"], d["mask"], lam=lam, sens=d.get("sens"))
                assert torch.equal(out, again)
            img = d["x"] if coils is None else d["sens"] * d["x"].unsqueeze(1)
            assert_matches(ops.undersample, ref.undersample, img, d["mask"])
            # the backward runs over the same chunks: every gradient against the reference's
            d = {k: _c128(v) for k, v in d.items()}
            lam = torch.tensor(0.7, dtype=torch.float64, device=device)
            names = ["x", "k0", "lam"] + ([] if coils is None else ["sens"])
            g = complex_randn(*d["x"].shape, dtype=torch.complex128, device=device)
            grads = []
            for fn in (ops.data_consistency, ref.data_consistency):
                leaves = {k: (lam if k == "lam" else d[k]).clone().requires_grad_() for k in names}
                fn(leaves["x"], leaves["k0"], d["mask"], lam=leaves["lam"], sens=leaves.get("sens")).backward(g)
                grads.append({k: v.grad for k, v in leaves.items()})
            for k in names:
                torch.testing.assert_close(grads[0][k], grads[1][k], msg=lambda m: f"grad {k}: {m}")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [2, 3])
def test_chunk_results_land_at_unaligned_offsets(device, threads, request):
    """Odd image sizes (7 x 9 complex64: 504 bytes, 8 mod 16) put chunk boundaries at
    offsets the CPU's streaming copy must handle byte-exactly (head and tail)."""
    _skip_threads_on_emulation(request, threads, keep=2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for B in (5, 7):
            d = dc_inputs(B, 7, 9, device=device, accel=2, per_batch_mask=True, seed=B)
            assert_matches(ops.undersample, ref.undersample, d["x"], d["mask"])
            for lam in (None, 0.3):
                assert_matches(ops.data_consistency, ref.data_consistency, d["x"], d["k0"], d["mask"], lam=lam)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("coils", [None, 2])
def test_dc_nothing_sampled_or_zero_weight(device, coils):
    """An all-zero column mask (no gathered column) and lam = 0 both leave x as it is;
    the gradients match the reference's autograd, including d/d lam at 0."""
    d = dc_inputs(2, 6, 8, coils=coils, dtype=torch.complex128, device=device, accel=2)
    sens = d.get("sens")
    empty = torch.zeros_like(d["mask"])
    g = complex_randn(*d["x"].shape, dtype=torch.complex128, device=device)
    for mask, lam in ((empty, None), (empty, 0.5), (d["mask"], 0.0)):
        leaves = [t.clone().requires_grad_() for t in (d["x"], d["k0"])]
        refs = [t.clone().requires_grad_() for t in (d["x"], d["k0"])]
        lam_t = None if lam is None else torch.tensor(lam, dtype=torch.float64, device=device,
                                                       requires_grad=True)
        lam_r = None if lam is None else lam_t.detach().clone().requires_grad_()
        out = ops.data_consistency(leaves[0], leaves[1], mask, lam=lam_t, sens=sens)
        expected = d["x"] if sens is None else (sens.conj() * sens * d["x"].unsqueeze(1)).sum(1)
        torch.testing.assert_close(out, expected)
        out.backward(g)
        ref.data_consistency(refs[0], refs[1], mask, lam=lam_r, sens=sens).backward(g)
        for a, b in zip(leaves + ([lam_t] if lam_t is not None else []),
                        refs + ([lam_r] if lam_r is not None else [])):
            torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------- gradients


def test_gradcheck_fft_ops(device):
    x = complex_randn(2, 3, 4, dtype=torch.complex128, device=device).requires_grad_()
    assert torch.autograd.gradcheck(ops.fft2c, (x,))
    assert torch.autograd.gradcheck(ops.ifft2c, (x,))
    mask = column_mask(4, 2, accel=2, center=1, device=device)
    assert torch.autograd.gradcheck(lambda t: ops.undersample(t, mask), (x,))
    mask2 = random_2d_mask(3, 4, 1, p=0.5, device=device)
    assert torch.autograd.gradcheck(lambda t: ops.undersample(t, mask2), (x,))


@pytest.mark.parametrize("coils", [None, 2])
@pytest.mark.parametrize("mask_2d", [False, True])
@pytest.mark.parametrize("H,W", [(4, 4), (3, 3)])
def test_gradcheck_dc(device, coils, mask_2d, H, W):
    d = dc_inputs(2, H, W, coils=coils, dtype=torch.complex128, device=device, accel=2,
                  mask_2d=mask_2d, per_batch_mask=True, seed=1)
    x = d["x"].requires_grad_()
    k0 = d["k0"].requires_grad_()
    lam = torch.tensor(0.8, dtype=torch.float64, device=device, requires_grad=True)
    inputs = [x, k0, lam]
    if coils is not None:
        inputs.append(d["sens"].requires_grad_())

    def f(x, k0, lam, sens=None):
        return ops.data_consistency(x, k0, d["mask"], lam=lam, sens=sens)

    # gradcheck perturbs k0 through .data, past the version counter that the column
    # caches trust: without the switch the numerical Jacobian would see k0's first
    # measurement throughout
    with masked_fft_ops.column_caches_disabled():
        assert torch.autograd.gradcheck(f, tuple(inputs))
        # hard DC, and single inputs (the backward computes only what is asked)
        assert torch.autograd.gradcheck(lambda x: ops.data_consistency(x, k0.detach(), d["mask"],
                                                                       sens=d.get("sens")), (x,))
        assert torch.autograd.gradcheck(lambda k: ops.data_consistency(x.detach(), k, d["mask"], lam=0.5,
                                                                       sens=d.get("sens")), (k0,))


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_dc_grad_matches_reference_autograd(device, weight):
    """Binary and fractional (0.5) mask weights, per-image column masks."""
    d = dc_inputs(2, 8, 6, coils=3, dtype=torch.complex128, device=device, accel=2,
                  per_batch_mask=True)
    mask = d["mask"] * weight
    lam = torch.tensor(0.4, dtype=torch.float64, device=device)
    leaves = [t.clone().requires_grad_() for t in (d["x"], d["k0"], d["sens"], lam)]
    leaves_ref = [t.clone().requires_grad_() for t in (d["x"], d["k0"], d["sens"], lam)]
    g = complex_randn(2, 8, 6, dtype=torch.complex128, device=device)
    ops.data_consistency(leaves[0], leaves[1], mask, lam=leaves[3], sens=leaves[2]).backward(g)
    ref.data_consistency(leaves_ref[0], leaves_ref[1], mask, lam=leaves_ref[3],
                         sens=leaves_ref[2]).backward(g)
    for a, b in zip(leaves, leaves_ref):
        torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------- opcheck and compile


def _opcheck_cases(device):
    f = masked_fft_ops._ops  # torch.ops.fastfn, or the emulated schedule's namespace on `emu`
    d1 = dc_inputs(2, 6, 5, dtype=torch.complex64, device=device, accel=2)
    d2 = dc_inputs(2, 6, 5, coils=2, dtype=torch.complex128, device=device, accel=2, mask_2d=True)
    m1 = d1["mask"]
    m2 = d2["mask"].squeeze(1).double()  # (1, H, W), the real dtype of complex128
    lam = torch.tensor(0.5, dtype=torch.float64, device=device, requires_grad=True)
    x1 = d1["x"].requires_grad_()
    return [
        (f.fft2c, (x1,)),
        (f.ifft2c, (x1,)),
        (f.undersample, (x1, m1)),
        (f.data_consistency, (x1, d1["k0"].requires_grad_(), m1, None, None)),
        (f.data_consistency,
         (d2["x"].requires_grad_(), d2["k0"].requires_grad_(), m2, d2["sens"].requires_grad_(), lam)),
        # the backward op runs without grad mode (it has no derivative of its own)
        (f.data_consistency_backward,
         (d2["x"].detach(), d2["x"].detach(), d2["k0"].detach(), m2, d2["sens"].detach(), lam.detach(),
          [True, True, True, True])),
        (f.data_consistency_backward,
         (d1["x"].detach(), d1["x"].detach(), d1["k0"].detach(), m1, None, None, [True, False, False, False])),
    ]


def test_opcheck(device):
    for op, args in _opcheck_cases(device):
        torch.library.opcheck(op, args)


def test_dc_double_backward_raises_clearly(device):
    # create_graph through the op keeps first-order gradients exact; differentiating
    # them again raises a message naming the op (it used to fail inside the kernel with
    # "a leaf Variable that requires grad is being used in an in-place operation")
    d = dc_inputs(2, 8, 6, coils=2, device=device, dtype=torch.complex128)
    lam = torch.tensor(0.4, dtype=torch.float64, device=device, requires_grad=True)

    def first_order(create_graph):
        x = d["x"].clone().requires_grad_()
        y = ops.data_consistency(x, d["k0"], d["mask"], lam=lam, sens=d["sens"])
        return x, torch.autograd.grad(y.abs().pow(2).sum(), (x, lam), create_graph=create_graph)

    _, plain = first_order(False)
    x, graph = first_order(True)
    for a, b in zip(graph, plain):
        torch.testing.assert_close(a.detach(), b)
    with pytest.raises(RuntimeError, match="data_consistency has no second derivative"):
        torch.autograd.grad(graph[0].abs().pow(2).sum(), x)


def test_torch_compile_fullgraph(device):
    d = dc_inputs(2, 8, 6, coils=2, device=device, accel=2)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(x, k0, mask, sens, lam):
        y = ops.data_consistency(x, k0, mask, lam=lam, sens=sens)
        return ops.undersample(ops.ifft2c(ops.fft2c(y)), mask.squeeze(1)).abs().sum()

    lam = torch.tensor(0.3, device=device, requires_grad=True)
    x = d["x"].requires_grad_()
    loss = step(x, d["k0"], d["mask"], d["sens"], lam)
    loss.backward()
    expected = ref.undersample(ref.data_consistency(d["x"].detach(), d["k0"], d["mask"], lam=0.3,
                                                    sens=d["sens"]), d["mask"].squeeze(1)).abs().sum()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-4)
    assert x.grad is not None and lam.grad is not None


# ---------------------------------------------------------------- errors


def test_errors_name_the_argument():
    x = complex_randn(2, 8, 6)
    mask = column_mask(6)
    with pytest.raises(TypeError, match="fft2c: x must be complex64"):
        ops.fft2c(torch.randn(2, 8, 6, dtype=torch.float16))
    with pytest.raises(ValueError, match="undersample: mask .* W = 6"):
        ops.undersample(x, column_mask(5))
    with pytest.raises(ValueError, match="mask has 3 rows"):
        ops.undersample(x, torch.ones(3, 6))
    for shape in ((3, 1, 6), (2, 2, 1, 6)):  # batch 3 for 2 images; more dims than the k-space
        with pytest.raises(ValueError, match=r"mask of shape .* does not broadcast to the k-space shape \(2, 8, 6\)"):
            ops.undersample(x, torch.ones(shape))
    with pytest.raises(ValueError, match="k0 must have the shape of x"):
        ops.data_consistency(x, complex_randn(2, 8, 5), mask)
    with pytest.raises(TypeError, match="k0 has dtype"):
        ops.data_consistency(x, x.to(torch.complex128), mask)
    with pytest.raises(ValueError, match=r"sens must be \(B, C, H, W\)"):
        ops.data_consistency(x, complex_randn(2, 3, 8, 6), mask, sens=complex_randn(2, 3, 8, 5))
    with pytest.raises(ValueError, match="varies over the 3 coils"):
        ops.data_consistency(x, complex_randn(2, 3, 8, 6), torch.ones(3, 1, 6),
                             sens=complex_randn(2, 3, 8, 6))
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="lam must be finite and >= 0"):
            ops.data_consistency(x, x, mask, lam=bad)
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        ops.data_consistency(x, x, mask, lam=torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="meta"):
        ops.data_consistency(x, x.to("meta"), mask)


def test_cpp_checks_name_the_argument():
    """The C++ ops check their own inputs (callers may bypass the wrappers)."""
    x = complex_randn(2, 8, 6)
    with pytest.raises(ValueError, match="data_consistency: mask has 5 columns, the image has W = 6"):
        torch.ops.fastfn.data_consistency(x, x, torch.ones(1, 1, 5), None, None)
    with pytest.raises(TypeError, match="undersample: mask must have dtype torch.float32"):
        torch.ops.fastfn.undersample(x, torch.ones(1, 1, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="lam must be a single value"):
        torch.ops.fastfn.data_consistency(x, x, torch.ones(1, 1, 6), None, torch.ones(2))


def _bad_calls():
    """(name, op, args) of op calls the C++ checks reject, one per check."""
    f = torch.ops.fastfn
    x = complex_randn(2, 8, 6)
    xs = complex_randn(2, 3, 8, 6)  # multi-coil k0 and sens
    m = torch.ones(1, 1, 6)
    lam = torch.tensor(0.5)
    grad_all = [True, True, True, True]
    return [
        ("fft2c real x", f.fft2c, (torch.randn(2, 8, 6),)),
        ("ifft2c 1-D x", f.ifft2c, (complex_randn(6),)),
        ("undersample mask columns", f.undersample, (x, torch.ones(1, 1, 5))),
        ("undersample mask rows", f.undersample, (x, torch.ones(1, 3, 6))),
        ("undersample mask batch", f.undersample, (x, torch.ones(3, 1, 6))),
        ("undersample mask dims", f.undersample, (x, torch.ones(1, 6))),
        ("undersample mask dtype", f.undersample, (x, m.double())),
        ("dc k0 shape", f.data_consistency, (x, complex_randn(2, 8, 5), m, None, None)),
        ("dc k0 dtype", f.data_consistency, (x, x.to(torch.complex128), m, None, None)),
        ("dc k0 device", f.data_consistency, (x, x.to("meta"), m, None, None)),
        ("dc mask columns", f.data_consistency, (x, x, torch.ones(1, 1, 5), None, None)),
        ("dc multi-coil x", f.data_consistency, (xs[:, 0:1], xs, m, xs, None)),
        ("dc sens shape", f.data_consistency, (x, xs, m, complex_randn(2, 3, 8, 5), None)),
        ("dc sens dtype", f.data_consistency, (x, xs, m, xs.to(torch.complex128), None)),
        ("dc k0 like sens", f.data_consistency, (x, complex_randn(2, 2, 8, 6), m, xs, None)),
        ("dc lam values", f.data_consistency, (x, x, m, None, torch.ones(2))),
        ("dc lam dtype", f.data_consistency, (x, x, m, None, lam.double())),
        ("dc backward grad shape", f.data_consistency_backward, (x[:1], x, x, m, None, None, grad_all)),
        ("dc backward grad dtype", f.data_consistency_backward,
         (x.to(torch.complex128), x, x, m, None, None, grad_all)),
        ("dc backward mask rows", f.data_consistency_backward, (x, x, x, torch.ones(1, 4, 6), None, lam,
                                                                 grad_all)),
    ]


def _error_of(call):
    try:
        call()
    except Exception as e:  # noqa: BLE001  (the type is what is compared)
        return type(e), str(e).splitlines()[0]
    return None


@pytest.mark.parametrize("name,op,args", _bad_calls(), ids=[c[0] for c in _bad_calls()])
def test_fake_kernels_check_like_the_cpp_ops(name, op, args):
    """Under FakeTensorMode (what torch.compile traces with) the fake kernels reject the
    same calls as the C++ kernels, with the same exception type and message."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = _error_of(lambda: op(*args))
    assert real is not None and real[0] in (ValueError, TypeError), real
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = _error_of(lambda: op(*fake_args))
    assert fake == real


def test_fake_kernel_errors_reach_meta_and_compile():
    """A mask with the wrong number of columns fails in tracing, naming the argument:
    on meta tensors, and under torch.compile before any kernel runs."""
    x = complex_randn(2, 8, 6)
    bad = torch.ones(1, 1, 5)
    message = "undersample: mask has 5 columns, the image has W = 6"
    with pytest.raises(ValueError, match=message):
        ops.undersample(x.to("meta"), bad.to("meta"))
    assert ops.undersample(x.to("meta"), torch.ones(1, 1, 6, device="meta")).shape == x.shape

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(x, mask):
        return ops.data_consistency(x, x, mask, lam=0.5).abs().sum()

    # dynamo reports the fake kernel's ValueError from its tracing, wrapped
    with pytest.raises(torch._dynamo.exc.TorchRuntimeError,
                       match="data_consistency: mask has 5 columns, the image has W = 6"):
        f(x, bad)


def test_empty_inputs(device):
    x = complex_randn(0, 8, 6, device=device)
    assert ops.fft2c(x).shape == x.shape
    assert ops.undersample(x, column_mask(6, device=device)).shape == x.shape
    assert ops.data_consistency(x, x, column_mask(6, device=device), lam=0.1).shape == x.shape


@pytest.mark.cuda
def test_cpu_argument_beside_cuda_x_is_named():
    """The checks run before the device guard: a CPU k0 (or mask, sens) beside a CUDA x
    gets the message naming it, not a guard or kernel error."""
    x = complex_randn(2, 8, 6, device="cuda")
    mask = column_mask(6, device="cuda")
    with pytest.raises(ValueError, match="data_consistency: k0 is on cpu but x is on cuda"):
        torch.ops.fastfn.data_consistency(x, x.cpu(), mask, None, None)
    with pytest.raises(ValueError, match="undersample: mask is on cpu but x is on cuda"):
        torch.ops.fastfn.undersample(x, mask.cpu())
    xs = complex_randn(2, 3, 8, 6, device="cuda")
    with pytest.raises(ValueError, match="data_consistency: sens is on cpu but x is on cuda"):
        torch.ops.fastfn.data_consistency(x, xs, mask, xs.cpu(), None)
