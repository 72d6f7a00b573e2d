"""Importers: magnitude image stacks and raw k-space arrays -> fastMRI-format ``.h5``.

- :func:`import_images`: a DICOM series (pydicom), a NIfTI volume (nibabel) or a
  ``.npy``/``.npz`` magnitude stack. Magnitude images carry no phase and no coil
  information, so the acquisition is *simulated* (smooth phase, optional Gaussian
  coil maps, complex Gaussian noise at a chosen SNR, resampling to the requested
  matrix) and the file says so in its attributes (``fastfn_simulated`` = True,
  ``fastfn_source``, ``fastfn_snr``, ``fastfn_coils``, ``fastfn_resampled_from``).
- :func:`import_kspace`: raw complex k-space ``.npy``/``.npz`` with an axes
  description (argument, or the npz entry ``axes``), e.g. ``"slice,coil,ky,kx"``.
  ``ky`` (phase encode, the masked direction) becomes the last dim W, ``kx``
  (readout) H; ``fastfn_simulated`` = False.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from fastfn.data.acquisition import rss, simulate_kspace
from fastfn.data.h5io import ismrmrd_header, write_fastmri_h5
from fastfn.data.transforms import center_crop
from fastfn.ops import ifft2c

__all__ = ["import_images", "import_kspace", "load_image_stack", "parse_axes"]

_AXIS_ALIASES = {
    "slice": "slice", "slices": "slice", "sl": "slice", "z": "slice", "partition": "slice",
    "coil": "coil", "coils": "coil", "channel": "coil", "cha": "coil", "c": "coil",
    "ky": "ky", "phase_encode": "ky", "phase": "ky", "pe": "ky", "lin": "ky",
    "kx": "kx", "readout": "kx", "ro": "kx", "col": "kx",
}


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"reading this input needs the optional package '{module}': "
                          f"pip install 'fastfn[{extra}]' (or pip install {module})") from None


def _npz_array(path: Path, key: Optional[str], preferred: Sequence[str]) -> Tuple[np.ndarray, dict]:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data, {}
    names = list(data.keys())
    if key is None:
        key = next((k for k in preferred if k in names), None)
        if key is None:
            arrays = [k for k in names if data[k].ndim >= 2]
            if len(arrays) != 1:
                raise KeyError(f"{path}: cannot tell which array to import among {names}; "
                               f"pass key= (expected one of {list(preferred)})")
            key = arrays[0]
    if key not in names:
        raise KeyError(f"{path}: no array '{key}' (found {names})")
    return data[key], {k: data[k] for k in names if k != key}


def _dicom_files(folder: Path) -> List[Path]:
    files = [p for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"]
    if not files:
        raise FileNotFoundError(f"{folder}: empty folder, expected a DICOM series")
    return files


def _load_dicom(paths: Sequence[Path]) -> np.ndarray:
    pydicom = _require("pydicom", "dicom")
    slices = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p)
        except Exception as e:  # pydicom raises several types for non-DICOM input
            raise ValueError(f"{p}: not a readable DICOM file ({e})") from None
        if "PixelData" not in ds:
            raise KeyError(f"{p}: DICOM file has no PixelData")
        img = ds.pixel_array.astype(np.float32)
        img = img * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
        pos = getattr(ds, "ImagePositionPatient", None)
        orient = getattr(ds, "ImageOrientationPatient", None)
        if pos is not None and orient is not None:
            normal = np.cross(np.asarray(orient[:3], float), np.asarray(orient[3:], float))
            order = float(np.dot(normal, np.asarray(pos, float)))
        else:
            order = float(getattr(ds, "InstanceNumber", len(slices)) or 0)
        slices.append((order, img))
    shapes = {s[1].shape for s in slices}
    if len(shapes) != 1:
        raise ValueError(f"DICOM series {paths[0].parent}: slices have different sizes {sorted(shapes)}")
    slices.sort(key=lambda s: s[0])
    return np.stack([s[1] for s in slices])


def load_image_stack(src: str | os.PathLike, key: Optional[str] = None) -> np.ndarray:
    """Read a magnitude stack as float32 (slices, H, W) from a DICOM file or series
    folder, a NIfTI file (slices along its 3rd axis), or ``.npy``/``.npz``
    (``images`` entry by default; 2-D arrays become one slice)."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"import: no such file or folder: {src}")
    name = src.name.lower()
    if src.is_dir():
        stack = _load_dicom(_dicom_files(src))
    elif name.endswith((".nii", ".nii.gz")):
        nib = _require("nibabel", "nifti")
        vol = np.asarray(nib.load(str(src)).get_fdata(dtype=np.float32))
        if vol.ndim == 4 and vol.shape[3] == 1:
            vol = vol[..., 0]
        if vol.ndim == 2:
            vol = vol[..., None]
        if vol.ndim != 3:
            raise ValueError(f"{src}: NIfTI image has shape {vol.shape}; expected 3-D (x, y, slices)")
        # NIfTI stores (x, y, z) with x the column index: slices first, rows = y.
        stack = np.transpose(vol, (2, 1, 0))
    elif name.endswith(".dcm"):
        stack = _load_dicom([src])
    elif name.endswith((".npy", ".npz")):
        stack, _ = _npz_array(src, key, ("images", "image", "magnitude"))
    else:
        raise ValueError(f"{src}: unknown image format; expected a DICOM folder or .dcm, "
                         ".nii/.nii.gz, .npy or .npz")
    stack = np.asarray(stack)
    if np.iscomplexobj(stack):
        raise ValueError(f"{src}: complex data; use import_kspace for raw k-space or pass magnitudes")
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or min(stack.shape) < 1:
        raise ValueError(f"{src}: image stack has shape {stack.shape}; expected (slices, H, W) or (H, W)")
    stack = stack.astype(np.float32)
    if not np.isfinite(stack).all():
        raise ValueError(f"{src}: image stack contains non-finite values")
    return stack


