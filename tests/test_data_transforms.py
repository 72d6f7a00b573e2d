"""KspaceTransform, UnetNormalize and collate against numpy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastfn.data import (KspaceTransform, RandomMaskFunc, UnetNormalize, center_crop, collate,
                         fit_kspace, normalize_instance, volume_seed)
from fastfn.data.transforms import complex_abs_rss, rss


def np_ifft2c(k: np.ndarray) -> np.ndarray:
    """Independent reference: centred orthonormal inverse 2D FFT with numpy."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def np_crop(x: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = x.shape[-2:]
    return x[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]


def rand_kspace(*shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("coils", [None, 3])
def test_sample_matches_numpy_reference(coils):
    shape = (24, 30) if coils is None else (coils, 24, 30)
    k = rand_kspace(*shape)
    target = np.abs(np_crop(np_ifft2c(k) if coils is None else
                            np.sqrt((np.abs(np_ifft2c(k)) ** 2).sum(0)), 16, 16)).astype(np.float32)
    mask_func = RandomMaskFunc([0.1], [3])
    attrs = {"max": 2.5, "recon_size": (16, 16, 1), "padding_left": 2, "padding_right": 27}
    s = KspaceTransform(mask_func)(k, None, target, attrs, "vol.h5", 4)

    ref_mask, n = RandomMaskFunc([0.1], [3])(30, seed=volume_seed("vol.h5"))
    ref_mask = ref_mask.numpy()
    ref_mask[:, :2] = 0
    ref_mask[:, 27:] = 0
    masked = k * ref_mask
    img = np_ifft2c(masked)
    zf = np.abs(img) if coils is None else np.sqrt((np.abs(img) ** 2).sum(0))
    assert s["mask"].shape == (1, 30) and s["mask"].dtype == torch.float32
    np.testing.assert_array_equal(s["mask"].numpy(), ref_mask)
    np.testing.assert_array_equal(s["masked_kspace"].numpy(), masked)
    np.testing.assert_array_equal(s["kspace"].numpy(), k)
    np.testing.assert_allclose(s["zero_filled"].numpy(), np_crop(zf, 16, 16), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(s["target"].numpy(), target)
    assert s["max"].dtype == torch.float32 and s["max"].item() == 2.5
    assert s["slice"].dtype == torch.int64 and s["slice"].item() == 4
    assert s["num_low_frequencies"].item() == n and s["fname"] == "vol.h5"


def test_no_target_and_no_mask_func():
    k = rand_kspace(20, 20)
    s = KspaceTransform()(k, None, None, {}, "test.h5", 0)
    assert s["target"].shape == (0, 0)
    assert s["mask"].sum() == 20 and s["num_low_frequencies"].item() == 20
    assert s["max"].item() == 0.0
    np.testing.assert_allclose(s["zero_filled"].numpy(), np.abs(np_ifft2c(k)), rtol=1e-4, atol=1e-5)


def test_file_mask_is_used_when_no_mask_func():
    k = rand_kspace(16, 20)
    m = np.zeros(20, np.float32)
    m[[1, 5, 8, 9, 10, 11, 15]] = 1
    s = KspaceTransform()(k * m, m, None, {}, "test.h5", 0)
    np.testing.assert_array_equal(s["mask"][0].numpy(), m)
    assert s["num_low_frequencies"].item() == 4  # columns 8..11 around the centre 10
    with pytest.raises(ValueError, match="mask has 19 columns, kspace has 20"):
        KspaceTransform()(k, m[:19], None, {}, "test.h5", 0)


def test_crop_defaults_and_clipping():
    k = rand_kspace(40, 24)
    s = KspaceTransform()(k, None, None, {}, "a.h5", 0)
    assert s["zero_filled"].shape == (40, 24)  # min(320, H) x min(320, W)
    s = KspaceTransform(crop_size=32)(k, None, None, {}, "a.h5", 0)
    assert s["zero_filled"].shape == (32, 24)  # clipped to the image
    s = KspaceTransform()(k, None, None, {"recon_size": (20, 20, 1)}, "a.h5", 0)
    assert s["zero_filled"].shape == (20, 20)


def test_labels_and_sens_pass_through_cropped():
    k = rand_kspace(2, 20, 20)
    labels = np.arange(400, dtype=np.uint8).reshape(20, 20)
    sens = rand_kspace(2, 20, 20, seed=1)
    s = KspaceTransform(crop_size=10)(k, None, None, {"labels": labels, "sens": sens}, "a.h5", 0)
    np.testing.assert_array_equal(s["labels"].numpy(), labels[5:15, 5:15])
    assert s["labels"].dtype == torch.uint8
    np.testing.assert_array_equal(s["sens"].numpy(), sens)


def test_unet_normalize_matches_fastmri_formula_and_inverts():
    torch.manual_seed(0)
    image = torch.rand(32, 32) * 3 + 1
    target = image + 0.1 * torch.randn(32, 32)
    out = UnetNormalize()(image, target)
    mean, std = image.mean(), image.std()  # torch.std: unbiased, as fastMRI's
    np.testing.assert_allclose(out["image"], ((image - mean) / (std + 1e-11)).clamp(-6, 6), rtol=1e-6)
    np.testing.assert_allclose(out["target"], ((target - mean) / (std + 1e-11)).clamp(-6, 6), rtol=1e-6)
    back = UnetNormalize().inverse(out["image"], out["mean"], out["std"])
    np.testing.assert_allclose(back, image, rtol=1e-5)
    # Outliers are clamped at +-6 standard deviations.
    spiky = torch.zeros(100)
    spiky[0] = 1000.0
    assert UnetNormalize()(spiky)["image"].max().item() == 6.0
    y, m, s = normalize_instance(image)
    assert abs(y.mean().item()) < 1e-5 and abs(y.std().item() - 1) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_rss_value_and_gradient(dtype):
    x = torch.randn(2, 4, 5, 6, dtype=dtype)
    x[1] = 0  # an empty slice: every coil exactly zero
    expected = np.sqrt((np.abs(x.numpy()) ** 2).sum(axis=1))
    np.testing.assert_allclose(rss(x, dim=1).numpy(), expected, rtol=1e-12)
    x.requires_grad_(True)
    rss(x, dim=1).sum().backward()
    # d rss / d x = x / rss where rss > 0 (conj-Wirtinger convention of torch for complex);
    # the empty slice gets 0, not NaN (sqrt(sum |x|^2) gives NaN there)
    with torch.no_grad():
        torch.testing.assert_close(x.grad[0], x[0] / rss(x[0], dim=0))
    assert torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
    if dtype.is_complex:
        torch.testing.assert_close(complex_abs_rss(x.detach(), multicoil=True), rss(x.detach(), dim=1))
        torch.testing.assert_close(complex_abs_rss(x.detach()[0], multicoil=False), x.detach()[0].abs())


def test_center_crop_offsets_and_errors():
    x = torch.arange(7 * 6).reshape(7, 6)
    np.testing.assert_array_equal(center_crop(x, (3, 4)).numpy(), np_crop(x.numpy(), 3, 4))
    assert center_crop(x, (3, 4))[0, 0].item() == 2 * 6 + 1  # top (7-3)//2, left (6-4)//2
    with pytest.raises(ValueError, match=r"cannot crop \(\.\.\., 7, 6\) to \(8, 4\)"):
        center_crop(x, (8, 4))


def test_fit_kspace_keeps_the_centre():
    k = torch.from_numpy(rand_kspace(3, 10, 13))
    padded = fit_kspace(k, 12, 16)
    # The DC sample (index n // 2) stays at the new n // 2.
    assert padded[..., 6, 8].equal(k[..., 5, 6])
    back = fit_kspace(padded, 10, 13)
    assert torch.equal(back, k)
    # Zero padding k-space = sinc interpolation: energy is unchanged.
    assert torch.allclose((padded.abs() ** 2).sum(), (k.abs() ** 2).sum())


def _sample(width: int, fname: str, coils=None):
    shape = (16, width) if coils is None else (coils, 16, width)
    return KspaceTransform(RandomMaskFunc([0.2], [2]), crop_size=12)(
        rand_kspace(*shape, seed=width), None, None, {}, fname, 0)


def test_collate_stacks_the_contract():
    batch = collate([_sample(20, "a.h5", 2), _sample(20, "b.h5", 2)])
    assert batch["kspace"].shape == (2, 2, 16, 20) and batch["kspace"].dtype == torch.complex64
    assert batch["mask"].shape == (2, 1, 20) and batch["mask"].dtype == torch.float32
    assert batch["target"].shape == (2, 0, 0) and batch["zero_filled"].shape == (2, 12, 12)
    assert batch["max"].shape == (2,) and batch["max"].dtype == torch.float32
    assert batch["slice"].dtype == torch.int64 and batch["num_low_frequencies"].dtype == torch.int64
    assert batch["fname"] == ["a.h5", "b.h5"]


@pytest.mark.parametrize("mode,width", [("pad", 24), ("crop", 20)])
def test_collate_makes_widths_equal(mode, width):
    a, b = _sample(20, "a.h5"), _sample(24, "b.h5")
    batch = collate([a, b], kspace_size=mode)
    assert batch["kspace"].shape == (2, 16, width) and batch["mask"].shape == (2, 1, width)
    for i, s in enumerate((a, b)):
        assert torch.equal(batch["kspace"][i], fit_kspace(s["kspace"], 16, width))
        assert torch.equal(batch["mask"][i], fit_kspace(s["mask"], 1, width))
        # masked k-space stays mask * kspace after the resize
        assert torch.equal(batch["masked_kspace"][i], batch["kspace"][i] * batch["mask"][i])
    if mode == "pad":  # padded columns are never marked sampled
        assert batch["mask"][0, 0, :2].sum() == 0 and batch["mask"][0, 0, -2:].sum() == 0


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="coil dims differ"):
        collate([_sample(20, "a.h5", 2), _sample(20, "b.h5", 3)])
    with pytest.raises(ValueError, match="kspace_size must be"):
        collate([_sample(20, "a.h5")], kspace_size="stretch")
    a = _sample(20, "a.h5")
    b = KspaceTransform(crop_size=10)(rand_kspace(16, 20), None, None, {}, "b.h5", 0)
    with pytest.raises(ValueError, match="'zero_filled' sizes differ"):
        collate([a, b])


# fastMRI 0.3.0's UnetDataTransform and VarNetDataTransform (pip install --no-deps fastmri,
# pandas/requests stubbed) on the inputs of _fastmri_inputs(): RandomMaskFunc([0.1], [3]),
# fname "vol_a.h5", attrs padding 2..18 and recon 16 x 16. Values: the top-left 3 x 3 of the
# normalised image and target, the image mean/std, the VarNet (padding-aware) mask columns.
FASTMRI_UNET = {
    "single": {"image": [[2.023018, 2.272245, 0.405908], [-0.833977, 0.059167, 0.306955], [-1.737052, -1.196231, -0.569041]],
               "target": [[6.0, 3.042553, 6.0], [2.482456, 1.057908, 4.360784], [2.131788, 1.07563, 0.527462]],
               "mean": 0.47359344, "std": 0.2379884,
               "varnet_mask_columns": [5, 9, 10], "num_low": 2},
    "multi": {"image": [[-0.429306, -0.147085, -0.106331], [-0.099061, -1.095188, 0.206906], [1.516699, 0.237945, -0.717211]],
               "target": [[-0.850548, -1.123863, 1.395275], [5.402983, 3.6886, 1.834843], [0.2932, 2.667968, 4.993891]],
               "mean": 0.91875046, "std": 0.24771672,
               "varnet_mask_columns": [5, 9, 10], "num_low": 2},
}


def _fastmri_inputs():
    rng = np.random.default_rng(123)
    out = {}
    for name, shape in (("single", (24, 20)), ("multi", (3, 24, 20))):
        k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        target = np.abs(rng.standard_normal((16, 16))).astype(np.float32) + 0.5
        out[name] = (k, target)
    return out


@pytest.mark.parametrize("name", ["single", "multi"])
def test_matches_fastmri_unet_and_varnet_transforms(name):
    k, target = _fastmri_inputs()[name]
    ref = FASTMRI_UNET[name]
    attrs = {"max": 3.0, "padding_left": 2, "padding_right": 18, "recon_size": (16, 16, 1)}
    # fastMRI's U-Net transform ignores the padding; its VarNet transform honours it.
    s = KspaceTransform(RandomMaskFunc([0.1], [3]), use_padding=False)(k, None, target, attrs, "vol_a.h5", 2)
    out = UnetNormalize()(s["zero_filled"], s["target"])
    np.testing.assert_allclose(out["image"][:3, :3].numpy(), ref["image"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["target"][:3, :3].numpy(), ref["target"], rtol=1e-4, atol=1e-5)
    assert out["mean"].item() == pytest.approx(ref["mean"], rel=1e-5)
    assert out["std"].item() == pytest.approx(ref["std"], rel=1e-5)
    v = KspaceTransform(RandomMaskFunc([0.1], [3]))(k, None, target, attrs, "vol_a.h5", 2)
    assert np.flatnonzero(v["mask"][0].numpy()).tolist() == ref["varnet_mask_columns"]
    assert v["num_low_frequencies"].item() == ref["num_low"]
