"""Synthetic knee data: fastMRI format, determinism, physics, anatomy, annotations,
the cached default set and the `fastfn data synth` command."""
from __future__ import annotations

import csv
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from fastfn.cli import main as cli_main
from fastfn.data import (LABELS, SliceDataset, annotation_rows, default_data, parse_ismrmrd_header,
                         write_synthetic_dataset)
from fastfn.data.phantom import LABEL_IDS


def np_ifft2c(k):
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def np_crop(x, h, w):
    H, W = x.shape[-2:]
    return x[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    write_synthetic_dataset(out, volumes=2, slices=3, size=64, seed=7)
    return out


def test_single_coil_file_is_fastmri_format(single):
    files = sorted(single.glob("*.h5"))
    assert [f.name for f in files] == ["synth_knee_s7_000.h5", "synth_knee_s7_001.h5"]
    with h5py.File(files[0], "r") as f:
        k, t = f["kspace"][()], f["reconstruction_esc"][()]
        assert f["kspace"].dtype == np.complex64 and k.shape == (3, 64, 64)
        assert f["reconstruction_esc"].dtype == np.float32 and t.shape == (3, 64, 64)
        assert "reconstruction_rss" not in f
        geometry = parse_ismrmrd_header(f["ismrmrd_header"][()])
        assert geometry["encoding_size"] == (64, 64, 1) and geometry["recon_size"] == (64, 64, 1)
        assert (geometry["padding_left"], geometry["padding_right"]) == (0, 64)
        assert f.attrs["max"] == pytest.approx(t.max())
        assert f.attrs["norm"] == pytest.approx(np.linalg.norm(t), rel=1e-5)
        assert f.attrs["acquisition"] == "CORPD_FBK" and f.attrs["patient_id"]
        assert f["fastfn_labels"].dtype == np.uint8 and f["fastfn_labels"].shape == (3, 64, 64)
    # The target is the magnitude of the (noisy) image the k-space encodes.
    np.testing.assert_allclose(t, np.abs(np_ifft2c(k)), rtol=1e-4, atol=1e-4 * t.max())


def test_multicoil_small_size_and_default_crop(tmp_path):
    write_synthetic_dataset(tmp_path, volumes=1, slices=2, coils=4, size=48, seed=0)
    with h5py.File(tmp_path / "synth_knee_s0_000.h5", "r") as f:
        k, t, sens = f["kspace"][()], f["reconstruction_rss"][()], f["fastfn_sens"][()]
        assert k.shape == (2, 4, 48, 48) and t.shape == (2, 48, 48) and sens.shape == (4, 48, 48)
    np.testing.assert_allclose(t, np.sqrt((np.abs(np_ifft2c(k)) ** 2).sum(1)), rtol=1e-4,
                               atol=1e-4 * t.max())
    # Coil images are the sensitivity-weighted image: their ratio to coil 0 is the
    # sens ratio where the signal is strong (noise aside).
    img = np_ifft2c(k[0])
    strong = t[0] > 0.5 * t[0].max()
    ratio = img[1][strong] / img[0][strong]
    expected = sens[1][strong] / sens[0][strong]
    assert np.median(np.abs(ratio - expected) / np.abs(expected)) < 0.1
    # 400 > 320: the target is cropped to 320 by default.
    write_synthetic_dataset(tmp_path / "big", volumes=1, slices=1, size=400, annotations=False)
    with h5py.File(tmp_path / "big" / "synth_knee_s0_000.h5", "r") as f:
        assert f["reconstruction_esc"].shape == (1, 320, 320)


def test_deterministic_and_seed_dependent(tmp_path, single):
    write_synthetic_dataset(tmp_path / "again", volumes=1, slices=3, size=64, seed=7)
    write_synthetic_dataset(tmp_path / "other", volumes=1, slices=3, size=64, seed=8)
    read = lambda p: h5py.File(p, "r")["kspace"][()]  # noqa: E731
    a = read(single / "synth_knee_s7_000.h5")
    np.testing.assert_array_equal(a, read(tmp_path / "again" / "synth_knee_s7_000.h5"))
    assert not np.allclose(a, read(tmp_path / "other" / "synth_knee_s8_000.h5"))
    # Volumes differ in anatomy, not only in noise.
    la = h5py.File(single / "synth_knee_s7_000.h5", "r")["fastfn_labels"][()]
    lb = h5py.File(single / "synth_knee_s7_001.h5", "r")["fastfn_labels"][()]
    assert (la != lb).mean() > 0.02


def test_noise_has_the_requested_snr(tmp_path):
    # Same seed with and without noise: everything drawn before the noise is equal, so
    # the difference is the noise itself.
    write_synthetic_dataset(tmp_path / "n", 1, 4, size=96, seed=3, snr=20.0, annotations=False)
    write_synthetic_dataset(tmp_path / "c", 1, 4, size=96, seed=3, snr=None, annotations=False)
    kn = h5py.File(tmp_path / "n" / "synth_knee_s3_000.h5", "r")["kspace"][()]
    kc = h5py.File(tmp_path / "c" / "synth_knee_s3_000.h5", "r")["kspace"][()]
    clean = np.abs(np_ifft2c(kc))
    fg = clean[clean > 0.1 * clean.max()]
    noise = kn - kc  # orthonormal FFT: same std in k-space as in the image
    assert np.std(noise) == pytest.approx(fg.mean() / 20.0, rel=0.05)
    assert abs(np.mean(noise.real * noise.imag)) < 0.05 * np.var(noise.real)  # circular


def test_anatomy_has_pd_contrast_and_expected_structures(tmp_path):
    write_synthetic_dataset(tmp_path, 2, 5, size=128, seed=0, snr=None, annotations=False)
    for path in sorted(tmp_path.glob("*.h5")):
        with h5py.File(path, "r") as f:
            img, lab = f["reconstruction_esc"][()], f["fastfn_labels"][()]
        mean = {name: img[lab == i].mean() for i, name in LABELS.items() if (lab == i).any()}
        # Thin wedges at 128 px are blurred by partial volume: use their interior.
        inner = ndimage.binary_erosion(lab == LABEL_IDS["medial_meniscus"], np.ones((1, 3, 3)))
        assert inner.any()
        mean["medial_meniscus"] = img[inner].mean()
        for name in ("fat", "muscle", "femur_marrow", "tibia_marrow", "cortical_bone",
                     "femoral_cartilage", "tibial_cartilage", "medial_meniscus",
                     "lateral_meniscus", "ligament"):
            assert name in mean, f"{path.name}: no {name}"
        # Proton-density knee: fat > marrow > cartilage > muscle > meniscus, cortex ~ dark.
        assert mean["fat"] > mean["femur_marrow"] > mean["femoral_cartilage"] > mean["muscle"]
        assert mean["muscle"] > 2 * mean["medial_meniscus"]
        assert mean["muscle"] > 1.5 * mean["cortical_bone"]  # a 1-2 px rim: partial volume
        air = ndimage.binary_erosion(lab == 0, np.ones((1, 5, 5)))
        assert img[air].mean() < 0.01 * mean["fat"]
        # Femur above the joint, tibia below it.
        rows = np.nonzero(lab[2])[0]
        fem_rows = np.nonzero(lab[2] == LABEL_IDS["femur_marrow"])[0]
        tib_rows = np.nonzero(lab[2] == LABEL_IDS["tibia_marrow"])[0]
        assert fem_rows.mean() < tib_rows.mean() and rows.size
        # Slices vary smoothly: neighbours share most labels.
        assert (lab[2] == lab[3]).mean() > 0.9


def test_annotations_csv_boxes_enclose_the_structures(single):
    from fastfn.data.annotations import annotations_path
    assert sorted(p.suffix for p in single.iterdir()) == [".h5"] * len(list(single.iterdir()))  # .h5 only
    with open(annotations_path(single), newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"file", "slice", "study_level", "x", "y", "width", "height", "label"}
    assert {r["label"] for r in rows} == {"Meniscus", "Cartilage"}
    with h5py.File(single / "synth_knee_s7_000.h5", "r") as f:
        lab = f["fastfn_labels"][1]
    h = lab.shape[0]
    mine = [r for r in rows if r["file"] == "synth_knee_s7_000" and r["slice"] == "1"]
    menisci = [r for r in mine if r["label"] == "Meniscus"]
    assert len(menisci) == 2
    for r in menisci:
        x, w, hh = int(r["x"]), int(r["width"]), int(r["height"])
        top = h - int(r["y"]) - hh  # fastMRI+ y counts from the bottom
        box = lab[top:top + hh, x:x + w]
        inside = np.isin(box, [LABEL_IDS["medial_meniscus"], LABEL_IDS["lateral_meniscus"]]).sum()
        total = np.isin(lab, [LABEL_IDS["medial_meniscus"], LABEL_IDS["lateral_meniscus"]]).sum()
        assert inside > 0 and inside < total  # each box holds one of the two menisci
    rows_direct = annotation_rows(lab, "synth_knee_s7_000", 1)
    assert [{k: str(v) for k, v in r.items()} for r in rows_direct] == mine


def test_default_data_is_created_once_under_concurrency(tmp_path, monkeypatch):
    # Threads, not processes, race here (processes would cost seconds of imports each);
    # the protocol under test, private temp folder + atomic rename, is the same.
    monkeypatch.setenv("FASTFN_CACHE", str(tmp_path))
    start = threading.Barrier(3)
    results, errors = [], []

    def run():
        start.wait()
        try:
            results.append(str(default_data("val", size=32, volumes=2, slices=2)))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    paths = set(results)
    assert len(paths) == 1
    folder = Path(paths.pop())
    assert sorted(p.name for p in folder.glob("*.h5")) == ["synth_knee_s1000_000.h5",
                                                           "synth_knee_s1000_001.h5"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["data", "data_annotations.csv"]
    assert [p.name for p in folder.parent.parent.iterdir()] == [folder.parent.name]  # no temp leftovers
    assert default_data("val", size=32, volumes=2, slices=2) == folder
    assert len(SliceDataset(folder, metadata_cache=False)) == 4
    with pytest.raises(ValueError, match="split must be one of"):
        default_data("training")


def test_cli_synth(tmp_path, capsys):
    rc = cli_main(["data", "synth", "--out", str(tmp_path), "--volumes", "2", "--slices", "2",
                   "--coils", "2", "--size", "32", "--seed", "4"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["synth_knee_s4_000.h5",
                                                             "synth_knee_s4_001.h5"]
    with h5py.File(tmp_path / "synth_knee_s4_000.h5", "r") as f:
        assert f["kspace"].shape == (2, 2, 32, 32)
    assert cli_main(["data", "synth", "--out", str(tmp_path), "--volumes", "0"]) == 2
    assert "volumes must be >= 1" in capsys.readouterr().err
