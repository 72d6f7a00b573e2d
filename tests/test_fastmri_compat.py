"""fastMRI's networks and weight files in fastfn.

Independent references: fastMRI 0.3.0's own modules and data transforms
(``pip install --no-deps fastmri==0.3.0``; the tests that need it skip without it),
run by hand on fastMRI's 640 x 368 knee geometry with header padding; fastfn's own
models for the weight-file tests, whose U-Net and VarNet use fastMRI's parameter
names (tests/test_models.py checks the U-Net against fastMRI's module).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fastfn.attack import AttackConfig, run_attack
from fastfn.data import (KspaceTransform, RandomMaskFunc, SliceDataset, collate, volume_seed,
                         write_synthetic_dataset)
from fastfn.models import build_model, model_spec
from fastfn.models.fastmri_compat import (FastmriUnet, FastmriVarNet, fastmri_kind, from_fastmri,
                                          to_fastfn)
from fastfn.models.weights import (FASTFN_CHECKPOINT_FORMAT, RELEASED, WeightsError,
                                   fastfn_state_dict, infer_config, load_weights, released_config,
                                   to_fastmri_state_dict)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

# fastMRI's single-coil knee geometry: 640 x 368 k-space (readout oversampled twice),
# phase-encoding columns acquired in [18, 350), 320 x 320 reconstruction.
H, W, PAD, RECON = 640, 368, (18, 350), (320, 320)
ATTRS = {"padding_left": PAD[0], "padding_right": PAD[1], "recon_size": (*RECON, 1), "max": 1.0}
SMALL_UNET = dict(chans=8, num_pool_layers=2)
SMALL_VARNET = dict(num_cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2)


def np_fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def knee_like_kspace(coils: int | None, seed: int = 0) -> np.ndarray:
    """complex64 (H, W) or (coils, H, W): an ellipse with texture and a smooth phase
    (coil sensitivities as Gaussians), zero outside the acquired columns PAD."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    mag = ((yy / 0.45) ** 2 + (xx / 0.8) ** 2 < 1) * (0.5 + 0.5 * rng.random((H, W)))
    image = mag * np.exp(1j * (0.7 * xx + 0.3 * yy))
    if coils is not None:
        centres = np.linspace(-1, 1, coils)[:, None, None]
        image = image * np.exp(-((xx - centres) ** 2)) * np.exp(1j * centres * yy)
    k = np_fft2c(image).astype(np.complex64)
    k[..., :PAD[0]] = 0
    k[..., PAD[1]:] = 0
    return k


def unet_inputs(k: np.ndarray, fname: str):
    """fastfn's side of the U-Net pipeline: masked k-space (1, [C,] H, W) and mask (1, 1, W).
    fastMRI's U-Net transform ignores the header padding (the padded columns are zero)."""
    s = KspaceTransform(RandomMaskFunc([0.08], [4]), crop_size=RECON, use_padding=False)(
        k, None, None, ATTRS, fname, 0)
    return s["masked_kspace"][None], s["mask"][None]


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * b.abs().max().item())


# --------------------------------------------------------------------------- U-Net

@pytest.mark.parametrize("coils", [None, 4])
def test_unet_equals_fastmri_pipeline_on_knee_geometry(fastmri, coils, tmp_path):
    """fastMRI's UnetDataTransform + Unet + de-normalisation by hand == from_fastmri ==
    fastfn's U-Net with the same weights (from the module and from a state_dict file)."""
    T = fastmri.data.transforms
    torch.manual_seed(1)
    net = fastmri.models.Unet(1, 1, **SMALL_UNET).eval()
    k = knee_like_kspace(coils)
    fname = "file1000001.h5"
    challenge = "singlecoil" if coils is None else "multicoil"
    target = np.zeros(RECON, np.float32)
    sample = T.UnetDataTransform(challenge, fastmri.data.subsample.RandomMaskFunc([0.08], [4]))(
        k, None, target, ATTRS, fname, 0)
    with torch.no_grad():
        reference = (net(sample.image[None, None])[:, 0] * sample.std + sample.mean)

    masked, mask = unet_inputs(k, fname)
    theirs_masked = T.apply_mask(T.to_tensor(k), fastmri.data.subsample.RandomMaskFunc([0.08], [4]),
                                 seed=volume_seed(fname))[0]
    torch.testing.assert_close(torch.view_as_real(masked[0]), theirs_masked)   # same mask, same k
    wrapped = from_fastmri(net, multicoil=coils is not None)
    assert isinstance(wrapped, FastmriUnet) and wrapped.unet is net
    ours = to_fastfn(net, multicoil=coils is not None)
    torch.save(net.state_dict(), tmp_path / "unet_state_dict.pt")
    from_file = load_weights("unet", tmp_path / "unet_state_dict.pt", {"multicoil": coils is not None})
    assert dataclasses.asdict(from_file.config) == dataclasses.asdict(wrapped.config)
    # fastfn's checkpoints store (name, config) and the state_dict: they rebuild the wrapper
    name, config = model_spec(wrapped)
    assert (name, config) == ("unet", dict(SMALL_UNET, drop_prob=0.0, multicoil=coils is not None))
    rebuilt = build_model(name, **config).eval()
    rebuilt.load_state_dict(wrapped.state_dict())
    with torch.no_grad():
        for model in (wrapped, ours, from_file, rebuilt):
            out = model(masked, mask, crop_size=RECON)
            assert out.shape == (1, *RECON)
            close(out, reference)


