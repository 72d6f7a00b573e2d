"""fastfn.ops.insert_features / feature_step against the pure-PyTorch references."""
from __future__ import annotations

import pytest
import torch

import fastfn.ops.features as features_ops
import fastfn.reference as ref
from fastfn.ops import feature_step, insert_features


def random_features(N: int, R: int, P: int, H: int, W: int, dtype=torch.float32, device="cpu",
                    pad: bool = True, seed: int = 0):
    """Random flat indices (N, R, P) with some -1 padding (never a whole feature) and values."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, H * W, (N, R, P), generator=g)
    if pad and P > 1:
        drop = torch.rand(N, R, P, generator=g) < 0.3
        drop[..., 0] = False
        idx = torch.where(drop, torch.full_like(idx, -1), idx)
    vals = torch.rand(N, R, P, generator=g, dtype=torch.float64).to(dtype)
    return idx.to(device), vals.to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ring", [0, 1, 2])
def test_insert_matches_reference(device, dtype, ring):
    N, R, P, H, W = 3, 4, 10, 12, 9
    images = torch.rand(N, H, W, dtype=dtype, device=device)
    idx, vals = random_features(N, R, P, H, W, dtype, device)
    out, reg = insert_features(images, idx, vals, ring)
    out_r, reg_r = ref.insert_features(images, idx, vals, ring)
    assert out.shape == (N, R, H, W) and reg.shape == (N, R, H, W) and reg.dtype == dtype
    torch.testing.assert_close(out, out_r)
    torch.testing.assert_close(reg, reg_r, rtol=0, atol=0)
    assert torch.equal(images, images.clone())  # inputs untouched


def test_insert_single_candidate_does_not_alias_input(device):
    images = torch.zeros(1, 4, 4, device=device)
    out, reg = insert_features(images, torch.tensor([[[5]]], device=device), torch.tensor([[[2.0]]], device=device))
    assert images.abs().sum() == 0
    assert out[0, 0, 1, 1] == 2.0 and out.sum() == 2.0
    # ring 1 around pixel (1, 1): itself and its 4 neighbours
    expected = torch.zeros(4, 4, device=device)
    expected[1, 1] = expected[0, 1] = expected[2, 1] = expected[1, 0] = expected[1, 2] = 1
    assert torch.equal(reg[0, 0], expected)


def test_insert_ring_clipped_at_border(device):
    images = torch.zeros(1, 5, 5, device=device)
    _, reg = insert_features(images, torch.tensor([[[0]]], device=device), torch.ones(1, 1, 1, device=device), 2)
    # L1 ball of radius 2 around the corner, clipped: (0,0),(0,1),(0,2),(1,0),(1,1),(2,0)
    assert reg.sum() == 6 and reg[0, 0, 1, 1] == 1 and reg[0, 0, 2, 1] == 0


def test_repeated_index_adds(device):
    images = torch.zeros(1, 3, 3, device=device)
    out, _ = insert_features(images, torch.tensor([[[4, 4]]], device=device), torch.tensor([[[1.0, 2.5]]], device=device))
    assert out[0, 0, 1, 1] == 3.5


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_feature_step_matches_reference(device, normalize, dtype):
    N, R, P, H, W = 2, 3, 7, 10, 11
    images = torch.rand(N, H, W, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(1)
    # unique pixels per feature, as the generators emit them
    idx = torch.stack([torch.randperm(H * W, generator=g)[:P] for _ in range(N * R)]).view(N, R, P).to(device)
    idx[0, 0, 3:] = -1
    vals = torch.rand(N, R, P, dtype=dtype, device=device)
    pert, _ = insert_features(images, idx, vals)
    grad = torch.randn(N, R, H, W, dtype=dtype, device=device)
    grad[1, 2] = 0  # a feature the loss does not see stays put
    lo = torch.full((N,), 0.2, dtype=dtype, device=device)
    hi = torch.rand(N, R, dtype=dtype, device=device) * 0.5 + 0.5
    step = torch.rand(N, R, dtype=dtype, device=device) * 0.3  # a per-feature step
    exp_pert, exp_vals = ref.feature_step(pert, vals, idx, grad, lo.unsqueeze(1).expand(N, R), hi, step, normalize)
    feature_step(pert, vals, idx, grad, lo, hi, step, normalize)
    torch.testing.assert_close(vals, exp_vals)
    torch.testing.assert_close(pert, exp_pert)
    # the in-place image stays the insertion of the in-place values
    torch.testing.assert_close(pert, insert_features(images, idx, vals)[0])
    assert bool((vals[idx >= 0] >= 0.2).all())


def test_feature_step_sign_ascends_a_linear_loss(device):
    # L = sum(w * x): one sign step of size s raises L by s * sum|w| over the support
    # (bounds far away), which the reference does not need to know.
    images = torch.zeros(1, 6, 6, device=device, dtype=torch.float64)
    idx = torch.tensor([[[0, 7, 14]]], device=device)
    vals = torch.zeros(1, 1, 3, device=device, dtype=torch.float64)
    pert, _ = insert_features(images, idx, vals)
    w = torch.randn(1, 1, 6, 6, device=device, dtype=torch.float64)
    before = (w * pert).sum()
    feature_step(pert, vals, idx, w, -10.0, 10.0, 0.5)
    gain = (w * pert).sum() - before
    assert torch.isclose(gain, 0.5 * w.view(-1)[[0, 7, 14]].abs().sum())


def test_insert_gradcheck():
    N, R, P, H, W = 2, 2, 4, 5, 6
    images = torch.rand(N, H, W, dtype=torch.float64, requires_grad=True)
    idx, vals = random_features(N, R, P, H, W, torch.float64)
    vals.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: insert_features(a, idx, b)[0], (images, vals))
    assert torch.autograd.gradgradcheck(lambda a, b: insert_features(a, idx, b)[0], (images, vals))


def test_insert_grad_matches_reference(device):
    N, R, P, H, W = 2, 3, 5, 7, 7
    images = torch.rand(N, H, W, device=device, requires_grad=True)
    idx, vals = random_features(N, R, P, H, W, device=device)
    vals.requires_grad_(True)
    w = torch.randn(N, R, H, W, device=device)
    ga = torch.autograd.grad((insert_features(images, idx, vals)[0] * w).sum(), (images, vals))
    gb = torch.autograd.grad((ref.insert_features(images, idx, vals)[0] * w).sum(), (images, vals))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_opcheck(device):
    N, R, P, H, W = 2, 2, 4, 6, 5
    images = torch.rand(N, H, W, device=device, requires_grad=True)
    idx, vals = random_features(N, R, P, H, W, device=device)
    vals.requires_grad_(True)
    f = features_ops._ops  # torch.ops.fastfn, or the emulated schedule's namespace on `emu`
    torch.library.opcheck(f.insert_features.default, (images, idx, vals, 1))
    pert, _ = insert_features(images.detach(), idx, vals.detach())
    grad = torch.randn_like(pert)
    lo, hi = torch.zeros(N, R, device=device), torch.ones(N, R, device=device)
    torch.library.opcheck(f.feature_step.default,
                          (pert.clone(), vals.detach().clone(), idx, grad, lo, hi, torch.full((N, R), 0.1, device=device), False))


def test_compile_fullgraph():
    N, R, P, H, W = 2, 3, 4, 8, 8
    images = torch.rand(N, H, W)
    idx, vals = random_features(N, R, P, H, W)

    def fn(images, idx, vals):
        pert, reg = insert_features(images, idx, vals)
        return (pert * reg).sum((-1, -2))

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(images, idx, vals), fn(images, idx, vals))


def test_compile_fullgraph_feature_step():
    N, R, P, H, W = 2, 2, 3, 6, 6
    images = torch.rand(N, H, W)
    idx = torch.tensor([[[0, 7, 14], [3, 9, -1]], [[35, 1, 2], [20, 21, 22]]])
    vals = torch.rand(N, R, P) * (idx >= 0)
    grad = torch.randn(N, R, H, W)
    lo, hi, step = torch.zeros(N, R), torch.ones(N, R), torch.full((N, R), 0.3)

    def fn(pert, vals):
        torch.ops.fastfn.feature_step(pert, vals, idx, grad, lo, hi, step, False)
        return pert * 2

    pert = insert_features(images, idx, vals)[0]
    p1, v1 = pert.clone(), vals.clone()
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(p1, v1)
    exp_p, exp_v = ref.feature_step(pert, vals, idx, grad, lo, hi, step)
    torch.testing.assert_close(v1, exp_v)
    torch.testing.assert_close(out, 2 * exp_p)


@pytest.mark.parametrize("bad, msg", [
    (lambda im, i, v: (im, i.clone().fill_(10 ** 6), v), "outside the image"),
    (lambda im, i, v: (im, torch.where(i == i[0, 0, 0], -7, i), v), "outside the image"),
    (lambda im, i, v: (im[:1], i, v), "images"),
    (lambda im, i, v: (im, i, v[..., :2]), "shape of index"),
    (lambda im, i, v: (im, i[..., :0], v[..., :0]), "empty"),
    (lambda im, i, v: (im, torch.where(torch.arange(3).view(1, 1, 3) >= 0, -1, i)[:, :1], v[:, :1]), "empty support"),
    (lambda im, i, v: (im, i.int(), v), "int64"),
    (lambda im, i, v: (im, i, v.double()), "dtype"),
])
def test_insert_bad_input(device, bad, msg):
    images = torch.rand(2, 4, 4, device=device)
    idx = torch.randint(0, 16, (2, 2, 3), device=device)
    vals = torch.rand(2, 2, 3, device=device)
    with pytest.raises(RuntimeError, match=msg):
        insert_features(*bad(images, idx, vals))


def test_feature_step_bad_input():
    pert = torch.rand(2, 2, 4, 4)
    vals = torch.rand(2, 2, 3)
    idx = torch.randint(0, 16, (2, 2, 3))
    with pytest.raises(RuntimeError, match="grad"):
        feature_step(pert, vals, idx, torch.rand(2, 2, 4, 5), 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="lo"):
        feature_step(pert, vals, idx, torch.rand_like(pert), torch.zeros(3), 1.0, 0.1)
    with pytest.raises(RuntimeError, match="outside the image"):
        feature_step(pert, vals, idx + 100, torch.rand_like(pert), 0.0, 1.0, 0.1)


def _bad_feature_calls():
    """(name, op, args) of calls the C++ argument checks reject."""
    f = torch.ops.fastfn
    images = torch.rand(2, 4, 4)
    idx = torch.randint(0, 16, (2, 2, 3))
    vals = torch.rand(2, 2, 3)
    pert = torch.rand(2, 2, 4, 4)
    b = torch.zeros(2, 2)
    return [
        ("insert images dims", f.insert_features, (images[0], idx, vals, 1)),
        ("insert index dims", f.insert_features, (images, idx[0], vals[0], 1)),
        ("insert index dtype", f.insert_features, (images, idx.int(), vals, 1)),
        ("insert values shape", f.insert_features, (images, idx, vals[..., :2], 1)),
        ("insert values dtype", f.insert_features, (images, idx, vals.double(), 1)),
        ("insert batch", f.insert_features, (images[:1], idx, vals, 1)),
        ("insert ring", f.insert_features, (images, idx, vals, -1)),
        ("step perturbed dims", f.feature_step, (pert[0], vals, idx, pert[0], b, b, b, False)),
        ("step grad shape", f.feature_step, (pert, vals, idx, pert[..., :3], b, b, b, False)),
        ("step bounds shape", f.feature_step, (pert, vals, idx, pert, b[:1], b, b, False)),
        ("step bounds dtype", f.feature_step, (pert, vals, idx, pert, b, b.double(), b, False)),
        ("step index", f.feature_step, (pert, vals, idx[:, :1], pert, b, b, b, False)),
    ]


@pytest.mark.parametrize("name,op,args", _bad_feature_calls(), ids=[c[0] for c in _bad_feature_calls()])
def test_fake_kernels_check_like_the_cpp_ops(name, op, args):
    """Under FakeTensorMode the fake kernels reject the same calls as the C++ kernels,
    with the same message."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def error_of(call):
        try:
            call()
        except RuntimeError as e:
            return str(e).splitlines()[0]
        return None

    real = error_of(lambda: op(*args))
    assert real is not None
    with FakeTensorMode() as mode:
        fake = error_of(lambda: op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]))
    assert fake == real


@pytest.mark.cuda
def test_cuda_feature_ops_check_before_their_empty_return():
    """Like the CPU kernels, the CUDA ones check arguments and index values even when
    the output is empty, and name a CPU argument beside CUDA images."""
    empty_images = torch.rand(0, 4, 4, device="cuda")
    with pytest.raises(RuntimeError, match="index has 1 images"):
        insert_features(empty_images, torch.zeros(1, 1, 2, dtype=torch.long, device="cuda"),
                        torch.rand(1, 1, 2, device="cuda"))
    images = torch.rand(1, 0, 4, device="cuda")  # H * W = 0: every index is outside
    with pytest.raises(RuntimeError, match="outside the image"):
        insert_features(images, torch.zeros(1, 1, 2, dtype=torch.long, device="cuda"),
                        torch.rand(1, 1, 2, device="cuda"))
    with pytest.raises(RuntimeError, match="must be on one device"):
        insert_features(torch.rand(1, 4, 4, device="cuda"), torch.zeros(1, 1, 2, dtype=torch.long),
                        torch.rand(1, 1, 2, device="cuda"))
