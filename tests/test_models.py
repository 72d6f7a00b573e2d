"""Models: the Reconstructor interface, U-Net, cascade network, VarNet, wrap, build_model.

Independent references: torch.fft for the zero-filled images, the U-Net's parameter
count from its architecture formula and as pinned from fastMRI 0.3.0, fastMRI's own
U-Net module when the fastmri package is installed, and the physics (a hard-DC
output's k-space equals the measurement at sampled columns).
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from fastfn.models import (MODEL_NAMES, CascadeNet, Reconstructor, Unet, UnetReconstructor,
                           build_model, make_config, model_spec, wrap)
from fastfn.models.varnet import acs_mask

TINY = {
    "unet": dict(chans=4, num_pool_layers=2),
    "cascade": dict(num_cascades=2, chans=6, num_convs=3),
    "varnet": dict(num_cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2),
}
COILS = 3


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def ref_ifft2c(k: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"),
                              dim=(-2, -1))


def ref_fft2c(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"),
                              dim=(-2, -1))


def column_mask(batch: int, width: int, centre: int = 4, seed: int = 0) -> torch.Tensor:
    """float (B, 1, W): a fully-sampled centre block plus random columns."""
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(batch, 1, width, generator=g) < 0.3).float()
    c = width // 2
    m[..., c - centre // 2:c + centre - centre // 2] = 1
    return m


def inputs(name: str, shape, device, batch: int = 2):
    """(masked_kspace, mask) for model name at image shape (H, W)."""
    H, W = shape
    multicoil = name == "varnet"
    k = torch.randn(batch, *((COILS,) if multicoil else ()), H, W, dtype=torch.complex64, device=device)
    mask = column_mask(batch, W).to(device)
    m = mask.unsqueeze(1) if multicoil else mask
    return k * m, mask


def tiny(name: str, device) -> Reconstructor:
    return build_model(name, **TINY[name]).to(device)


# --------------------------------------------------------------------------- U-Net

def fastmri_unet_param_count(in_chans: int, out_chans: int, chans: int, pools: int) -> int:
    """From the architecture: ConvBlock = 2 bias-free 3x3 convs, TransposeConvBlock = a bias-free
    2x2 transposed conv, instance norms without affine parameters, a final 1x1 conv with bias."""
    def conv_block(i: int, o: int) -> int:
        return 9 * i * o + 9 * o * o

    widths = [chans * 2 ** level for level in range(pools + 1)]     # chans ... bottleneck
    n = conv_block(in_chans, widths[0])
    n += sum(conv_block(widths[l - 1], widths[l]) for l in range(1, pools + 1))
    n += sum(4 * widths[l + 1] * widths[l] + conv_block(widths[l + 1], widths[l]) for l in range(pools))
    return n + widths[0] * out_chans + out_chans


def test_unet_parameter_count_equals_fastmri():
    count = sum(p.numel() for p in Unet(1, 1, 32, 4).parameters())
    assert count == fastmri_unet_param_count(1, 1, 32, 4)
    # Pinned from fastmri 0.3.0: sum(p.numel() for p in fastmri.models.Unet(1, 1, 32, 4).parameters()).
    assert count == 7_756_097
    assert sum(p.numel() for p in Unet(2, 2, 18, 4).parameters()) == fastmri_unet_param_count(2, 2, 18, 4)


def _fastmri_unet_module():
    spec = importlib.util.find_spec("fastmri")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the fastmri package is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "unet.py"
    mod_spec = importlib.util.spec_from_file_location("_fastmri_unet", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)        # unet.py needs only torch
    return module


def test_unet_matches_fastmri_module_when_installed():
    ref = _fastmri_unet_module().Unet(1, 1, 8, 3).eval()
    ours = Unet(1, 1, 8, 3).eval()
    ours.load_state_dict(ref.state_dict())      # same parameter names and shapes
    x = torch.randn(2, 1, 45, 38)               # odd, not a multiple of 8
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,pools", [((32, 32), 2), ((33, 47), 3), ((20, 37), 2), ((17, 16), 3)])
def test_unet_output_shape(shape, pools, device):
    net = Unet(1, 3, chans=4, num_pool_layers=pools).to(device)
    out = net(torch.randn(2, 1, *shape, device=device))
    assert out.shape == (2, 3, *shape)


def test_unet_rejects_too_small_and_wrong_channels():
    with pytest.raises(ValueError, match="too small"):
        Unet(1, 1, 4, 3)(torch.randn(1, 1, 7, 40))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        Unet(1, 1, 4, 2)(torch.randn(1, 2, 16, 16))


def test_unet_reconstructor_input_transform(device):
    """With the U-Net replaced by the identity, the reconstructor returns the zero-filled
    magnitude (RSS for coils) cropped: normalisation is undone exactly."""
    torch.manual_seed(1)
    k = torch.randn(2, 40, 30, dtype=torch.complex64, device=device)
    mask = column_mask(2, 30).to(device)
    model = UnetReconstructor(chans=4, num_pool_layers=2).to(device)
    model.module = nn.Identity()
    model.clamp = None
    out = model(k * mask, mask, crop_size=(24, 20))
    expected = ref_ifft2c(k * mask).abs()[:, 8:32, 5:25]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    kc = torch.randn(2, COILS, 40, 30, dtype=torch.complex64, device=device)
    mc = UnetReconstructor(chans=4, num_pool_layers=2, multicoil=True).to(device)
    mc.module = nn.Identity()
    mc.clamp = None
    expected = ref_ifft2c(kc).abs().pow(2).sum(1).sqrt()
    torch.testing.assert_close(mc(kc, mask), expected, rtol=1e-5, atol=1e-5)


def test_unet_reconstructor_normalisation_is_clamped():
    """The U-Net sees the magnitude's (x - mean) / std, clamped to +-6: record its input."""
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x

    model = UnetReconstructor(chans=4, num_pool_layers=2)
    model.module = Spy()
    raw = torch.ones(32, 32)
    raw[5, 9] = 100.0                                        # z = 32 before the clamp
    model(ref_fft2c(raw.to(torch.complex64))[None], torch.ones(1, 1, 32))
    z = (raw - raw.mean()) / raw.std()
    assert z.max() > 6
    torch.testing.assert_close(seen["x"][0, 0], z.clamp(-6, 6), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- interface

@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape,crop", [((32, 32), (20, 20)), ((33, 27), None), ((40, 45), (25, 31))])
def test_interface_shapes_and_gradient(name, shape, crop, device):
    model = tiny(name, device)
    assert isinstance(model, Reconstructor)
    assert model.multicoil == (name == "varnet")
    k, mask = inputs(name, shape, device)
    k.requires_grad_(True)
    out = model(k, mask, crop_size=crop)
    assert out.shape == (2, *(crop or shape))
    assert not out.is_complex() and torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.square().sum(), k)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradient_wrt_masked_kspace_matches_finite_differences(name):
    """The attack ascends this gradient: check it in complex128 (torch's complex gradcheck)."""
    config = dict(TINY[name], **({"dc": "soft"} if name == "cascade" else {}))
    model = build_model(name, **config).double()
    shape = (1, 2, 16, 12) if name == "varnet" else (1, 16, 12)
    k = torch.randn(*shape, dtype=torch.complex128, requires_grad=True)
    mask = torch.zeros(1, 1, 12, dtype=torch.float64)
    mask[..., [1, 4, 5, 6, 7]] = 1
    assert torch.autograd.gradcheck(lambda k: model(k, mask, crop_size=(10, 10)), (k,),
                                    fast_mode=True, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_all_zero_kspace_gives_finite_gradients(name):
    """Zero images occur (empty slices, zero background); no NaN from sqrt, std or division."""
    model = tiny(name, "cpu")
    k, mask = inputs(name, (32, 32), "cpu")
    k = torch.zeros_like(k, requires_grad=True)
    out = model(k, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(k.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mixed_precision(name, device):
    """The trainer runs models under autocast (float16 on CUDA; bfloat16 here on CPU)."""
    model = tiny(name, device)
    k, mask = inputs(name, (32, 32), device)
    k.requires_grad_(True)
    with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16):
        out = model(k, mask, crop_size=(24, 24))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.sum(), k)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(out, model(k, mask, crop_size=(24, 24)), rtol=0.1, atol=0.1 * out.abs().max().item())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scale_equivariance(name):
    """Every model normalises its input: f(a k) = a f(k) (k-space scales differ by scanner)."""
    model = tiny(name, "cpu").eval()
    k, mask = inputs(name, (32, 30), "cpu")
    a = 1e-4
    torch.testing.assert_close(model(a * k, mask), a * model(k, mask), rtol=1e-3, atol=1e-3 * a)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_rebuild_from_spec(name):
    model = tiny(name, "cpu").eval()
    spec_name, config = model_spec(model)
    assert spec_name == name and config == asdict(make_config(name, **TINY[name]))
    rebuilt = build_model(spec_name, **config).eval()
    rebuilt.load_state_dict(model.state_dict())
    k, mask = inputs(name, (32, 32), "cpu")
    torch.testing.assert_close(rebuilt(k, mask), model(k, mask))


def test_build_model_bad_input():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['chanz'\]"):
        build_model("unet", chanz=3)
    with pytest.raises(ValueError, match="not made by"):
        model_spec(wrap(nn.Identity()))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bad_inputs_name_the_argument(name):
    model = tiny(name, "cpu")
    k, mask = inputs(name, (32, 32), "cpu")
    with pytest.raises(ValueError, match="masked_kspace must be complex"):
        model(k.real, mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        model(k, mask[..., :-1])
    with pytest.raises(ValueError, match="crop"):
        model(k, mask, crop_size=(40, 10))
    if name != "varnet":
        with pytest.raises(ValueError, match="single-coil"):
            model(k.unsqueeze(1).expand(-1, 2, -1, -1), mask)


# --------------------------------------------------------------------------- cascade

def assert_hard_dc_reconstruction(model: CascadeNet, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The complex reconstruction keeps the measured columns of k exactly (hard DC) and
    changes the unsampled ones (no identity reconstruction); returns the sampled-entry
    mask, shaped like k."""
    x = model.reconstruct_complex(k, mask)
    assert x.shape == k.shape and x.is_complex()
    kx = ref_fft2c(x)
    sampled = mask.bool().expand_as(kx)
    torch.testing.assert_close(kx[sampled], k[sampled], rtol=0, atol=1e-5 * k.abs().max().item())
    assert (kx[~sampled].abs() > 1e-3).float().mean() > 0.5
    return sampled


def test_cascade_hard_dc_keeps_measured_columns(device):
    model = CascadeNet(num_cascades=2, chans=6, num_convs=3, dc="hard").to(device)
    k, mask = inputs("cascade", (32, 28), device)
    assert_hard_dc_reconstruction(model, k, mask)


def test_cascade_unet_denoiser_shapes_hard_dc_and_gradient(device):
    model = CascadeNet(num_cascades=2, chans=4, dc="hard", denoiser="unet", pools=2).to(device)
    assert all(isinstance(d.unet, Unet) for d in model.cnns)
    k, mask = inputs("cascade", (32, 28), device)
    k.requires_grad_(True)
    sampled = assert_hard_dc_reconstruction(model, k, mask)
    out = model(k, mask, crop_size=(20, 20))
    assert out.shape == (2, 20, 20)
    (grad,) = torch.autograd.grad(out.sum(), k)
    # the image depends on the measured samples (hard DC copies them in; the gradient must reach them)
    assert grad[sampled].abs().gt(0).float().mean() > 0.9
    model(k, mask).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("denoiser", ["cnn", "unet"])
def test_cascade_norm_option_shapes_hard_dc_and_gradient(device, denoiser):
    # 30 x 26 is not a multiple of 2**pools = 4: the U-Net denoiser must pad and crop back
    model = CascadeNet(num_cascades=2, chans=4, num_convs=3, dc="hard", denoiser=denoiser, pools=2,
                       norm=True).to(device)
    k, mask = inputs("cascade", (30, 26), device)
    k.requires_grad_(True)
    sampled = assert_hard_dc_reconstruction(model, k, mask)
    out = model(k, mask, crop_size=(20, 20))
    assert out.shape == (2, 20, 20)
    (grad,) = torch.autograd.grad(out.sum(), k)
    assert grad[sampled].abs().gt(0).float().mean() > 0.9
    # the gradient also reaches the masked (unsampled) k-space entries through the zero-filled input
    assert grad[~sampled].abs().gt(0).float().mean() > 0.9


@pytest.mark.parametrize("denoiser", ["cnn", "unet"])
def test_cascade_norm_denoiser_is_scale_and_shift_equivariant(denoiser):
    """With norm, D(a x + b) - (a x + b) == a (D(x) - x) for a > 0 and a per-channel shift b."""
    model = CascadeNet(num_cascades=1, chans=4, num_convs=3, denoiser=denoiser, pools=2, norm=True)
    cnn = model.cnns[0].double()
    x = torch.randn(2, 16, 12, dtype=torch.complex128)
    a, b = 37.0, complex(-2.0, 5.0)
    with torch.no_grad():
        ref = a * (cnn(x) - x)
        got = cnn(a * x + b) - (a * x + b)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())
    # without norm a plain CNN is not scale equivariant (biases), so the property is the option's
    plain = CascadeNet(num_cascades=1, chans=4, num_convs=3, denoiser=denoiser, pools=2).cnns[0].double()
    with torch.no_grad():
        assert not torch.allclose(plain(a * x) - a * x, a * (plain(x) - x), rtol=1e-6)


def test_cascade_instance_norm_option_shapes_hard_dc_and_gradient(device):
    model = CascadeNet(num_cascades=2, chans=4, num_convs=3, dc="hard", instance_norm=True).to(device)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in model.cnns[0].modules()) == 2
    k, mask = inputs("cascade", (30, 26), device)
    k.requires_grad_(True)
    sampled = assert_hard_dc_reconstruction(model, k, mask)
    (grad,) = torch.autograd.grad(model(k, mask, crop_size=(20, 20)).sum(), k)
    assert grad[sampled].abs().gt(0).float().mean() > 0.9
    assert grad[~sampled].abs().gt(0).float().mean() > 0.9
    # instance norm after the first conv: the rest of the CNN ignores a positive scale and a shift of its features
    z = torch.randn(2, 4, 16, 12, dtype=torch.float64)
    rest = model.cnns[0].cpu().double().layers[1:]
    with torch.no_grad():
        torch.testing.assert_close(rest(2.5 * z + 0.7), rest(z), rtol=1e-4, atol=1e-4)  # eps of the norm


@pytest.mark.parametrize("norm", [False, True])
def test_residual_on_channels_magnitude_is_the_third_input_channel(norm):
    """magnitude=True feeds (re, im, |re + i im|) of the (normalised) channels to the net."""
    from fastfn.models.cascade import residual_on_channels
    x = torch.randn(3, 10, 7, dtype=torch.complex128)
    seen = {}

    def net(chans):
        seen["in"] = chans
        return torch.zeros_like(chans[:, :2])
    out = residual_on_channels(x, net, norm=norm, magnitude=True)
    torch.testing.assert_close(out, x)              # zero residual: x itself
    chans = seen["in"]
    assert chans.shape == (3, 3, 10, 7)
    re_im = torch.view_as_real(x).permute(0, 3, 1, 2)
    if norm:
        re_im = (re_im - re_im.mean(dim=(-2, -1), keepdim=True)) / re_im.std(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(chans[:, :2], re_im)
    torch.testing.assert_close(chans[:, 2], torch.complex(re_im[:, 0], re_im[:, 1]).abs())


@pytest.mark.parametrize("denoiser", ["cnn", "unet"])
def test_cascade_magnitude_option_widens_first_layer_and_trains(device, denoiser):
    model = CascadeNet(num_cascades=2, chans=4, num_convs=3, denoiser=denoiser, pools=2,
                       magnitude=True).to(device)
    first = next(m for m in model.cnns[0].modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 3
    k, mask = inputs("cascade", (32, 28), device)
    assert_hard_dc_reconstruction(model, k, mask)
    model(k, mask).sum().backward()
    assert first.weight.grad[:, 2].abs().sum() > 0    # the magnitude channel is used


def test_cascade_norm_defaults_off_and_adds_no_parameters():
    """Old checkpoints (made before the option existed) load: same keys, norm off by default."""
    assert make_config("cascade").norm is False and make_config("cascade").instance_norm is False
    assert make_config("cascade").magnitude is False
    old = build_model("cascade", **TINY["cascade"])
    for option in ("norm", "instance_norm"):
        new = build_model("cascade", **TINY["cascade"], **{option: True})
        if option == "norm":        # instance norm inserts layers, so only its parameter count matches
            assert old.state_dict().keys() == new.state_dict().keys()
            new.load_state_dict(old.state_dict())
        assert sum(p.numel() for p in new.parameters()) == sum(p.numel() for p in old.parameters())


def test_cascade_rejects_unknown_denoiser():
    with pytest.raises(ValueError, match="denoiser"):
        CascadeNet(denoiser="resnet")


def test_cascade_soft_dc_weight_is_nonnegative_and_learnable():
    model = CascadeNet(num_cascades=2, chans=4, num_convs=3, dc="soft", lam_init=0.5)
    assert model.dcs[0].lam.item() == pytest.approx(0.5)
    with torch.no_grad():
        model.dcs[0].raw_lam.fill_(-30.0)
    assert model.dcs[0].lam.item() >= 0
    k, mask = inputs("cascade", (24, 24), "cpu")
    model(k, mask).sum().backward()
    assert model.dcs[1].raw_lam.grad is not None and model.dcs[1].raw_lam.grad != 0


def test_cascade_soft_dc_with_large_weight_approaches_hard():
    model = CascadeNet(num_cascades=1, chans=4, num_convs=3, dc="soft", lam_init=1e6)
    k, mask = inputs("cascade", (24, 24), "cpu")
    kx = ref_fft2c(model.reconstruct_complex(k, mask))
    sampled = mask.bool().expand_as(kx)
    torch.testing.assert_close(kx[sampled], k[sampled], rtol=0, atol=1e-4 * k.abs().max().item())


# --------------------------------------------------------------------------- VarNet

def test_acs_mask_is_the_symmetric_centre_run():
    W = 32
    mask = torch.zeros(2, 1, 1, W)
    mask[0, ..., 13:19] = 1                  # 3 left of centre 16, 3 right (16, 17, 18)
    mask[0, ..., [2, 7, 25, 30]] = 1         # separated by gaps from the centre run
    mask[1, ..., 14:21] = 1                  # 2 left, 5 right -> symmetric run of 4
    acs = acs_mask(mask)[:, 0, 0]
    expected = torch.zeros(2, W)
    expected[0, 13:19] = 1
    expected[1, 14:18] = 1
    torch.testing.assert_close(acs, expected)


def test_varnet_sensitivities_have_unit_rss():
    model = tiny("varnet", "cpu")
    k, mask = inputs("varnet", (32, 32), "cpu")
    sens = model.sens_net(k, mask.unsqueeze(1))
    assert sens.shape == k.shape
    torch.testing.assert_close(sens.abs().pow(2).sum(1).sqrt(), torch.ones(2, 32, 32), rtol=1e-5, atol=1e-5)


def test_varnet_takes_single_coil_as_one_coil():
    model = tiny("varnet", "cpu").eval()
    k, mask = inputs("cascade", (32, 32), "cpu")
    torch.testing.assert_close(model(k, mask, crop_size=(16, 16)),
                               model(k.unsqueeze(1), mask.unsqueeze(1), crop_size=(16, 16)))


# --------------------------------------------------------------------------- wrap

def test_wrap_complex_identity_is_zero_filled_magnitude(device):
    model = wrap(nn.Identity(), input="complex")
    k, mask = inputs("cascade", (30, 26), device)
    k.requires_grad_(True)
    out = model(k, mask, crop_size=(20, 20))
    torch.testing.assert_close(out, ref_ifft2c(k).abs()[:, 5:25, 3:23], rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), k)
    assert grad.abs().sum() > 0


def test_wrap_user_module_trains():
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    model = wrap(net, input="magnitude")
    k, mask = inputs("unet", (32, 32), "cpu")
    out = model(k, mask, crop_size=(16, 16))
    assert out.shape == (2, 16, 16)
    out.mean().backward()
    assert net[0].weight.grad is not None


def test_wrap_rejects_bad_output_and_options():
    k, mask = inputs("unet", (32, 32), "cpu")
    with pytest.raises(ValueError, match="returned"):
        wrap(nn.Conv2d(1, 3, 1))(k, mask)
    with pytest.raises(ValueError, match="input must be"):
        wrap(nn.Identity(), input="kspace")
    with pytest.raises(ValueError, match="single-coil"):
        wrap(nn.Identity(), input="complex", multicoil=True)

