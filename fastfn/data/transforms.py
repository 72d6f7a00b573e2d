"""Per-slice transforms: masked k-space sample dicts and the U-Net magnitude normalisation.

:class:`KspaceTransform` turns one slice read by :class:`fastfn.data.SliceDataset`
into the sample dict of the batch contract (docs/ARCHITECTURE.md); :func:`collate`
stacks those. :class:`UnetNormalize` is fastMRI's U-Net input/target
normalisation (per-image mean/std, clamp at +-6) with its inverse.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fastfn.data.masks import MaskFunc, volume_seed
from fastfn.ops import ifft2c

__all__ = ["as_hw", "crop_offsets", "center_crop", "zero_filled_magnitude", "rss", "complex_abs_rss", "normalize", "normalize_instance",
           "denormalize", "UnetNormalize", "KspaceTransform", "apply_mask"]

CropSize = Union[int, Tuple[int, int]]


def as_hw(size: CropSize | Sequence[int] | None) -> Optional[Tuple[int, int]]:
    """A crop size given as an int or (h, w) as a pair of ints; None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    hw = tuple(int(s) for s in size)
    if len(hw) != 2:
        raise ValueError(f"crop size must be an int or (h, w), got {size!r}")
    return hw  # type: ignore[return-value]


def crop_offsets(full: Tuple[int, int], crop: Tuple[int, int]) -> Tuple[int, int]:
    """Top-left corner (top, left) of fastMRI's centre crop of size ``crop`` in ``full``:
    ``((H - h) // 2, (W - w) // 2)``."""
    return (full[0] - crop[0]) // 2, (full[1] - crop[1]) // 2


def center_crop(x: Any, shape: CropSize | Sequence[int] | None) -> Any:
    """Centre crop of the last two dims of a tensor or array (..., H, W) to ``shape``
    (an int or (h, w); None returns ``x``), at fastMRI's offsets (:func:`crop_offsets`).

    Raises ValueError when the crop is empty or larger than the image.
    """
    hw = as_hw(shape)
    if hw is None:
        return x
    h, w = hw
    H, W = x.shape[-2:]
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"center_crop: cannot crop (..., {H}, {W}) to ({h}, {w})")
    top, left = crop_offsets((H, W), (h, w))
    return x[..., top:top + h, left:left + w]


