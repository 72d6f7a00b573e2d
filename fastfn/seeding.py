"""Seeds derived from a base seed and the indices of a draw, and generators from them.

A draw (the features of one robust-training step, of one attacked batch, the
masks of one epoch) is seeded by a function of its own indices only, never by the
state the process reached: a resumed run, another process count or another order
of work draws exactly the same numbers.
"""
from __future__ import annotations

import torch

#: weight of the base seed in :func:`derive_seed` (a prime, so that (seed, index)
#: pairs of small values do not collide)
BASE_WEIGHT = 1_000_003
_MODULUS = 2 ** 63 - 1


def derive_seed(seed: int, *streams: tuple[int, int]) -> int:
    """``(seed * BASE_WEIGHT + sum(index * weight)) mod (2^63 - 1)``.

    streams: ``(index, weight)`` pairs, one per index the draw depends on, each
    with its own prime weight (e.g. ``(step, 7919), (rank, 104_729)``).
    """
    return (seed * BASE_WEIGHT + sum(i * w for i, w in streams)) % _MODULUS


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
