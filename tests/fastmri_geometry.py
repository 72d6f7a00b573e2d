"""fastMRI's real single-coil knee geometry, made by the tests: 640 x 368 k-space (readout
oversampled twice) whose phase-encode columns outside [18, 350) are zero padding, with the
header fields fastMRI derives that padding from, and 320 x 320 ESC targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastfn.data import ismrmrd_header, write_fastmri_h5
from fastfn.data.phantom import knee_volume

H, W, FIRST, LAST, RECON = 640, 368, 18, 349, 320


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def write_knee_geometry_volume(path: Path, slices: int, seed: int, coils: int | None = None) -> Path:
    """One volume: the synthetic knee phantom (320 x 320) in the centre of a 640 x 368 image
    with a smooth phase (and Gaussian coil maps when ``coils``), k-space zero outside the
    acquired columns, target = the centre 320 x 320 of the magnitude (RSS) of its inverse."""
    rng = np.random.default_rng(seed)
    mag, _ = knee_volume(rng, slices, RECON)
    image = np.zeros((slices, H, W), np.complex64)
    top, left = (H - RECON) // 2, (W - RECON) // 2
    yy, xx = np.meshgrid(np.linspace(-1, 1, RECON), np.linspace(-1, 1, RECON), indexing="ij")
    image[:, top:top + RECON, left:left + RECON] = mag * np.exp(1j * (0.8 * xx + 0.4 * yy))
    if coils is not None:
        gy, gx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
        centres = np.linspace(-1, 1, coils)
        sens = np.stack([np.exp(-((gx - c) ** 2 + gy ** 2)) for c in centres]).astype(np.complex64)
        image = image[:, None] * sens[None]
    k = _fft2c(image).astype(np.complex64)
    k[..., :FIRST] = 0
    k[..., LAST + 1:] = 0
    full = np.abs(_ifft2c(k))
    full = np.sqrt((full ** 2).sum(1)) if coils is not None else full
    target = full[..., top:top + RECON, left:left + RECON].astype(np.float32)
    header = ismrmrd_header((H, W, 1), (RECON, RECON, 1), acquired=(FIRST, LAST))
    return write_fastmri_h5(path, k, target=target, header=header, attrs={"acquisition": "CORPD_FBK"})


def write_knee_geometry_folder(root: Path, train: int = 2, val: int = 1, slices: int = 2,
                               coils: int | None = None) -> Path:
    """``root/train`` and ``root/val`` of such volumes (file1000000.h5, ...)."""
    for split, n, base in (("train", train, 0), ("val", val, 100)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for v in range(n):
            write_knee_geometry_volume(root / split / f"file{1000000 + base + v}.h5", slices, base + v, coils)
    return root