# --------------------------------------------------------------------------- VarNet

def test_varnet_equals_fastmri_pipeline_on_knee_geometry(fastmri):
    """fastMRI's VarNetDataTransform (header padding honoured) + VarNet + crop by hand ==
    from_fastmri (mask-derived or given centre) == fastfn's VarNet with the same weights."""
    T = fastmri.data.transforms
    torch.manual_seed(2)
    net = fastmri.models.VarNet(**SMALL_VARNET).eval()
    k = knee_like_kspace(coils=4)
    fname = "file1000002.h5"
    sample = T.VarNetDataTransform(fastmri.data.subsample.RandomMaskFunc([0.08], [4]))(
        k, None, None, ATTRS, fname, 0)
    ours_sample = KspaceTransform(RandomMaskFunc([0.08], [4]))(k, None, None, ATTRS, fname, 0)
    mask = ours_sample["mask"][None]                                          # (1, 1, W)
    assert torch.equal(mask.reshape(-1).bool(), sample.mask.reshape(-1))    # padding honoured alike
    assert mask[..., :PAD[0]].sum() == 0 and mask[..., PAD[1]:].sum() == 0
    masked = ours_sample["masked_kspace"][None]                               # (1, 4, H, W)
    torch.testing.assert_close(torch.view_as_real(masked[0]), sample.masked_kspace)
    n_low = int(sample.num_low_frequencies)
    assert n_low == ours_sample["num_low_frequencies"].item() == round(W * 0.08)

    with torch.no_grad():
        ref_derived = T.center_crop(net(sample.masked_kspace[None], sample.mask[None], None), RECON)
        ref_given = T.center_crop(net(sample.masked_kspace[None], sample.mask[None], n_low), RECON)
        wrapped = from_fastmri(net)
        assert isinstance(wrapped, FastmriVarNet) and wrapped.varnet is net
        close(wrapped(masked, mask, crop_size=RECON), ref_derived)
        close(from_fastmri(net, num_low_frequencies=n_low)(masked, mask, crop_size=RECON), ref_given)
        with pytest.warns(UserWarning, match="multiple of 16"):
            ours = to_fastfn(net)        # pools 2: equal here, as 640 and 368 are multiples of 16
        close(ours(masked, mask, crop_size=RECON), ref_derived)


