"""Simulated acquisition of an image with an inserted feature (docs/METHOD.md section 5).

Choice: **linearity**, not the authors' "FFT of the perturbed magnitude image".
The authors built k-space as ``fft2c(y + d)`` of a real magnitude image, which
throws away the measured phase, the coils, the noise and the field of view the
model was trained on. The acquisition is linear, so instead we add only the
feature's own k-space to the real measurement:

    k'_c = k_c + F(S_c * pad(d) * e^{i angle(rho)}),     model input  m * k'

with rho the complex (coil-combined) image, S_c the coil sensitivities (1 for
single-coil) and pad(d) the (h, w) feature placed in the centre crop of the
(H, W) grid (phase 1 in the empty background, where the angle is rounding
noise). With the image's own phase and non-negative d the magnitude target
gains exactly d: |rho + d e^{i angle(rho)}| = |rho| + d, so y' = y + d matches
what the model is asked to reconstruct (single-coil ESC targets; for RSS targets
exactly when sum_c |S_c|^2 = 1, which holds for estimated maps). Everything runs on
the batch's device with ``fastfn.ops`` (fft2c/ifft2c/undersample).

Sensitivities of multi-coil data: ``batch["sens"]`` when given (e.g. synthetic
data), else estimated from the fully-sampled coil images as S_c = x_c / RSS(x)
(so rho = RSS(x), real and non-negative, and sum_c |S_c|^2 = 1; uniform maps in
the empty background, where the ratio would be rounding noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from fastfn.data.transforms import center_crop, complex_abs_rss, crop_offsets, rss
from fastfn.ops import fft2c, ifft2c, undersample


@dataclass
class Acquisition:
    """The measurement model of one batch, to simulate features into it.

    Attributes:
        masked_kspace: complex (B, H, W) or (B, C, H, W) measured, undersampled k-space.
        mask: float (B, 1, W) column mask.
        carrier: complex (B, [C,] H, W): S_c * e^{i angle(rho)} (single-coil: the phase).
        zero_filled: complex (B, [C,] H, W) zero-filled image ifft2c(masked_kspace).
        targets: real (B, h, w) magnitude targets.
    """
    masked_kspace: torch.Tensor
    mask: torch.Tensor
    carrier: torch.Tensor
    zero_filled: torch.Tensor
    targets: torch.Tensor

    @property
    def multicoil(self) -> bool:
        return self.masked_kspace.dim() == 4

    @property
    def crop(self) -> tuple[int, int]:
        return tuple(self.targets.shape[-2:])  # type: ignore[return-value]

    def _kmask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.unsqueeze(1) if self.multicoil else mask

    def _embed(self, delta: torch.Tensor, carrier: torch.Tensor) -> torch.Tensor:
        """(M, h, w) real feature maps -> (M, [C,] H, W) complex feature images."""
        H, W = self.masked_kspace.shape[-2:]
        h, w = delta.shape[-2:]
        top, left = crop_offsets((H, W), (h, w))
        d = F.pad(delta, (left, W - w - left, top, H - h - top))
        if self.multicoil:
            d = d.unsqueeze(1)
        return d * carrier

    def simulate(self, delta: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
        """Masked k-space of the images plus features.

        Args:
            delta: (M, h, w) real feature maps (the perturbed target minus the target).
            slices: (M,) int64 batch index of each map (default: arange(B), M = B).

        Returns:
            complex (M, [C,] H, W) = m * (k + F(S * pad(delta) * phase)).
        """
        if slices is None:
            slices = torch.arange(delta.shape[0], device=delta.device)
        carrier = self.carrier.index_select(0, slices)
        mask = self._kmask(self.mask.index_select(0, slices))
        k_feat = fft2c(self._embed(delta.to(carrier.real.dtype), carrier))
        return self.masked_kspace.index_select(0, slices) + mask * k_feat

    def zero_filled_change(self, delta: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
        """Magnitude change of the cropped zero-filled (RSS) image caused by ``delta``:
        (M, h, w) = |ZF(x + d)| - |ZF(x)|, with ZF(x + d) = ZF(x) + undersample(S d phase)."""
        if slices is None:
            slices = torch.arange(delta.shape[0], device=delta.device)
        carrier = self.carrier.index_select(0, slices)
        mask = self._kmask(self.mask.index_select(0, slices))
        zf = self.zero_filled.index_select(0, slices)
        zf_new = zf + undersample(self._embed(delta.to(carrier.real.dtype), carrier), mask)
        crop = tuple(delta.shape[-2:])
        return (complex_abs_rss(center_crop(zf_new, crop), self.multicoil)
                - complex_abs_rss(center_crop(zf, crop), self.multicoil))

    def zero_filled_magnitude(self) -> torch.Tensor:
        """|ZF(x)| (RSS over coils) of the measurement, centre-cropped to the targets: (B, h, w)."""
        return center_crop(complex_abs_rss(self.zero_filled, self.multicoil), self.crop)


def _phase(rho: torch.Tensor, rel_floor: float = 1e-4) -> torch.Tensor:
    """e^{i angle(rho)} of a complex image (B, H, W); 1 where |rho| is below
    ``rel_floor`` times its maximum (empty background: the angle is rounding noise)."""
    mag = rho.abs()
    floor = rel_floor * mag.amax(dim=(-2, -1), keepdim=True)
    return torch.where(mag > floor, rho / mag.clamp_min(torch.finfo(mag.dtype).tiny), torch.ones_like(rho))


def estimate_sens(coil_images: torch.Tensor, rel_floor: float = 1e-4) -> torch.Tensor:
    """Sensitivity maps S_c = x_c / RSS(x) from fully-sampled coil images (B, C, H, W).

    Where RSS is below ``rel_floor`` times its maximum (empty background, where the
    ratio is only rounding noise) the maps are uniform, 1 / sqrt(C); sum_c |S_c|^2 = 1
    everywhere either way.
    """
    norm = rss(coil_images).unsqueeze(-3)
    floor = rel_floor * norm.amax(dim=(-3, -2, -1), keepdim=True)
    uniform = torch.full_like(coil_images, 1.0 / coil_images.shape[-3] ** 0.5)
    return torch.where(norm > floor, coil_images / norm.clamp_min(torch.finfo(norm.dtype).tiny), uniform)


def from_batch(batch: Mapping[str, Any]) -> Acquisition:
    """Build the measurement model from a batch of the architecture contract.

    Needs ``kspace`` (fully sampled), ``masked_kspace``, ``mask``; ``target`` when
    present (else the magnitude/RSS of the fully-sampled image, centre-cropped to
    320 or the image), ``sens`` optional for multi-coil data.
    """
    for key in ("kspace", "masked_kspace", "mask"):
        if key not in batch:
            raise KeyError(f"attack: the batch has no {key!r} (keys: {sorted(batch)})")
    k = batch["kspace"]
    if not k.is_complex() or k.dim() not in (3, 4):
        raise ValueError(f"attack: batch['kspace'] must be complex (B, H, W) or (B, C, H, W), got "
                         f"{k.dtype} {tuple(k.shape)}")
    x = ifft2c(k)
    if k.dim() == 4:
        sens = batch.get("sens")
        if sens is None:
            sens = estimate_sens(x)
            rho = rss(x).to(x.dtype)
        else:
            if sens.shape != k.shape:
                raise ValueError(f"attack: batch['sens'] {tuple(sens.shape)} must match kspace {tuple(k.shape)}")
            rho = (sens.conj() * x).sum(-3) / sens.abs().pow(2).sum(-3).clamp_min(1e-12)
        carrier = sens * _phase(rho).unsqueeze(1)
        full_mag = rss(x)
    else:
        carrier = _phase(x)
        full_mag = x.abs()
    target = batch.get("target")
    if target is None or target.numel() == 0:
        H, W = full_mag.shape[-2:]
        target = center_crop(full_mag, (min(320, H), min(320, W)))
    return Acquisition(masked_kspace=batch["masked_kspace"], mask=batch["mask"].to(x.real.dtype),
                       carrier=carrier, zero_filled=ifft2c(batch["masked_kspace"]),
                       targets=target.float().contiguous())
