"""SliceDataset: fastMRI files, header, attributes, sampling, cache, bad files, handles;
VolumeDistributedSampler."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import fastfn.data.mri_data as mri_data
from fastfn.data import (BadFileError, KspaceTransform, RandomMaskFunc, SliceDataset,
                         VolumeDistributedSampler, collate, write_synthetic_dataset)

# A header in the layout of fastMRI's knee files (hand-written, not produced by our
# writer): encoded 640 x 372, recon 320 x 320, acquired phase-encode lines 0..349 with
# the centre line 168, so by fastMRI's rule padding_left = 372 // 2 - 168 = 18 and
# padding_right = padding_left + 349 + 1 = 368.
FASTMRI_HEADER = b"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <studyInformation><studyTime>10:00:00</studyTime></studyInformation>
  <encoding>
    <encodedSpace>
      <matrixSize><x>640</x><y>372</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>320</x><y>320</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>349</maximum><center>168</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>"""


def write_raw(path: Path, kspace, target=None, target_key="reconstruction_esc", header=FASTMRI_HEADER,
              attrs=None, **extra):
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if target is not None:
            f.create_dataset(target_key, data=target)
        if header is not None:
            f.create_dataset("ismrmrd_header", data=np.bytes_(header))
        for k, v in extra.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {"max": 1.0, "norm": 2.0, "acquisition": "CORPD_FBK",
                               "patient_id": "abc"}).items():
            f.attrs[k] = v
    return path


def ks(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, volumes=3, slices=4, size=32, seed=1)
    return out


def test_reads_fastmri_header_and_attrs(tmp_path):
    write_raw(tmp_path / "file1.h5", ks(2, 640, 372), np.ones((2, 320, 320), np.float32))
    ds = SliceDataset(tmp_path)
    assert len(ds) == 2
    raw = ds[1]
    assert raw.kspace.shape == (640, 372) and raw.target.shape == (320, 320)
    assert raw.fname == "file1.h5" and raw.slice_num == 1 and raw.mask is None
    a = raw.attrs
    assert a["encoding_size"] == [640, 372, 1] and a["recon_size"] == [320, 320, 1]
    assert (a["padding_left"], a["padding_right"]) == (18, 368)
    assert a["max"] == 1.0 and a["norm"] == 2.0
    assert a["acquisition"] == "CORPD_FBK" and a["patient_id"] == "abc"
    sample = KspaceTransform(RandomMaskFunc([0.08], [4]))(*raw)
    m = sample["mask"][0]
    assert m[:18].sum() == 0 and m[368:].sum() == 0  # padding is never sampled
    assert sample["target"].shape == (320, 320) and sample["zero_filled"].shape == (320, 320)


def test_multicoil_and_no_target(tmp_path):
    write_raw(tmp_path / "mc.h5", ks(3, 4, 64, 40), target=None,
              header=FASTMRI_HEADER.replace(b"640", b"64").replace(b"372", b"40")
              .replace(b"<maximum>349", b"<maximum>39").replace(b"<center>168", b"<center>20")
              .replace(b"<x>320</x><y>320</y>", b"<x>32</x><y>32</y>"))
    ds = SliceDataset(tmp_path, KspaceTransform())
    assert ds.raw_samples[0].metadata["multicoil"] and ds.raw_samples[0].metadata["target_key"] is None
    s = ds[2]
    assert s["kspace"].shape == (4, 64, 40) and s["target"].shape == (0, 0)
    assert s["zero_filled"].shape == (32, 32)
    with pytest.raises(BadFileError, match="not singlecoil data"):
        SliceDataset(tmp_path, challenge="singlecoil")


def test_synthetic_files_and_dataloader_workers(synth):
    ds = SliceDataset(synth, KspaceTransform(RandomMaskFunc([0.08], [4])))
    assert len(ds) == 12 and ds.num_skipped == 0
    direct = collate([ds[i] for i in range(4)])
    # Read once in the parent so that forked workers inherit an open handle they must not use.
    assert ds.num_opens == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 3
    for key in ("kspace", "masked_kspace", "mask", "target", "zero_filled", "labels"):
        assert torch.equal(batches[0][key], direct[key]), key
    assert batches[0]["fname"] == direct["fname"]