def test_varnet_with_four_pools_pads_like_fastmri(fastmri):
    """Sides that are not multiples of 16 make both NormUnets pad (to 48 x 48 here)."""
    torch.manual_seed(3)
    net = fastmri.models.VarNet(num_cascades=2, chans=4, pools=4, sens_chans=2, sens_pools=4).eval()
    k = torch.randn(2, 3, 40, 36, dtype=torch.complex64)
    mask = torch.zeros(2, 1, 36)
    mask[..., 15:21] = 1
    mask[0, ..., ::4] = 1
    mask[1, ..., 1::3] = 1
    masked = k * mask.unsqueeze(1)
    with pytest.raises(ValueError, match="a VarNet is multi-coil"):
        from_fastmri(net, multicoil=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # four pools: no padding warning
        ours = to_fastfn(net)
    with torch.no_grad():
        close(from_fastmri(net)(masked, mask, crop_size=(30, 30)), ours(masked, mask, crop_size=(30, 30)))
        # single-coil k-space is taken as one coil, as fastfn's VarNet does
        close(from_fastmri(net)(masked[:, 0], mask), ours(masked[:, 0], mask))


# --------------------------------------------------------------------------- gradients, attack

def test_gradients_reach_kspace_and_parameters(fastmri):
    """The attack ascends d(output)/d(masked_kspace) and robust training descends the
    parameter gradients: both through the wrapper equal fastfn's model's."""
    torch.manual_seed(4)
    cases = [(fastmri.models.Unet(1, 1, **SMALL_UNET), {}, (2, 32, 48)),
             (fastmri.models.VarNet(**SMALL_VARNET), {}, (2, 3, 32, 48))]
    mask = torch.zeros(2, 1, 48)
    mask[..., 21:27] = 1
    mask[..., ::5] = 1
    for net, kwargs, shape in cases:
        net.eval()
        k = torch.randn(*shape, dtype=torch.complex64) * (mask if len(shape) == 3 else mask.unsqueeze(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = to_fastfn(net)
        grads = []
        for model in (from_fastmri(net, **kwargs), ours):
            x = k.clone().requires_grad_(True)
            model(x, mask, crop_size=(24, 24)).square().sum().backward()
            # the wrapper holds the VarNet as .varnet; fastfn's names otherwise
            params = {n.removeprefix("varnet."): p.grad for n, p in model.named_parameters()}
            assert all(g is not None and torch.isfinite(g).all() for g in params.values())
            grads.append((x.grad, params))
        (gk_a, gp_a), (gk_b, gp_b) = grads
        assert gk_a.abs().sum() > 0
        close(gk_a, gk_b, rel=1e-3)
        assert gp_a.keys() == gp_b.keys()
        for name, b in gp_b.items():
            close(gp_a[name].reshape(b.shape), b, rel=1e-3)


def _synthetic_batch(tmp_path: Path, coils: int | None) -> dict:
    folder = tmp_path / ("sc" if coils is None else f"mc{coils}")
    write_synthetic_dataset(folder, volumes=1, slices=2, coils=coils, size=48, seed=0, annotations=False)
    data = SliceDataset(folder, KspaceTransform(RandomMaskFunc([0.08], [4])), metadata_cache=False)
    return collate([data[0], data[1]])


@pytest.mark.parametrize("kind", ["unet", "varnet"])
@pytest.mark.parametrize("method", ["random", "pgd"])
def test_attack_gives_the_same_result_as_fastfn_model(fastmri, tmp_path, kind, method):
    torch.manual_seed(5)
    if kind == "unet":
        net, coils = fastmri.models.Unet(1, 1, **SMALL_UNET).eval(), None
    else:
        net, coils = fastmri.models.VarNet(**SMALL_VARNET).eval(), 3
    batch = _synthetic_batch(tmp_path, coils)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = to_fastfn(net, multicoil=None if kind == "varnet" else False)
    cfg = AttackConfig(method=method, random_restarts=3, pgd_restarts=2, pgd_steps=3)
    results = [run_attack(model, batch, cfg, torch.Generator().manual_seed(0))
               for model in (from_fastmri(net), ours)]
    a, b = results
    assert a["worst_nmse"].shape == (2,) and torch.isfinite(a["worst_nmse"]).all()
    torch.testing.assert_close(a["worst_nmse"], b["worst_nmse"], rtol=1e-4, atol=1e-7)
    assert torch.equal(a["index"], b["index"])


# --------------------------------------------------------------------------- names, released files

def test_fastmri_names_and_shapes_map_onto_fastfn(fastmri):
    torch.manual_seed(6)
    for net, name, config in ((fastmri.models.Unet(1, 1, **SMALL_UNET), "unet", SMALL_UNET),
                              (fastmri.models.VarNet(**SMALL_VARNET), "varnet", SMALL_VARNET)):
        ours = build_model(name, **config)
        mapped = fastfn_state_dict(name, net.state_dict())
        assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.state_dict().items()}
        assert infer_config(name, mapped) == config
        ours.load_state_dict(mapped)
        back = to_fastmri_state_dict(ours)
        net.load_state_dict(back, strict=True)                         # fastfn -> fastMRI names
        assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_architectures_equal_fastmri_modules(fastmri, name):
    """fastMRI's released models as its inference scripts build them, on the meta device."""
    model_name, _, _ = RELEASED[name]
    with torch.device("meta"):
        if model_name == "unet":
            net = fastmri.models.Unet(in_chans=1, out_chans=1, chans=256, num_pool_layers=4, drop_prob=0.0)
        else:
            net = fastmri.models.VarNet(num_cascades=12, pools=4, chans=18, sens_pools=4, sens_chans=8)
        ours = build_model(model_name, **dataclasses.asdict(released_config(name)))
    mapped = fastfn_state_dict(model_name, net.state_dict())
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_released_configs():
    assert dataclasses.asdict(released_config("unet_knee_sc")) == dict(
        chans=256, num_pool_layers=4, drop_prob=0.0, multicoil=False)
    assert released_config("unet_knee_mc").multicoil and released_config("unet_brain_mc").multicoil
    for name in ("varnet_knee_mc", "varnet_brain_mc"):
        assert dataclasses.asdict(released_config(name)) == dict(
            num_cascades=12, chans=18, pools=4, sens_chans=8, sens_pools=4)
    assert RELEASED["unet_knee_sc"][2] == "knee_sc_leaderboard_state_dict.pt"
    assert RELEASED["varnet_knee_mc"][2] == "knee_leaderboard_state_dict.pt"
    with pytest.raises(ValueError, match="unknown released model 'unet_knee'.*unet_knee_sc"):
        released_config("unet_knee")


# --------------------------------------------------------------------------- weight files (no fastmri needed)

def fastmri_style_state_dict(name: str, seed: int = 0) -> tuple[dict, torch.nn.Module]:
    """(state_dict under fastMRI's names, the fastfn model it came from), small sizes."""
    torch.manual_seed(seed)
    model = build_model(name, **(SMALL_UNET if name == "unet" else SMALL_VARNET)).eval()
    return to_fastmri_state_dict(model), model


def sample_inputs(name: str):
    g = torch.Generator().manual_seed(7)
    shape = (2, 32, 48) if name == "unet" else (2, 3, 32, 48)
    k = torch.randn(*shape, dtype=torch.complex64, generator=g)
    mask = (torch.rand(2, 1, 48, generator=g) < 0.4).float()
    mask[..., 21:27] = 1
    return k * (mask if name == "unet" else mask.unsqueeze(1)), mask


def assert_same_model(a, b, name: str) -> None:
    k, mask = sample_inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(a(k, mask, crop_size=(24, 24)), b(k, mask, crop_size=(24, 24)))


@pytest.mark.parametrize("name", ["unet", "varnet"])
def test_bare_state_dict_file_loads_with_inferred_architecture(tmp_path, name):
    state, original = fastmri_style_state_dict(name)
    if name == "varnet":
        assert all(v.shape == (1,) for k, v in state.items() if k.endswith("dc_weight"))
    torch.save(state, tmp_path / "w.pt")
    model = load_weights(name, tmp_path / "w.pt")
    assert dataclasses.asdict(model.config) == dataclasses.asdict(original.config)
    assert not model.training
    assert_same_model(model, original, name)
    # a DistributedDataParallel wrapper's prefix, and fastfn's own state_dict, load as well
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pt")
    assert_same_model(load_weights(name, tmp_path / "ddp.pt"), original, name)
    assert_same_model(load_weights(name, original.state_dict()), original, name)


@pytest.mark.parametrize("name", ["unet", "varnet"])
def test_lightning_checkpoint_loads(tmp_path, name):
    """fastMRI's UnetModule / VarNetModule checkpoints: the network under ``unet.`` /
    ``varnet.``, the module's loss buffer beside it, Path objects in the hyper-parameters."""
    state, original = fastmri_style_state_dict(name, seed=1)
    ckpt = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": {**{f"{name}.{k}": v for k, v in state.items()},
                           "loss.w": torch.ones(1, 1, 7, 7) / 49},
            "hyper_parameters": {"chans": 8, "lr": 1e-3, "data_path": Path("/data/knee")},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}]}
    torch.save(ckpt, tmp_path / "epoch=3-step=120.ckpt")
    model = load_weights(name, tmp_path / "epoch=3-step=120.ckpt")
    assert_same_model(model, original, name)