def _resample(stack: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize every slice to ``size`` (linear, with a Gaussian anti-alias filter when
    shrinking)."""
    h, w = stack.shape[-2:]
    fy, fx = size[0] / h, size[1] / w
    sigma = (0.0, max(0.0, (1 / fy - 1) / 2), max(0.0, (1 / fx - 1) / 2))
    if sigma[1] or sigma[2]:
        stack = ndimage.gaussian_filter(stack, sigma)
    out = ndimage.zoom(stack, (1.0, fy, fx), order=1, grid_mode=True, mode="nearest")
    return np.clip(out, 0, None).astype(np.float32)


def import_images(src: str | os.PathLike, out: str | os.PathLike, *, size: Optional[int] = None,
                  coils: Optional[int] = None, snr: Optional[float] = 30.0, seed: int = 0,
                  name: Optional[str] = None, key: Optional[str] = None,
                  crop_size: Optional[int] = None, acquisition: str = "IMPORTED") -> Path:
    """Import a magnitude image stack as one fastMRI-format volume with a simulated acquisition.

    Args:
        src: DICOM series folder or file, ``.nii``/``.nii.gz``, ``.npy``/``.npz``.
        out: output folder; the file is ``<name or src stem>.h5``.
        size: matrix to resample each slice to (size x size); None keeps (H, W).
        coils: None for single-coil, else the number of simulated coils.
        snr: mean foreground magnitude over complex noise std; None adds no noise.
        crop_size: target size, default min(320, H, W).
    Returns:
        The written file. Intensities are scaled so the largest magnitude is 1.
    """
    src = Path(src)
    stack = load_image_stack(src, key=key)
    original = stack.shape[-2:]
    if size is not None:
        if size < 16:
            raise ValueError(f"import_images: size must be >= 16, got {size}")
        stack = _resample(stack, (size, size))
    peak = float(stack.max())
    if peak <= 0:
        raise ValueError(f"{src}: image stack is all zero")
    stack = stack / peak
    rng = np.random.default_rng(seed)
    acq = simulate_kspace(stack, rng, coils=coils, snr=snr)
    H, W = stack.shape[-2:]
    crop = min(320, H, W) if crop_size is None else int(crop_size)
    if not 1 <= crop <= min(H, W):
        raise ValueError(f"import_images: crop_size {crop} must be in [1, {min(H, W)}]")
    stem = name or re.sub(r"\.nii$", "", src.stem)
    attrs = {"acquisition": acquisition, "patient_id": stem, "fastfn_simulated": True,
             "fastfn_source": str(src), "fastfn_snr": float(snr) if snr is not None else float("inf"),
             "fastfn_noise_std": acq.noise_std, "fastfn_coils": 0 if coils is None else int(coils),
             "fastfn_resampled_from": np.asarray(original, dtype=np.int64), "fastfn_seed": seed,
             "fastfn_note": "magnitude images with a simulated acquisition (smooth phase, "
                            "coil maps, complex Gaussian noise)"}
    extra = {"fastfn_sens": acq.sens} if acq.sens is not None else None
    header = ismrmrd_header((H, W, 1), (crop, crop, 1), extra_comment="fastfn import (simulated)")
    return write_fastmri_h5(Path(out) / f"{stem}.h5", acq.kspace,
                            target=center_crop(acq.target, crop),
                            header=header, attrs=attrs, extra=extra)


def parse_axes(axes: str | Sequence[str], ndim: int, where: str = "axes") -> List[str]:
    """Canonical axis names (slice, coil, ky, kx) of an axes description such as
    ``"slice,coil,ky,kx"`` or ``"(phase_encode, coil, readout)"``."""
    if isinstance(axes, np.ndarray):
        axes = axes.item() if axes.ndim == 0 else list(axes)
    if isinstance(axes, str):
        axes = [a for a in re.split(r"[,\s()\[\]]+", axes) if a]
    names = []
    for a in axes:
        canon = _AXIS_ALIASES.get(str(a).strip().lower())
        if canon is None:
            raise ValueError(f"{where}: unknown axis {a!r}; use slice, coil, ky (phase_encode) "
                             "and kx (readout)")
        names.append(canon)
    if len(names) != ndim:
        raise ValueError(f"{where}: {len(names)} axes {names} for an array with {ndim} dims")
    if len(set(names)) != len(names) or "ky" not in names or "kx" not in names:
        raise ValueError(f"{where}: axes {names} must name ky and kx once each")
    return names


def import_kspace(src: str | os.PathLike, out: str | os.PathLike, *, axes: Optional[str] = None,
                  key: Optional[str] = None, name: Optional[str] = None,
                  crop_size: Optional[int] = None, acquisition: str = "IMPORTED_RAW") -> Path:
    """Import raw complex k-space as one fastMRI-format volume.

    Args:
        src: ``.npy`` or ``.npz`` (array ``kspace`` by default) complex k-space, centred
            (DC at index n // 2 of ky and kx).
        axes: axis names in array order (``slice``, ``coil`` optional; ``ky``, ``kx``
            required); default: the npz's ``axes`` entry.
        crop_size: target size, default min(320, H, W).
    Returns:
        The written file: kspace (slices, [coils,] H=kx, W=ky), the RSS (multi-coil)
        or magnitude (single-coil) target.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"import_kspace: no such file: {src}")
    if not src.name.lower().endswith((".npy", ".npz")):
        raise ValueError(f"{src}: raw k-space must be .npy or .npz")
    arr, others = _npz_array(src, key, ("kspace",))
    if not np.iscomplexobj(arr):
        raise ValueError(f"{src}: k-space array has dtype {arr.dtype}; expected complex")
    if axes is None:
        if "axes" not in others:
            raise ValueError(f"{src}: no axes description; pass axes='slice,coil,ky,kx' (or the "
                             "order of your array)")
        axes = others["axes"]
    names = parse_axes(axes, arr.ndim, where=f"{src} axes")
    order = [n for n in ("slice", "coil", "kx", "ky") if n in names]
    k = np.transpose(arr, [names.index(n) for n in order])
    if "slice" not in names:
        k = k[None]
    if not np.isfinite(k).all():
        raise ValueError(f"{src}: k-space contains non-finite values")
    k = k.astype(np.complex64)
    multicoil = "coil" in names
    images = ifft2c(torch.from_numpy(k)).numpy()
    target = rss(images, axis=1) if multicoil else np.abs(images)
    H, W = k.shape[-2:]
    crop = min(320, H, W) if crop_size is None else int(crop_size)
    if not 1 <= crop <= min(H, W):
        raise ValueError(f"import_kspace: crop_size {crop} must be in [1, {min(H, W)}]")
    stem = name or src.stem
    attrs = {"acquisition": acquisition, "patient_id": stem, "fastfn_simulated": False,
             "fastfn_source": str(src), "fastfn_axes": ",".join(names)}
    header = ismrmrd_header((H, W, 1), (crop, crop, 1), extra_comment="fastfn import (raw k-space)")
    return write_fastmri_h5(Path(out) / f"{stem}.h5", k, target=center_crop(target, crop),
                            header=header, attrs=attrs)