def test_handles_are_reused_and_reopened_after_fork(synth):
    ds = SliceDataset(synth)
    for i in range(len(ds)):
        ds[i]
    assert ds.num_opens == 3  # one per file, not one per slice
    handle = ds._handles[ds.raw_samples[0].fname]
    ds._pid = -1  # what a forked worker sees: another process's handles
    ds[0]
    assert ds.num_opens == 1 and ds._handles[ds.raw_samples[0].fname] is not handle
    ds.close()


def test_sample_rates_and_filter(synth):
    full = SliceDataset(synth)
    half = SliceDataset(synth, sample_rate=0.5, sample_seed=3)
    assert len(half) == 6
    key = lambda ds: {(s.fname, s.slice_ind) for s in ds.raw_samples}  # noqa: E731
    assert key(half) <= key(full)
    assert half.raw_samples == SliceDataset(synth, sample_rate=0.5, sample_seed=3).raw_samples
    vols = SliceDataset(synth, volume_sample_rate=0.34)
    assert len(vols) == 4 and len({s.fname for s in vols.raw_samples}) == 1
    only = SliceDataset(synth, filter=lambda s: s.fname.name.endswith("001.h5") and s.slice_ind < 2)
    assert [(s.fname.name, s.slice_ind) for s in only.raw_samples] == \
        [("synth_knee_s1_001.h5", 0), ("synth_knee_s1_001.h5", 1)]
    by_acq = SliceDataset(synth, filter=lambda s: s.metadata["attrs"]["acquisition"] == "CORPDFS_FBK")
    assert len(by_acq) == 0
    with pytest.raises(ValueError, match="not both"):
        SliceDataset(synth, sample_rate=0.5, volume_sample_rate=0.5)