def test_fastfn_checkpoint_loads(tmp_path):
    from fastfn.train import checkpoint

    assert FASTFN_CHECKPOINT_FORMAT == checkpoint.FORMAT
    torch.manual_seed(2)
    original = build_model("cascade", num_cascades=2, chans=6, num_convs=3, dc="soft").eval()
    name, config = original.model_name, dataclasses.asdict(original.config)
    checkpoint.save_checkpoint({"format": checkpoint.FORMAT, "version": checkpoint.VERSION,
                                "model_name": name, "model_config": config,
                                "model": original.state_dict(), "step": 7,
                                "rng": checkpoint.rng_state()}, tmp_path / "best.pt")
    model = load_weights("cascade", tmp_path / "best.pt")
    assert dataclasses.asdict(model.config) == config
    k, mask = sample_inputs("unet")
    with torch.no_grad():
        torch.testing.assert_close(model(k, mask), original(k, mask))
    with pytest.raises(WeightsError, match="fastfn checkpoint of a 'cascade' model, not 'unet'"):
        load_weights("unet", tmp_path / "best.pt")


def test_wrong_model_lists_missing_and_unexpected_keys(tmp_path):
    state, _ = fastmri_style_state_dict("unet")
    torch.save(state, tmp_path / "unet.pt")
    n_varnet = len(build_model("varnet", **SMALL_VARNET).state_dict())
    with pytest.raises(WeightsError) as e:
        load_weights("varnet", tmp_path / "unet.pt", SMALL_VARNET)
    msg = str(e.value)
    assert f"{n_varnet} missing keys (sens_net.norm_unet.unet.down_sample_layers.0.layers.0.weight" in msg
    assert f"{len(state)} unexpected keys (down_sample_layers.0.layers.0.weight" in msg
    assert "fastfn model 'varnet' with config {'num_cascades': 2, 'chans': 4" in msg
    assert str(tmp_path / "unet.pt") in msg and "bare state_dict" in msg


