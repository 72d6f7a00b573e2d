"""fastMRI's own SliceDataset reads every folder fastfn writes (synthetic sets, imported
images, imported raw k-space), slice for slice, with the arrays fastfn wrote."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from fastfn.data import default_data, import_images, import_kspace, write_synthetic_dataset
from fastfn.data.annotations import annotations_path

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def fastmri_dataset(fastmri):
    try:
        from fastmri.data.mri_data import SliceDataset
    except ImportError as e:  # pandas / requests, which its module imports
        pytest.skip(f"fastmri.data.mri_data does not import here: {e}")
    return SliceDataset


def _folders(root):
    write_synthetic_dataset(root / "synth_sc", volumes=2, slices=2, size=48, seed=0)
    write_synthetic_dataset(root / "synth_mc", volumes=1, slices=2, coils=3, size=48, seed=1)
    rng = np.random.default_rng(0)
    np.save(root / "stack.npy", rng.random((3, 40, 36)).astype(np.float32))
    import_images(root / "stack.npy", root / "imported_sc", crop_size=32)
    k = (rng.standard_normal((2, 2, 36, 40)) + 1j * rng.standard_normal((2, 2, 36, 40))).astype(np.complex64)
    np.save(root / "raw.npy", k)
    import_kspace(root / "raw.npy", root / "imported_mc", axes="slice,coil,ky,kx", crop_size=32)
    return {"synth_sc": "singlecoil", "synth_mc": "multicoil", "imported_sc": "singlecoil",
            "imported_mc": "multicoil"}


def test_every_folder_fastfn_writes_is_a_fastmri_folder(fastmri_dataset, tmp_path, monkeypatch):
    for name, challenge in _folders(tmp_path).items():
        folder = tmp_path / name
        assert all(p.suffix == ".h5" for p in folder.iterdir()), f"{name} holds more than .h5 files"
        ds = fastmri_dataset(folder, challenge=challenge, transform=None)
        files = sorted(folder.glob("*.h5"))
        n = sum(h5py.File(f, "r")["kspace"].shape[0] for f in files)
        assert len(ds) == n, name
        for i in range(len(ds)):
            kspace, mask, target, attrs, fname, dataslice = ds[i]
            with h5py.File(folder / fname, "r") as f:
                np.testing.assert_array_equal(kspace, f["kspace"][dataslice])
                key = "reconstruction_esc" if challenge == "singlecoil" else "reconstruction_rss"
                np.testing.assert_array_equal(target, f[key][dataslice])
            assert attrs["recon_size"][:2] == target.shape and attrs["padding_left"] >= 0
    assert annotations_path(tmp_path / "synth_sc").is_file()      # beside the folder, not in it
    monkeypatch.setenv("FASTFN_CACHE", str(tmp_path / "cache"))
    cached = default_data("val", size=32, volumes=1, slices=2)
    assert all(p.suffix == ".h5" for p in cached.iterdir()) and annotations_path(cached).is_file()
    assert len(fastmri_dataset(cached, challenge="singlecoil", transform=None)) == 2
