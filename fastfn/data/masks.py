"""Cartesian column sampling masks with fastMRI's exact semantics.

For the same seed, k-space width and parameters every mask function here returns
the same columns as the fastMRI class of the same name (``fastmri.data.subsample``),
because it consumes the same numpy ``RandomState`` in the same order:

1. the function owns one ``np.random.RandomState(seed)``; a per-call ``seed``
   (an int or a tuple of ints; fastMRI uses ``tuple(map(ord, fname))`` so every
   slice of a volume gets the same mask) reseeds it for that call only and the
   previous state is restored afterwards;
2. ``rng.randint(len(pairs))`` picks the (centre fraction, acceleration) pair
   (``allow_any_combination``: ``rng.choice`` of each list instead);
3. the kind-specific draw (uniform columns, or a random offset).

Masks are returned as float32 tensors of shape ``(1, W)`` (1 = sampled column),
broadcasting over the k-space rows, together with the number of fully sampled
centre columns. Called with fastMRI's real k-space layout ``(..., H, W, 2)``, a
function reads W from ``shape[-2]`` and returns fastMRI's mask shape instead (ones
with W at dim -2, e.g. ``(1, 1, W, 1)``), so code written for fastMRI's mask
functions gets the same mask from these. :func:`parse_mask_spec` reads the CLI form
``"random:4x@0.08,8x@0.04"``.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

Seed = Optional[Union[int, Tuple[int, ...]]]

__all__ = [
    "MaskFunc", "RandomMaskFunc", "EquispacedMaskFunc", "EquispacedFractionMaskFunc",
    "MagicMaskFunc", "MagicFractionMaskFunc", "MASK_TYPES", "parse_mask_spec", "volume_seed",
]


def volume_seed(fname: str) -> Tuple[int, ...]:
    """fastMRI's per-volume mask seed: the code points of the file name (no folder)."""
    return tuple(map(ord, fname))


def _is_fastmri_layout(shape: Union[int, Sequence[int]]) -> bool:
    """Whether ``shape`` is fastMRI's real k-space layout (..., H, W, 2)."""
    return not isinstance(shape, (int, np.integer)) and len(shape) >= 3 and int(shape[-1]) == 2


@contextlib.contextmanager
def _temporary_seed(rng: np.random.RandomState, seed: Seed) -> Iterator[None]:
    if seed is None:
        yield
        return
    state = rng.get_state()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.set_state(state)