def test_partial_or_reshaped_files_fail_and_name_the_keys(tmp_path):
    state, _ = fastmri_style_state_dict("unet")
    partial = {k: v for k, v in state.items() if k != "up_conv.1.1.bias"}
    with pytest.raises(WeightsError, match=r"1 missing keys \(module\.up_conv\.1\.1\.bias\); "
                                           r"0 unexpected keys"):
        load_weights("unet", partial)
    extra = {**state, "up_conv.1.2.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"0 missing keys; 1 unexpected keys \(module\.up_conv\.1\.2\.weight\)"):
        load_weights("unet", extra)
    with pytest.raises(WeightsError, match=r"keys with other shapes \(module\.down_sample_layers\.0\.layers\.0"
                                           r"\.weight: file \(8, 1, 3, 3\) vs model \(16, 1, 3, 3\)"):
        load_weights("unet", state, {"chans": 16})
    with pytest.raises(WeightsError, match="'chans': 256"):
        load_weights("unet_knee_sc", state)                # the released name fixes the architecture
    with pytest.raises(WeightsError, match=r"Lightning checkpoint.*prefix 'unet\.' removed"
                                           r".*1 entries outside the prefix not considered \(loss\.w\)"):
        load_weights("unet", {"state_dict": {**{"unet." + k: v for k, v in partial.items()},
                                             "loss.w": torch.ones(1)}})


class _NotATensor:
    pass


def test_unreadable_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights("unet", tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights("unet", tmp_path / "garbage.pt")
    torch.save({"state_dict": {"unet.x": torch.ones(1)}, "callback": _NotATensor()}, tmp_path / "obj.ckpt")
    with pytest.raises(WeightsError, match=r"weights_only=True\) refused the file.*_NotATensor"):
        load_weights("unet", tmp_path / "obj.ckpt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="found list"):
        load_weights("unet", tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="1 entries are not tensors"):
        load_weights("unet", {"a.weight": torch.ones(1), "epoch": 3})
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        load_weights("resnet", {"a": torch.ones(1)})


def test_from_fastmri_rejects_other_modules():
    with pytest.raises(TypeError, match="already a fastfn Reconstructor"):
        from_fastmri(build_model("varnet", **SMALL_VARNET))
    with pytest.raises(TypeError, match="expected fastmri.models.Unet or fastmri.models.VarNet"):
        from_fastmri(torch.nn.Conv2d(1, 1, 3))
    from fastfn.models import Unet          # fastMRI's U-Net layout under fastMRI's names
    assert fastmri_kind(Unet(1, 1, 4, 2)) == "unet"
    with pytest.raises(ValueError, match="in_chans=2, out_chans=2"):
        from_fastmri(Unet(2, 2, 4, 2))
    with pytest.raises(ValueError, match="VarNet setting"):
        from_fastmri(Unet(1, 1, 4, 2), num_low_frequencies=8)
