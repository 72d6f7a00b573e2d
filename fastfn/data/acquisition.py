"""Simulated acquisition of magnitude images: smooth phase, coil maps, noise, k-space.

Shared by the synthetic knee generator and the magnitude-image importers. All
arrays are numpy (the generator runs in DataLoader-free scripts and importers);
the FFT is fastfn.ops' centred orthonormal one, so the k-space of a file and the
zero-filled images the transforms compute agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from fastfn.ops import fft2c

__all__ = ["smooth_phase", "coil_sensitivities", "simulate_kspace", "SimulatedScan", "rss"]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates in [-1, 1): y (rows) and x (columns), float32 (h, w)."""
    y = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    return np.meshgrid(y, x, indexing="ij")


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, *, max_rad: float = np.pi,
                 slices: int = 1) -> np.ndarray:
    """Smooth phase maps (slices, h, w) float32: a random quadratic surface per volume
    that drifts slowly (linearly) from the first to the last slice, like B0/receive
    phase does. Peak magnitude about ``max_rad``."""
    y, x = _grid(*shape)
    basis = np.stack([np.ones_like(x), x, y, x * y, x * x, y * y])  # (6, h, w)
    c0 = rng.normal(size=6) * max_rad / 3
    c1 = rng.normal(size=6) * max_rad / 6
    t = np.linspace(-1.0, 1.0, slices, dtype=np.float32) if slices > 1 else np.zeros(1, np.float32)
    coeffs = (c0[None] + t[:, None] * c1[None]).astype(np.float32)  # (slices, 6)
    return np.einsum("sk,khw->shw", coeffs, basis).astype(np.float32)


def coil_sensitivities(shape: tuple[int, int], coils: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-profile receive coils on a ring around the FOV, complex64 (coils, h, w).

    Each coil's magnitude falls off as a Gaussian of the distance to the coil
    (width about 0.9 of the FOV half-width) with a small linear phase; the maps are
    scaled so their root-sum-of-squares is about 1 at the centre.
    """
    if coils < 1:
        raise ValueError(f"coils must be >= 1, got {coils}")
    y, x = _grid(*shape)
    angle0 = rng.uniform(0, 2 * np.pi)
    maps = []
    for c in range(coils):
        a = angle0 + 2 * np.pi * c / coils
        cy, cx = 1.3 * np.sin(a), 1.3 * np.cos(a)
        width = 0.9 * rng.uniform(0.85, 1.15)
        mag = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
        phase = rng.uniform(-np.pi, np.pi) + 0.6 * (np.cos(a) * x + np.sin(a) * y)
        maps.append(mag * np.exp(1j * phase))
    maps = np.stack(maps).astype(np.complex64)
    centre = np.sqrt((np.abs(maps[:, shape[0] // 2, shape[1] // 2]) ** 2).sum())
    return (maps / centre).astype(np.complex64)


def rss(x: np.ndarray, axis: int = -3) -> np.ndarray:
    """Root-sum-of-squares over the coil axis."""
    return np.sqrt((np.abs(x) ** 2).sum(axis=axis))


@dataclass
class SimulatedScan:
    """Result of :func:`simulate_kspace`.

    kspace: complex64 (slices, H, W) or (slices, coils, H, W); target: float32
    (slices, H, W) magnitude (single-coil) or RSS (multi-coil) of the noisy images,
    uncropped; sens: complex64 (coils, H, W) or None; noise_std: the complex noise
    standard deviation per k-space sample (= per image pixel, orthonormal FFT).
    """

    kspace: np.ndarray
    target: np.ndarray
    sens: Optional[np.ndarray]
    noise_std: float


def simulate_kspace(magnitude: np.ndarray, rng: np.random.Generator, *, coils: Optional[int] = None,
                    snr: Optional[float] = 30.0, phase_rad: float = np.pi / 2) -> SimulatedScan:
    """Turn magnitude images into the k-space a scanner would measure.

    Args:
        magnitude: float (slices, H, W) non-negative images.
        coils: None for single-coil (one emulated coil, no sensitivity), else the coil count.
        snr: mean foreground magnitude over the complex noise standard deviation
            (per coil image); None for no noise. Foreground: pixels above 10% of the max.
        phase_rad: peak of the smooth phase.
    """
    magnitude = np.asarray(magnitude, dtype=np.float32)
    if magnitude.ndim != 3:
        raise ValueError(f"magnitude must be (slices, H, W), got {magnitude.shape}")
    s, h, w = magnitude.shape
    image = magnitude * np.exp(1j * smooth_phase((h, w), rng, max_rad=phase_rad, slices=s))
    sens = None
    if coils is not None:
        sens = coil_sensitivities((h, w), coils, rng)
        image = image[:, None] * sens[None]
    image = image.astype(np.complex64)
    noise_std = 0.0
    if snr is not None:
        fg = magnitude[magnitude > 0.1 * magnitude.max()] if magnitude.max() > 0 else magnitude
        signal = float(fg.mean()) if fg.size else 1.0
        noise_std = signal / float(snr)
        # Complex noise: real and imaginary parts each with std noise_std / sqrt(2).
        noise = rng.standard_normal((2,) + image.shape, dtype=np.float32) * (noise_std / np.sqrt(2))
        image = image + (noise[0] + 1j * noise[1]).astype(np.complex64)
    kspace = fft2c(torch.from_numpy(image)).numpy()
    # The target is what fastMRI stores: the (RSS) magnitude of the noisy images
    # (= ifft2c(kspace), the FFT being orthonormal and exact up to rounding).
    target = np.abs(image) if coils is None else rss(image, axis=1)
    return SimulatedScan(kspace=kspace.astype(np.complex64), target=target.astype(np.float32),
                       sens=sens, noise_std=noise_std)