class MaskFunc:
    """Base class: a fully sampled centre plus a kind-specific outer pattern.

    Args:
        center_fractions: fraction of columns sampled densely at the centre, one per
            acceleration.
        accelerations: undersampling factors, paired with ``center_fractions``; each
            call picks one pair uniformly at random.
        allow_any_combination: pick the fraction and the acceleration independently.
        seed: seed of the function's own random state (used by unseeded calls).
    """

    kind = "base"

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float],
                 allow_any_combination: bool = False, seed: Optional[int] = None):
        center_fractions = list(center_fractions)
        accelerations = list(accelerations)
        if not center_fractions or not accelerations:
            raise ValueError(f"{type(self).__name__}: center_fractions and accelerations "
                             "must not be empty")
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError(
                f"{type(self).__name__}: {len(center_fractions)} center_fractions but "
                f"{len(accelerations)} accelerations; they are paired unless "
                "allow_any_combination=True")
        for f in center_fractions:
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"{type(self).__name__}: center fraction {f} is not in [0, 1]")
        for a in accelerations:
            if not a >= 1:
                raise ValueError(f"{type(self).__name__}: acceleration {a} is below 1")
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def __repr__(self) -> str:
        pairs = ",".join(f"{a:g}x@{f:g}" for a, f in zip(self.accelerations, self.center_fractions))
        return f"{type(self).__name__}('{self.kind}:{pairs}')"

    def __call__(self, shape: Union[int, Sequence[int]], offset: Optional[int] = None,
                 seed: Seed = None) -> Tuple[torch.Tensor, int]:
        """Sample a mask.

        Args:
            shape: one of
                - the width W itself;
                - fastfn's complex k-space shape ``(..., H, W)``: the mask runs over the
                  last dim;
                - fastMRI's real k-space shape ``(..., H, W, 2)`` (at least three dims,
                  the last one 2, as ``fastmri.data.subsample`` takes it): W is
                  ``shape[-2]``. A complex k-space only two columns wide looks the same;
                  pass its width as an int.
            offset: first sampled outer column for the equispaced kinds (random if None).
            seed: reseeds the random state for this call only (fastMRI: ``volume_seed(fname)``).

        Returns:
            ``(mask, num_low_frequencies)``: the float32 mask and an int. The mask is
            ``(1, W)`` for a width or a complex shape, and fastMRI's shape for its real
            layout: ``len(shape)`` dims of size 1 but W at dim -2 (``(1, 1, W, 1)`` for
            ``(1, H, W, 2)``).
        """
        fastmri_layout = _is_fastmri_layout(shape)
        if isinstance(shape, (int, np.integer)):
            num_cols = int(shape)
        else:
            num_cols = int(shape[-2] if fastmri_layout else shape[-1])
        if num_cols < 1:
            raise ValueError(f"{type(self).__name__}: k-space width must be >= 1, got {num_cols}")
        with _temporary_seed(self.rng, seed):
            center, outer, num_low = self._sample(num_cols, offset)
        mask = torch.from_numpy(np.maximum(center, outer.astype(np.float32)).astype(np.float32))
        if fastmri_layout:
            mask_shape = [1] * len(shape)
            mask_shape[-2] = num_cols
            return mask.reshape(mask_shape), int(num_low)
        return mask.reshape(1, num_cols), int(num_low)

    # -- pieces shared by the kinds (fastMRI's order of RNG use) ----------------------
    def _choose(self) -> Tuple[float, float]:
        if self.allow_any_combination:
            return self.rng.choice(self.center_fractions), self.rng.choice(self.accelerations)
        i = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[i], self.accelerations[i]

    @staticmethod
    def _center(num_cols: int, num_low: int) -> np.ndarray:
        mask = np.zeros(num_cols, dtype=np.float32)
        start = (num_cols - num_low + 1) // 2
        mask[start:start + num_low] = 1
        return mask

    def _sample(self, num_cols: int, offset: Optional[int]):
        fraction, acceleration = self._choose()
        num_low = round(num_cols * fraction)
        outer = self._outer(num_cols, acceleration, offset, num_low)
        return self._center(num_cols, num_low), outer, num_low

    def _outer(self, num_cols: int, acceleration: float, offset: Optional[int],
               num_low: int) -> np.ndarray:
        raise NotImplementedError


class RandomMaskFunc(MaskFunc):
    """Outer columns kept independently with probability
    ``(W / acceleration - num_low) / (W - num_low)`` (expected W / acceleration columns)."""

    kind = "random"

    def _outer(self, num_cols, acceleration, offset, num_low):
        prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
        return self.rng.uniform(size=num_cols) < prob


class EquispacedMaskFunc(MaskFunc):
    """Every ``acceleration``-th column from a (random) offset, plus the centre: the
    true acceleration is below the nominal one."""

    kind = "equispaced"

    def _outer(self, num_cols, acceleration, offset, num_low):
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        mask = np.zeros(num_cols, dtype=np.float32)
        mask[offset::acceleration] = 1
        return mask


class EquispacedFractionMaskFunc(MaskFunc):
    """Equispaced with the spacing adjusted for the centre so that about W / acceleration
    columns are sampled in all (fastMRI's ``EquispacedMaskFractionFunc``; the rounded
    positions are not always exactly equispaced, as in the public multi-coil data)."""

    kind = "equispaced_fraction"

    def _outer(self, num_cols, acceleration, offset, num_low):
        adjusted = (acceleration * (num_low - num_cols)) / (num_low * acceleration - num_cols)
        if offset is None:
            offset = self.rng.randint(0, high=round(adjusted))
        mask = np.zeros(num_cols, dtype=np.float32)
        positions = np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.uint64)
        mask[positions] = 1
        return mask