def test_metadata_cache_hit_and_invalidation(tmp_path, monkeypatch):
    write_raw(tmp_path / "a.h5", ks(2, 64, 40), np.ones((2, 32, 32), np.float32), header=None)
    cache = tmp_path / "meta.json"
    SliceDataset(tmp_path, metadata_cache=cache)
    assert cache.is_file()
    calls = []
    real = mri_data.inspect_file
    monkeypatch.setattr(mri_data, "inspect_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    ds = SliceDataset(tmp_path, metadata_cache=cache)
    assert calls == [] and len(ds) == 2
    # Rewriting the file (new mtime/size) invalidates its entry.
    write_raw(tmp_path / "a.h5", ks(3, 64, 40), np.ones((3, 32, 32), np.float32), header=None)
    os.utime(tmp_path / "a.h5", ns=(1, 10**18))
    ds = SliceDataset(tmp_path, metadata_cache=cache)
    assert len(calls) == 1 and len(ds) == 3
    # No header: geometry from the arrays (recon size = target size, no padding).
    assert ds.raw_samples[0].metadata["recon_size"] == [32, 32, 1]
    assert ds.raw_samples[0].metadata["padding_right"] == 40


BAD_FILES = {
    "not_hdf5.h5": "not a readable HDF5 file",
    "empty.h5": "not a readable HDF5 file",
    "no_kspace.h5": "no 'kspace' dataset",
    "wrong_dims.h5": r"'kspace' has shape \(4, 4\)",
    "real_kspace.h5": "'kspace' has dtype float32",
    "bad_target.h5": r"'reconstruction_esc' has shape \(3, 8, 8\); expected \(slices=2",
    "nan_last.h5": "'kspace' slice 1 contains non-finite values",
    "bad_header.h5": "ismrmrd_header is not valid XML",
    "truncated.h5": "truncated|not a readable HDF5",
}


def make_bad(folder: Path) -> None:
    (folder / "not_hdf5.h5").write_text("hello")
    (folder / "empty.h5").write_bytes(b"")
    with h5py.File(folder / "no_kspace.h5", "w") as f:
        f["image"] = np.zeros((2, 4, 4))
    write_raw(folder / "wrong_dims.h5", ks(4, 4), header=None)
    write_raw(folder / "real_kspace.h5", np.zeros((2, 8, 8), np.float32), header=None)
    write_raw(folder / "bad_target.h5", ks(2, 8, 8), np.zeros((3, 8, 8), np.float32), header=None)
    k = ks(2, 8, 8)
    k[1, 3, 3] = np.nan
    write_raw(folder / "nan_last.h5", k, header=None)
    write_raw(folder / "bad_header.h5", ks(2, 8, 8), header=b"<ismrmrdHeader")
    good = write_raw(folder / "truncated.h5", ks(4, 64, 64), header=None)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_raises_naming_file_and_key(tmp_path, name):
    make_bad(tmp_path)
    with pytest.raises(BadFileError, match=BAD_FILES[name]) as info:
        SliceDataset(tmp_path / name, metadata_cache=False)
    assert name in str(info.value)


def test_bad_files_skipped_with_warning_and_counted(tmp_path, synth):
    make_bad(tmp_path)
    with pytest.warns(UserWarning, match="skipping bad file"):
        ds = SliceDataset([tmp_path, synth], on_bad_file="skip")
    assert ds.num_skipped == len(BAD_FILES) and len(ds) == 12
    assert {p.name for p, _ in ds.skipped} == set(BAD_FILES)


def test_non_finite_slice_raises_at_read(tmp_path):
    k = ks(3, 8, 8)
    k[0, 1, 1] = np.inf
    write_raw(tmp_path / "inf0.h5", k, header=None)
    ds = SliceDataset(tmp_path, metadata_cache=False)  # the last slice is fine: indexed
    ds[1]
    with pytest.raises(BadFileError, match=r"inf0.h5: 'kspace' slice 0 contains non-finite"):
        ds[0]


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        SliceDataset("/no/such/folder")


# -- VolumeDistributedSampler -------------------------------------------------------------
VOLUMES = {"a": list(range(0, 7)), "b": list(range(7, 10)), "c": list(range(10, 22)),
           "d": list(range(22, 23)), "e": list(range(23, 28))}


@pytest.mark.parametrize("replicas", [1, 2, 3, 7])
def test_sampler_keeps_volumes_on_one_rank_with_equal_lengths(replicas):
    owner = {i: v for v, idx in VOLUMES.items() for i in idx}
    per_rank = []
    for rank in range(replicas):
        s = VolumeDistributedSampler(VOLUMES, num_replicas=replicas, rank=rank, seed=5)
        s.set_epoch(2)
        per_rank.append(list(s))
        assert len(per_rank[-1]) == len(s)
    assert len({len(p) for p in per_rank}) == 1  # same number of batches everywhere
    seen = set()
    for rank, idx in enumerate(per_rank):
        vols = {owner[i] for i in idx}
        for other in per_rank[:rank]:
            if replicas <= len(VOLUMES):
                assert not vols & {owner[i] for i in other}  # a volume lives on one rank
        seen |= set(idx)
    assert seen == set(owner)  # every slice is used


def test_sampler_is_deterministic_per_epoch_and_reshuffles():
    s = VolumeDistributedSampler(VOLUMES, num_replicas=2, rank=0, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    assert list(s) == e0
    s.set_epoch(1)
    assert list(s) != e0
    plain = VolumeDistributedSampler(VOLUMES, num_replicas=2, rank=1, shuffle=False)
    assert list(plain) == list(plain)
    batched = VolumeDistributedSampler(VOLUMES, num_replicas=2, rank=0, batch_size=4)
    assert len(batched) % 4 == 0


def test_sampler_from_dataset(synth):
    ds = SliceDataset(synth)
    s = VolumeDistributedSampler(ds, num_replicas=2, rank=0)
    names = {str(ds.raw_samples[i].fname) for i in s}
    assert 1 <= len(names) <= 2
    with pytest.raises(ValueError, match="rank 2 not in"):
        VolumeDistributedSampler(ds, num_replicas=2, rank=2)


def test_multicoil_synthetic_sens_and_labels(tmp_path):
    write_synthetic_dataset(tmp_path, volumes=1, slices=3, coils=3, size=40, seed=2,
                            crop_size=32, annotations=False)
    ds = SliceDataset(tmp_path, KspaceTransform(RandomMaskFunc([0.1], [4])), metadata_cache=False)
    with h5py.File(tmp_path / "synth_knee_s2_000.h5", "r") as f:
        sens, labels = f["fastfn_sens"][()], f["fastfn_labels"][()]
    batch = collate([ds[0], ds[2]])
    assert batch["sens"].shape == (2, 3, 40, 40) and batch["sens"].dtype == torch.complex64
    np.testing.assert_array_equal(batch["sens"][1].numpy(), sens)
    np.testing.assert_array_equal(batch["labels"][1].numpy(), labels[2, 4:36, 4:36])
    assert batch["target"].shape == (2, 32, 32) and batch["zero_filled"].shape == (2, 32, 32)
    assert ds.num_opens == 1
