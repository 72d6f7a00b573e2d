"""Synthetic knee data in fastMRI format: the embedded default data set.

:func:`write_synthetic_dataset` writes one ``.h5`` file per volume (same keys,
dtypes, header fields and attributes as fastMRI's knee files) plus the extras
``fastfn_labels`` (uint8 anatomy labels, table :data:`fastfn.data.phantom.LABELS`,
at the k-space image size) and, for multi-coil data, ``fastfn_sens`` (complex64
(coils, H, W) coil maps, the same for every slice), and beside the folder (not in it:
fastMRI's ``SliceDataset`` opens every entry of a data folder) a
``<folder>_annotations.csv`` in the fastMRI+ layout with boxes around the menisci and
the cartilage. :func:`default_data` generates a fixed set once into a cache folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from fastfn.data.acquisition import simulate_kspace
from fastfn.data.annotations import annotations_path, write_annotation_csv
from fastfn.data.h5io import ismrmrd_header, write_fastmri_h5
from fastfn.data.transforms import center_crop
from fastfn.fileio import umask
from fastfn.data.paths import cache_dir
from fastfn.data.phantom import LABEL_IDS, LABELS, knee_volume

GENERATOR_VERSION = 3  # 3: the same data; annotations beside the data folder, not in it
#: Labels that :func:`annotation_rows` boxes, with the fastMRI+-style label text.
ANNOTATED = {"medial_meniscus": "Meniscus", "lateral_meniscus": "Meniscus",
             "femoral_cartilage": "Cartilage", "tibial_cartilage": "Cartilage"}

__all__ = ["write_synthetic_dataset", "default_data", "annotation_rows",
           "cache_dir", "LABELS", "GENERATOR_VERSION"]


def annotation_rows(labels: np.ndarray, fname: str, slice_idx: int,
                    names: Iterable[str] = tuple(ANNOTATED)) -> List[dict]:
    """fastMRI+-style box annotations of one label map.

    Args:
        labels: uint8 (h, w) label map in the frame of the (cropped) target image.
        fname: file stem written in the ``file`` column (fastMRI+ omits ``.h5``).
    Returns:
        One row per connected component of each named label: ``file, slice,
        study_level ('No'), x, y, width, height, label``. As in fastMRI+, ``y`` counts
        from the bottom of the image: the top row of a box is ``h - y - height``.
    """
    h = labels.shape[0]
    rows = []
    for name in names:
        comps, n = ndimage.label(labels == LABEL_IDS[name])
        for sl in ndimage.find_objects(comps):
            if sl is None:
                continue
            top, bottom = sl[0].start, sl[0].stop
            left, right = sl[1].start, sl[1].stop
            height = bottom - top
            rows.append({"file": fname, "slice": int(slice_idx), "study_level": "No",
                         "x": int(left), "y": int(h - top - height), "width": int(right - left),
                         "height": int(height), "label": ANNOTATED.get(name, name)})
    return rows


def write_synthetic_dataset(out: str | os.PathLike, volumes: int, slices: int,
                            coils: Optional[int] = None, size: int = 320, seed: int = 0, *,
                            snr: Optional[float] = 30.0, crop_size: Optional[int] = None,
                            prefix: str = "synth_knee", annotations: bool | str | os.PathLike = True
                            ) -> List[Path]:
    """Generate ``volumes`` knee volumes of ``slices`` coronal PD slices into ``out``.

    Args:
        out: folder (created).
        coils: None for single-coil files (``kspace`` (slices, size, size),
            ``reconstruction_esc``), else multi-coil (``kspace`` (slices, coils, size,
            size), ``reconstruction_rss``, ``fastfn_sens``).
        size: k-space matrix (square, no readout oversampling).
        seed: volume v is drawn from ``np.random.SeedSequence([seed, v])``, so the
            first volumes do not depend on how many are generated.
        snr: mean foreground magnitude over complex noise std (per coil); None: no noise.
        crop_size: target size, default ``min(320, size)`` (``reconSpace`` in the header).
        annotations: write fastMRI+-style boxes of the menisci and cartilage: True to
            ``annotations_path(out)`` (beside the folder), a path to write them there,
            False for none.
    Returns:
        The written file paths, ``{prefix}_s{seed}_{v:03d}.h5``.
    """
    for name, value in (("volumes", volumes), ("slices", slices), ("size", size)):
        if int(value) < 1:
            raise ValueError(f"write_synthetic_dataset: {name} must be >= 1, got {value}")
    if coils is not None and coils < 1:
        raise ValueError(f"write_synthetic_dataset: coils must be >= 1 or None, got {coils}")
    crop = min(320, size) if crop_size is None else int(crop_size)
    if not 1 <= crop <= size:
        raise ValueError(f"write_synthetic_dataset: crop_size {crop} must be in [1, size={size}]")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for v in range(volumes):
        rng = np.random.default_rng(np.random.SeedSequence([seed, v]))
        magnitude, labels = knee_volume(rng, slices, size)
        acq = simulate_kspace(magnitude, rng, coils=coils, snr=snr)
        target = center_crop(acq.target, crop)
        fname = f"{prefix}_s{seed}_{v:03d}.h5"
        header = ismrmrd_header((size, size, 1), (crop, crop, 1),
                                extra_comment="fastfn synthetic knee phantom")
        extra = {"fastfn_labels": labels}
        if acq.sens is not None:
            extra["fastfn_sens"] = acq.sens
        attrs = {"acquisition": "CORPD_FBK", "patient_id": f"fastfn-synth-{seed}-{v:03d}",
                 "fastfn_synthetic": True, "fastfn_generator_version": GENERATOR_VERSION,
                 "fastfn_seed": seed, "fastfn_volume": v,
                 "fastfn_snr": float(snr) if snr is not None else float("inf"),
                 "fastfn_noise_std": acq.noise_std,
                 "fastfn_labels_table": ",".join(f"{k}:{n}" for k, n in LABELS.items())}
        paths.append(write_fastmri_h5(out / fname, acq.kspace, target=target, header=header,
                                      attrs=attrs, extra=extra))
        if annotations:
            cropped = center_crop(labels, crop)
            for i in range(slices):
                rows += annotation_rows(cropped[i], Path(fname).stem, i)
    if annotations:
        write_annotation_csv(annotations_path(out) if annotations is True else Path(annotations), rows)
    return paths


#: Default sets: (volumes, slices, seed) per split.
DEFAULT_SPLITS = {"train": (10, 20, 0), "val": (4, 20, 1000), "test": (4, 20, 2000)}


def default_data(split: str = "train", *, size: int = 320, coils: Optional[int] = None,
                 volumes: Optional[int] = None, slices: Optional[int] = None,
                 snr: Optional[float] = 30.0) -> Path:
    """The folder of the embedded synthetic data set for ``split``, generated on first use.

    Splits use disjoint seeds (train 0, val 1000, test 2000), 10/4/4 volumes of 20
    slices by default. The set is generated into a private temporary folder inside
    the cache and renamed into place, so concurrent first uses (several DataLoader
    or DDP processes) never see a half-written set; the loser of the race discards
    its copy.
    """
    if split not in DEFAULT_SPLITS:
        raise ValueError(f"default_data: split must be one of {sorted(DEFAULT_SPLITS)}, got {split!r}")
    nvol, nsl, seed = DEFAULT_SPLITS[split]
    volumes = nvol if volumes is None else volumes
    slices = nsl if slices is None else slices
    coil_tag = "sc" if coils is None else f"mc{coils}"
    snr_tag = "inf" if snr is None else f"{snr:g}"
    name = f"knee_v{GENERATOR_VERSION}_{split}_{coil_tag}_n{size}_{volumes}x{slices}_snr{snr_tag}"
    root = cache_dir() / "synthetic"
    final = root / name  # holds the data folder and its annotations beside it
    if (final / "data").is_dir():
        return final / "data"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        write_synthetic_dataset(tmp / "data", volumes, slices, coils=coils, size=size, seed=seed, snr=snr)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp creates 0700
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "data").is_dir():  # not the lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "data"
