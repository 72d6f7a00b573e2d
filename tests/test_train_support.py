"""Small stand-ins shared by the training tests: a toy reconstructor and an in-memory
slice dataset that yields fastfn batch dicts (ARCHITECTURE.md's batch contract).

No tests here; the trainer, checkpoint, distributed and CLI tests import it.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from fastfn.models.base import Reconstructor, center_crop


class ToyRecon(Reconstructor):
    """Zero-filled magnitude plus a 2-layer conv residual, with dropout so that the
    global RNG matters (resume must restore it). Single-coil, any size. Uses torch.fft
    directly, so these tests do not depend on the state of the fastfn kernels."""

    def __init__(self, chans: int = 4, drop_prob: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, chans, 3, padding=1), nn.ReLU(),
                                 nn.Dropout(drop_prob), nn.Conv2d(chans, 1, 3, padding=1))
        self.model_name = "toy"

    def forward(self, masked_kspace, mask, crop_size=None):
        self.check_inputs(masked_kspace, mask)
        x = center_crop(_ifft2c(masked_kspace).abs(), crop_size)
        return x + self.net(x.unsqueeze(1))[:, 0]


def _fft2c(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"),
                              dim=(-2, -1))


def _ifft2c(k: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"),
                              dim=(-2, -1))


class ToySlices(Dataset):
    """``volumes`` x ``slices`` smooth random complex images of size ``size`` with a
    fixed per-volume column mask (4x-ish with a fully sampled centre)."""

    def __init__(self, volumes: int = 3, slices: int = 4, size: int = 32, crop: int = 24,
                 seed: int = 0, prefix: str = "vol") -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for v in range(volumes):
            low = torch.randn(slices, 2, size // 4, size // 4, generator=g)
            img = nn.functional.interpolate(low, size=(size, size), mode="bilinear",
                                            align_corners=False)
            img = torch.complex(img[:, 0].abs() + 0.5, 0.2 * img[:, 1])
            mask = (torch.rand(size, generator=g) < 0.25).float()
            c = size // 2
            mask[c - 2:c + 2] = 1.0
            target = center_crop(img.abs(), crop)
            vmax = target.max()
            for s in range(slices):
                k = _fft2c(img[s])
                mk = k * mask
                zf = center_crop(_ifft2c(mk).abs(), crop)
                self.items.append({
                    "kspace": k, "masked_kspace": mk, "mask": mask.reshape(1, size),
                    "target": target[s], "zero_filled": zf, "max": vmax.float(),
                    "fname": f"{prefix}{v:02d}.h5", "slice": torch.tensor(s),
                    "num_low_frequencies": torch.tensor(4),
                })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


collate = default_collate


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (on a busy 2-core machine several threads
    oversubscribe it and are many times slower); restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
