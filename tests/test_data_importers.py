"""Importers: real MR images and raw k-space (../shared/data), DICOM and NIfTI round trips,
the `fastfn data import` command and bad input."""
from __future__ import annotations

import builtins

import h5py
import numpy as np
import pytest

from fastfn.cli import main as cli_main
from fastfn.data import KspaceTransform, SliceDataset, import_images, import_kspace, load_image_stack
from fastfn.data.importers import parse_axes


def np_ifft2c(k):
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def corr(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_real_raw_kspace_becomes_fastmri_multicoil(shared_data, tmp_path):
    src = shared_data / "phantom_gre_2coil_kspace.npz"
    raw = np.load(src)["kspace"]  # (phase_encode, coil, readout)
    path = import_kspace(src, tmp_path)  # axes from the npz entry
    with h5py.File(path, "r") as f:
        k, t = f["kspace"][()], f["reconstruction_rss"][()]
        assert f.attrs["fastfn_simulated"] == False  # noqa: E712  (numpy bool)
        assert f.attrs["fastfn_axes"] == "ky,coil,kx"
    # (slice, coil, H = readout, W = phase encode)
    np.testing.assert_array_equal(k[0], np.transpose(raw, (1, 2, 0)))
    ref = np.sqrt((np.abs(np_ifft2c(np.transpose(raw, (1, 2, 0)))) ** 2).sum(0))
    np.testing.assert_allclose(t[0], ref, rtol=1e-4, atol=1e-4 * ref.max())
    # The image is the phantom, not a shifted/checkerboarded mess: the object is centred.
    rows, cols = np.nonzero(ref > 0.3 * ref.max())
    assert abs(rows.mean() - 80) < 20 and abs(cols.mean() - 80) < 20
    ds = SliceDataset(path, KspaceTransform(), metadata_cache=False)
    assert ds[0]["kspace"].shape == (2, 160, 160)


def test_raw_kspace_axes_argument_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((3, 2, 16, 20)) + 1j * rng.standard_normal((3, 2, 16, 20))).astype(np.complex64)
    np.save(tmp_path / "k.npy", k)
    path = import_kspace(tmp_path / "k.npy", tmp_path / "out", axes="slice,coil,ky,kx")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["kspace"][()], np.transpose(k, (0, 1, 3, 2)))
    with pytest.raises(ValueError, match="no axes description"):
        import_kspace(tmp_path / "k.npy", tmp_path / "out")
    with pytest.raises(ValueError, match="3 axes .* 4 dims"):
        import_kspace(tmp_path / "k.npy", tmp_path / "out", axes="coil,ky,kx")
    with pytest.raises(ValueError, match="unknown axis 'time'"):
        parse_axes("time,ky,kx", 3)
    np.save(tmp_path / "real.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="expected complex"):
        import_kspace(tmp_path / "real.npy", tmp_path, axes="ky,kx")
    assert parse_axes("(phase_encode, coil, readout)", 3) == ["ky", "coil", "kx"]


def test_real_magnitude_images_with_simulated_acquisition(shared_data, tmp_path):
    src = shared_data / "brain_pd_fse.npz"
    images = np.load(src)["images"].astype(np.float32)
    path = import_images(src, tmp_path, coils=4, snr=40.0, seed=1)
    with h5py.File(path, "r") as f:
        assert f["kspace"].shape == (20, 4, 256, 256) and f["kspace"].dtype == np.complex64
        t = f["reconstruction_rss"][()]
        assert t.shape == (20, 256, 256)
        assert f.attrs["fastfn_simulated"] == True  # noqa: E712
        assert f.attrs["fastfn_coils"] == 4 and f.attrs["fastfn_snr"] == 40.0
        assert list(f.attrs["fastfn_resampled_from"]) == [256, 256]
        assert "simulated" in f.attrs["fastfn_note"]
    # The RSS target follows the anatomy (coil shading and noise aside).
    assert corr(t[10], images[10]) > 0.8


def test_real_image_resampled_single_coil(shared_data, tmp_path):
    src = shared_data / "shoulder_t1_se.npz"
    path = import_images(src, tmp_path, size=256, snr=None)
    with h5py.File(path, "r") as f:
        t = f["reconstruction_esc"][()]
        assert f["kspace"].shape == (1, 256, 256) and t.shape == (1, 256, 256)
        assert list(f.attrs["fastfn_resampled_from"]) == [1024, 1024]
    original = np.load(src)["images"][0].astype(np.float32)
    small = original.reshape(256, 4, 256, 4).mean((1, 3))  # independent 4x4 block average
    assert corr(t[0], small) > 0.97
    assert t.max() == pytest.approx(1.0, rel=0.05)  # scaled to max 1, no noise


def test_dicom_series_round_trip(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    rng = np.random.default_rng(0)
    vol = (rng.random((3, 24, 32)) * 1000).astype(np.uint16)
    series = tmp_path / "series"
    series.mkdir()
    for i in (2, 0, 1):  # written out of order; position decides the order
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.Rows, ds.Columns = vol.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 5.0 * i]
        ds.InstanceNumber = 10 - i  # deliberately contradicts the position
        ds.PixelData = vol[i].tobytes()
        pydicom.dcmwrite(series / f"im{i}.dcm", ds, enforce_file_format=True)
    stack = load_image_stack(series)
    np.testing.assert_array_equal(stack, vol.astype(np.float32))
    path = import_images(series, tmp_path / "out", snr=None, name="dcm")
    with h5py.File(path, "r") as f:
        t = f["reconstruction_esc"][()]
    assert t.shape == (3, 24, 24)  # default crop: min(320, H, W), square as fastMRI's
    np.testing.assert_allclose(t * vol.max(), vol[:, :, 4:28], rtol=1e-3, atol=0.5)


def test_nifti_round_trip(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(1)
    vol = rng.random((3, 20, 28)).astype(np.float32)  # (slices, rows, cols)
    nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)), np.eye(4)), tmp_path / "v.nii.gz")
    np.testing.assert_allclose(load_image_stack(tmp_path / "v.nii.gz"), vol, rtol=1e-6)
    path = import_images(tmp_path / "v.nii.gz", tmp_path / "out", snr=None)
    assert path.name == "v.h5"


def test_missing_optional_package_message(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_nibabel(name, *args, **kwargs):
        if name == "nibabel":
            raise ImportError("No module named 'nibabel'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "x.nii").write_bytes(b"")
    monkeypatch.setattr(builtins, "__import__", no_nibabel)
    with pytest.raises(ImportError, match=r"pip install 'fastfn\[nifti\]'"):
        load_image_stack(tmp_path / "x.nii")


def test_bad_image_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_image_stack(tmp_path / "none.npy")
    np.save(tmp_path / "bad.npy", np.full((2, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        load_image_stack(tmp_path / "bad.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 4)), b=np.zeros((4, 4)))
    with pytest.raises(KeyError, match="cannot tell which array"):
        load_image_stack(tmp_path / "two.npz")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown image format"):
        load_image_stack(tmp_path / "x.png")


def test_cli_import(shared_data, tmp_path, capsys):
    assert cli_main(["data", "import", str(shared_data / "phantom_gre_2coil_kspace.npz"),
                     "--out", str(tmp_path)]) == 0
    assert '"kind": "kspace"' in capsys.readouterr().out
    assert cli_main(["data", "import", str(shared_data / "brain_pd_fse.npz"), "--out",
                     str(tmp_path), "--size", "128", "--name", "brain"]) == 0
    with h5py.File(tmp_path / "brain.h5", "r") as f:
        assert f["kspace"].shape == (20, 128, 128)