class MagicMaskFunc(MaskFunc):
    """Defazio's offset sampling (arXiv:1912.01101): equispaced lines whose positive and
    negative halves of k-space are offset against each other, so that conjugate
    symmetry fills the gaps."""

    kind = "magic"

    def _outer(self, num_cols, acceleration, offset, num_low):
        acceleration = int(acceleration)
        if offset is None:
            offset = self.rng.randint(0, high=acceleration)
        if offset % 2 == 0:
            offset_pos, offset_neg = offset + 1, offset + 2
        else:
            offset_pos, offset_neg = offset + 2, offset - 1
        pos_len = (num_cols + 1) // 2
        positive = np.zeros(pos_len, dtype=np.float32)
        negative = np.zeros(num_cols - pos_len, dtype=np.float32)
        positive[offset_pos::acceleration] = 1
        negative[offset_neg::acceleration] = 1
        # Halves in FFT order (positive frequencies first), then centred.
        return np.fft.fftshift(np.concatenate([positive, negative[::-1]]))


class MagicFractionMaskFunc(MagicMaskFunc):
    """Offset sampling with the spacing adjusted for the centre, aiming at
    round(W / acceleration) columns; outer lines that fall inside the centre make it a
    few fewer (fastMRI's ``MagicMaskFractionFunc``, same behaviour)."""

    kind = "magic_fraction"

    def _sample(self, num_cols, offset):
        fraction, acceleration = self._choose()
        target = round(num_cols / acceleration)
        num_low = max(min(round(num_cols * fraction), target), 1)
        remaining = target - num_low
        if remaining <= 0:
            raise ValueError(f"magic_fraction: acceleration {acceleration:g} with centre fraction "
                             f"{fraction:g} leaves no outer columns at width {num_cols}")
        adjusted = round(num_cols / remaining)
        return self._center(num_cols, num_low), self._outer(num_cols, adjusted, offset, num_low), num_low


MASK_TYPES = {cls.kind: cls for cls in (RandomMaskFunc, EquispacedMaskFunc,
                                        EquispacedFractionMaskFunc, MagicMaskFunc,
                                        MagicFractionMaskFunc)}

_PAIR = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*x\s*@\s*([0-9]*\.?[0-9]+)\s*$")


def parse_mask_spec(spec: str, seed: Optional[int] = None) -> MaskFunc:
    """Build a mask function from its text form ``KIND:ACCx@FRACTION[,ACCx@FRACTION...]``.

    ``KIND`` is one of ``random``, ``equispaced``, ``equispaced_fraction``, ``magic``,
    ``magic_fraction``; e.g. ``"random:4x@0.08,8x@0.04"`` is fastMRI's knee setting.
    Integral accelerations are kept as ints (as fastMRI's configs give them).
    """
    kind, sep, pairs = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in MASK_TYPES:
        raise ValueError(f"mask spec {spec!r}: expected KIND:ACCx@FRACTION[,...] with KIND one "
                         f"of {sorted(MASK_TYPES)}, e.g. 'random:4x@0.08,8x@0.04'")
    accelerations, fractions = [], []
    for item in pairs.split(","):
        m = _PAIR.match(item)
        if m is None:
            raise ValueError(f"mask spec {spec!r}: cannot read {item.strip()!r}; expected "
                             "ACCx@FRACTION such as 4x@0.08")
        acc = float(m.group(1))
        accelerations.append(int(acc) if acc.is_integer() else acc)
        fractions.append(float(m.group(2)))
    return MASK_TYPES[kind](fractions, accelerations, seed=seed)


def split_mask_specs(text: str) -> list[str]:
    """``"random:4x@0.08,random:8x@0.04"`` -> ``["random:4x@0.08", "random:8x@0.04"]``.

    A new setting starts at each ``KIND:``; pairs without a kind
    (``"random:4x@0.08,8x@0.04"``) stay together as one mixed mask function.
    """
    groups: list[list[str]] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if re.match(r"^[A-Za-z_]+\s*:", piece):
            groups.append([piece])
        elif groups:
            groups[-1].append(piece)
        else:
            raise ValueError(f"--masks {text!r}: {piece!r} has no mask kind; write e.g. "
                             f"random:4x@0.08,random:8x@0.04")
    if not groups:
        raise ValueError(f"--masks: no mask setting in {text!r}; e.g. random:4x@0.08,random:8x@0.04")
    return [",".join(g) for g in groups]
