"""The reconstructor interface every model implements, and `wrap` for a user's own module.

A reconstructor maps masked k-space and its column mask to a real magnitude image:

    masked_kspace  complex64/128  (B, H, W) single-coil or (B, C, H, W) multi-coil
    mask           float32        (B, 1, W) (multi-coil may also pass (B, 1, 1, W))
    crop_size      (h, w) or None
    -> image       real           (B, h, w), (h, w) = crop_size or (H, W)

The trainer, the evaluation and the attack call models only this way, and the
attack differentiates the output with respect to ``masked_kspace``, so every
implementation stays differentiable in it (no ``.detach()``, no in-place edits
of the input).
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from fastfn.data.transforms import as_hw, center_crop, rss, zero_filled_magnitude
from fastfn.ops import ifft2c

CropSize = Optional[Union[int, Sequence[int]]]


class Reconstructor(nn.Module):
    """Base class of every fastfn model: masked k-space + mask in, magnitude image out.

    Subclasses set ``multicoil`` (True: expects ``(B, C, H, W)`` k-space) and
    implement :meth:`forward`. ``model_name`` and ``config`` are set by
    :func:`fastfn.models.build_model` so checkpoints can rebuild the model.
    """

    multicoil: bool = False
    model_name: Optional[str] = None
    config: object = None

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                crop_size: CropSize = None) -> torch.Tensor:  # pragma: no cover - abstract
        """masked_kspace: complex (B, H, W) or (B, C, H, W); mask: float (B, 1, W).

        Returns the magnitude image (B, h, w), (h, w) = crop_size or (H, W).
        Differentiable with respect to masked_kspace.
        """
        raise NotImplementedError

    def check_inputs(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                     multicoil: Optional[bool] = None) -> None:
        """Raise ValueError naming the argument when the inputs break the interface."""
        multicoil = self.multicoil if multicoil is None else multicoil
        name = type(self).__name__
        if not masked_kspace.is_complex():
            raise ValueError(f"{name}: masked_kspace must be complex (complex64/128), "
                             f"got {masked_kspace.dtype} of shape {tuple(masked_kspace.shape)}")
        want = 4 if multicoil else 3
        if masked_kspace.dim() != want:
            kind = "multi-coil (B, C, H, W)" if multicoil else "single-coil (B, H, W)"
            raise ValueError(f"{name}: masked_kspace must be {kind}, got shape "
                             f"{tuple(masked_kspace.shape)}"
                             + ("" if multicoil else " (set multicoil=True for coil data)"))
        B, W = masked_kspace.shape[0], masked_kspace.shape[-1]
        ok = (mask.dim() in (3, 4) and mask.shape[0] in (1, B) and mask.shape[-1] == W
              and all(s == 1 for s in mask.shape[1:-1]))
        if not ok:
            raise ValueError(f"{name}: mask must have shape (B, 1, W) = ({B}, 1, {W}) "
                             f"(or (B, 1, 1, W) for multi-coil), got {tuple(mask.shape)}")
        if mask.is_complex():
            raise ValueError(f"{name}: mask must be real (float32), got {mask.dtype}")


def _instance_stats(x: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean and (unbiased) std over the last two dims, shaped to broadcast."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return mean, std + eps


class ImageDomainReconstructor(Reconstructor):
    """Runs an image-to-image module on the zero-filled image (see :func:`wrap`).

    input="magnitude": zero-filled magnitude (RSS for multi-coil), centre-cropped to
    crop_size first, optionally normalised per image ((x - mean) / std, clamped to
    +-clamp), given to ``module`` as real (B, 1, h, w); the output (B, 1, h, w) or
    (B, h, w) is de-normalised (x * std + mean).

    input="complex" (single-coil only): the full-size complex zero-filled image as
    real/imag channels (B, 2, H, W), optionally divided by its per-image std (a
    scale only, so the phase is kept); the output is (B, 2, H, W) complex channels
    (its magnitude is taken) or a real (B, 1, H, W) / (B, H, W) magnitude, rescaled
    and centre-cropped afterwards.
    """

    def __init__(self, module: nn.Module, input: Literal["magnitude", "complex"] = "magnitude",
                 multicoil: bool = False, normalize: bool = True,
                 clamp: Optional[float] = 6.0, eps: float = 1e-11) -> None:
        super().__init__()
        if input not in ("magnitude", "complex"):
            raise ValueError(f"wrap: input must be 'magnitude' or 'complex', got {input!r}")
        if input == "complex" and multicoil:
            raise ValueError("wrap: input='complex' needs single-coil data (multi-coil k-space "
                             "has no coil-combined complex image without sensitivity maps); "
                             "use input='magnitude' (RSS) for multi-coil")
        self.module = module
        self.input = input
        self.multicoil = multicoil
        self.normalize = normalize
        self.clamp = clamp
        self.eps = eps

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                crop_size: CropSize = None) -> torch.Tensor:
        self.check_inputs(masked_kspace, mask)
        if self.input == "magnitude":
            return self._forward_magnitude(masked_kspace, crop_size)
        return self._forward_complex(masked_kspace, crop_size)

    def _forward_magnitude(self, masked_kspace: torch.Tensor, crop_size: CropSize) -> torch.Tensor:
        image = center_crop(zero_filled_magnitude(masked_kspace), crop_size)   # (B, h, w)
        if self.normalize:
            mean, std = _instance_stats(image, self.eps)
            image = (image - mean) / std
            if self.clamp is not None:
                image = image.clamp(-self.clamp, self.clamp)
        out = self.module(image.unsqueeze(1)).to(image.dtype)   # autocast may return half
        if out.dim() == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if out.shape != image.shape:
            raise ValueError(f"{type(self.module).__name__} returned {tuple(out.shape)}, "
                             f"expected (B, 1, h, w) or (B, h, w) = {tuple(image.shape)}")
        return out * std + mean if self.normalize else out

    def _forward_complex(self, masked_kspace: torch.Tensor, crop_size: CropSize) -> torch.Tensor:
        image = ifft2c(masked_kspace)                                           # (B, H, W)
        scale = None
        if self.normalize:
            scale = image.abs().std(dim=(-2, -1), keepdim=True) + self.eps
            image = image / scale
        out = self.module(torch.stack([image.real, image.imag], dim=1)).to(image.real.dtype)
        if out.dim() == 4 and out.shape[1] == 2:
            out = rss(out, dim=1)
        elif out.dim() == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if out.shape != image.shape:
            raise ValueError(f"{type(self.module).__name__} returned {tuple(out.shape)}, expected "
                             f"(B, 2, H, W), (B, 1, H, W) or (B, H, W) with (B, H, W) = "
                             f"{tuple(image.shape)}")
        if scale is not None:
            out = out * scale
        return center_crop(out, crop_size)


def wrap(module: nn.Module, input: Literal["magnitude", "complex"] = "magnitude", *,
         multicoil: bool = False, normalize: bool = True,
         clamp: Optional[float] = 6.0) -> Reconstructor:
    """Wrap an image-domain ``nn.Module`` into the :class:`Reconstructor` interface.

    The wrapper computes the zero-filled image ``ifft2c(masked_kspace)`` (RSS over
    coils for multi-coil), feeds it to ``module`` and returns a magnitude
    ``(B, h, w)``; gradients flow back to ``masked_kspace``.

    Args:
        module: image-to-image network.
            input="magnitude": real (B, 1, h, w) in (already centre-cropped), (B, 1, h, w)
            or (B, h, w) out.
            input="complex" (single-coil): real/imag channels (B, 2, H, W) of the
            full-size image in; (B, 2, H, W) complex channels or a (B, 1, H, W) /
            (B, H, W) magnitude out; cropped after the module.
        input: which zero-filled image the module takes (see above).
        multicoil: whether the model takes multi-coil k-space (B, C, H, W).
        normalize: magnitude: per-image (x - mean) / std in and x * std + mean out
            (fastMRI's U-Net transform); complex: divide by, then multiply with, the
            per-image std of |x|.
        clamp: magnitude input clamp after normalisation (fastMRI: 6); None for none.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from fastfn.models import wrap
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
        >>> model = wrap(net, input="magnitude")
        >>> k = torch.randn(2, 64, 48, dtype=torch.complex64)
        >>> mask = torch.ones(2, 1, 48)
        >>> model(k * mask, mask, crop_size=(32, 32)).shape
        torch.Size([2, 32, 32])
    """
    return ImageDomainReconstructor(module, input=input, multicoil=multicoil,
                                    normalize=normalize, clamp=clamp)