def rss(x: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root sum of squares of |x| over ``dim`` (the coil dim), real or complex:
    (B, C, H, W) -> (B, H, W) real.

    ``vector_norm`` rather than ``sqrt(sum(|x|^2))``: its gradient is 0, not NaN, where
    every coil is exactly 0 (an empty slice, zero padding), and the attack and the
    models differentiate through it.
    """
    return torch.linalg.vector_norm(x, dim=dim)


def complex_abs_rss(image: torch.Tensor, multicoil: bool) -> torch.Tensor:
    """Magnitude of a complex image (..., H, W); multi-coil: root-sum-of-squares over the
    coil dim of (..., C, H, W)."""
    return rss(image, dim=-3) if multicoil else image.abs()


def zero_filled_magnitude(masked_kspace: torch.Tensor, crop: CropSize | None = None,
                          multicoil: Optional[bool] = None) -> torch.Tensor:
    """The zero-filled image's magnitude (RSS over coils), centre-cropped to ``crop``.

    masked_kspace: complex (B, H, W) single-coil or (B, C, H, W) multi-coil (by default
    multi-coil exactly when it has four dims; pass ``multicoil`` for unbatched slices).
    Returns real (B, h, w), (h, w) = crop or (H, W).
    """
    multicoil = masked_kspace.dim() == 4 if multicoil is None else multicoil
    return center_crop(complex_abs_rss(ifft2c(masked_kspace), multicoil), crop)


def normalize(x: torch.Tensor, mean, std, eps: float = 0.0) -> torch.Tensor:
    """(x - mean) / (std + eps)."""
    return (x - mean) / (std + eps)


def normalize_instance(x: torch.Tensor, eps: float = 0.0
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise by the tensor's own mean and (unbiased) std: returns (y, mean, std)."""
    mean, std = x.mean(), x.std()
    return normalize(x, mean, std, eps), mean, std


def denormalize(y: torch.Tensor, mean, std, eps: float = 0.0) -> torch.Tensor:
    """Inverse of :func:`normalize`: y * (std + eps) + mean. ``mean``/``std`` broadcast
    (batched: shape (B, 1, 1))."""
    return y * (std + eps) + mean


class UnetNormalize:
    """fastMRI's U-Net normalisation of a magnitude image and its target.

    ``image`` is normalised with its own mean/std (eps 1e-11) and clamped to
    [-clamp, clamp]; the target uses the image's statistics and the same clamp.
    :meth:`inverse` maps a network output back to image intensities.
    """

    def __init__(self, clamp: Optional[float] = 6.0, eps: float = 1e-11):
        self.clamp = clamp
        self.eps = eps

    def __call__(self, image: torch.Tensor, target: Optional[torch.Tensor] = None
                 ) -> Dict[str, torch.Tensor]:
        """image, target: float (h, w). Returns ``image``, ``target`` (or None),
        ``mean``, ``std`` (0-dim tensors)."""
        y, mean, std = normalize_instance(image, self.eps)
        t = None if target is None or target.numel() == 0 else normalize(target, mean, std, self.eps)
        if self.clamp is not None:
            y = y.clamp(-self.clamp, self.clamp)
            t = None if t is None else t.clamp(-self.clamp, self.clamp)
        return {"image": y, "target": t, "mean": mean, "std": std}

    def inverse(self, y: torch.Tensor, mean, std) -> torch.Tensor:
        """Undo the normalisation (exact where the clamp did not act)."""
        return denormalize(y, mean, std, self.eps)


def apply_mask(kspace: torch.Tensor, mask_func: MaskFunc, seed=None, offset: Optional[int] = None,
               padding: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Sample a column mask for ``kspace`` (..., H, W) and apply it.

    Columns outside the acquired range ``[padding[0], padding[1])`` (zero padding of
    the file) are never marked sampled. Returns ``(masked_kspace, mask (1, W) float32,
    num_low_frequencies)``.
    """
    mask, num_low = mask_func(kspace.shape, offset=offset, seed=seed)
    if padding is not None:
        mask = mask.clone()  # a mask function may hand out a shared tensor
        mask[..., :padding[0]] = 0
        mask[..., padding[1]:] = 0
    return kspace * mask + 0.0, mask, num_low


class KspaceTransform:
    """One slice -> the sample dict of the batch contract.

    Args:
        mask_func: column mask function; None uses the file's own ``mask`` (fastMRI
            test/challenge files) or, failing that, full sampling.
        crop_size: target/zero-filled size (int or (h, w)); default: the file's
            ``recon_size``, else the target's size, else min(320, H) x min(320, W);
            clipped to the image as fastMRI's U-Net transform does.
        use_seed: seed the mask from the file name (same mask for every slice of a
            volume, fastMRI's behaviour); False: a fresh mask per call.
        use_padding: never sample the zero-padded columns given by the header.

    Called as ``transform(kspace, mask, target, attrs, fname, slice_num)`` (fastMRI's
    order); ``attrs`` may carry ``sens`` (complex (C, H, W)) and ``labels`` (uint8
    (H, W)), which become the optional sample keys. Output (per sample, unbatched):
    ``kspace``/``masked_kspace`` complex64 (H, W) or (C, H, W), ``mask`` float32
    (1, W), ``target``/``zero_filled`` float32 (h, w) (target (0, 0) when the file
    has none), ``max`` float32 (), ``fname`` str, ``slice`` int64 (),
    ``num_low_frequencies`` int64 (), optional ``sens``, ``labels``.
    """

    def __init__(self, mask_func: Optional[MaskFunc] = None, crop_size: Optional[CropSize] = None,
                 use_seed: bool = True, use_padding: bool = True):
        self.mask_func = mask_func
        self.crop_size = crop_size
        self.use_seed = use_seed
        self.use_padding = use_padding

    def __repr__(self) -> str:
        return (f"KspaceTransform(mask_func={self.mask_func!r}, crop_size={self.crop_size!r}, "
                f"use_seed={self.use_seed}, use_padding={self.use_padding})")

    def _crop(self, image_hw: Tuple[int, int], target: Optional[np.ndarray],
              attrs: Mapping[str, Any], fname: str) -> Tuple[int, int]:
        if self.crop_size is not None:
            h, w = as_hw(self.crop_size)
            # clipped to the k-space image below (a 320 crop of narrower images), but a
            # target cannot be cropped to more than it holds
            if target is not None and (min(h, image_hw[0]) > target.shape[-2] or min(w, image_hw[1]) > target.shape[-1]):
                raise ValueError(f"{fname}: crop_size ({h}, {w}) is larger than its target image "
                                 f"{tuple(target.shape[-2:])} (k-space image {tuple(image_hw)})")
        elif "recon_size" in attrs:
            h, w = int(attrs["recon_size"][0]), int(attrs["recon_size"][1])
        elif target is not None:
            h, w = target.shape[-2:]
        else:
            h, w = min(320, image_hw[0]), min(320, image_hw[1])
        return min(h, image_hw[0]), min(w, image_hw[1])

    def __call__(self, kspace: np.ndarray, mask: Optional[np.ndarray], target: Optional[np.ndarray],
                 attrs: Mapping[str, Any], fname: str, slice_num: int) -> Dict[str, Any]:
        k = torch.from_numpy(np.ascontiguousarray(kspace)).to(torch.complex64)
        if k.dim() not in (2, 3):
            raise ValueError(f"{fname} slice {slice_num}: kspace must be (H, W) or (C, H, W), "
                             f"got {tuple(k.shape)}")
        multicoil = k.dim() == 3
        W = k.shape[-1]
        padding = None
        if self.use_padding and "padding_left" in attrs:
            padding = (int(attrs["padding_left"]), int(attrs["padding_right"]))
        if self.mask_func is not None:
            seed = volume_seed(fname) if self.use_seed else None
            masked, m, num_low = apply_mask(k, self.mask_func, seed=seed, padding=padding)
        elif mask is not None:
            m = torch.as_tensor(np.asarray(mask), dtype=torch.float32).reshape(1, -1)
            if m.shape[-1] != W:
                raise ValueError(f"{fname}: mask has {m.shape[-1]} columns, kspace has {W}")
            masked = k * m + 0.0
            num_low = int(attrs.get("num_low_frequency", _centre_run(m[0])))
        else:
            m = torch.ones(1, W, dtype=torch.float32)
            if padding is not None:
                m[..., :padding[0]] = 0
                m[..., padding[1]:] = 0
            masked, num_low = k * m + 0.0, int(m.sum())
        crop = self._crop(tuple(k.shape[-2:]), target, attrs, fname)
        zero_filled = zero_filled_magnitude(masked, crop, multicoil)
        if target is not None:
            t = torch.from_numpy(np.ascontiguousarray(target)).to(torch.float32)
            if tuple(t.shape) != crop:
                t = center_crop(t, crop)
        else:
            t = torch.zeros(0, 0, dtype=torch.float32)
        sample = {
            "kspace": k, "masked_kspace": masked, "mask": m.to(torch.float32),
            "target": t, "zero_filled": zero_filled.to(torch.float32),
            "max": torch.tensor(float(attrs.get("max", 0.0)), dtype=torch.float32),
            "fname": fname, "slice": torch.tensor(int(slice_num), dtype=torch.int64),
            "num_low_frequencies": torch.tensor(int(num_low), dtype=torch.int64),
        }
        if attrs.get("sens") is not None:
            sample["sens"] = torch.from_numpy(np.ascontiguousarray(attrs["sens"])).to(torch.complex64)
        if attrs.get("labels") is not None:
            labels = torch.from_numpy(np.ascontiguousarray(attrs["labels"]))
            sample["labels"] = center_crop(labels, crop).to(torch.uint8)
        return sample


def _centre_run(mask_row: torch.Tensor) -> int:
    """Length of the run of sampled columns through the centre column W // 2."""
    m = mask_row.numpy() > 0
    c = m.shape[0] // 2
    if not m[c]:
        return 0
    left = c
    while left > 0 and m[left - 1]:
        left -= 1
    right = c
    while right + 1 < m.shape[0] and m[right + 1]:
        right += 1
    return right - left + 1
