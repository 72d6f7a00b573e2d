"""Data loaders for training: resumable mid-epoch, deterministic per epoch.

``make_loader`` wraps any map-style dataset of slices (yielding fastfn sample dicts)
and any sampler into a DataLoader whose batch order is a pure function of
(seed, epoch): the trainer tells its ``ResumableBatchSampler`` which epoch and batch
it is at, so a resumed run sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``seed + epoch`` (``set_epoch``), or
    ``range(n)`` in order when ``shuffle`` is False."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of ``sampler``'s indices; ``set_position(epoch, k)`` makes the next
    iteration that epoch's order (``sampler.set_epoch``) starting at batch ``k``."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        batches = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        start, self.start = self.start, 0
        return iter(batches[start:])

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def make_loader(dataset: Dataset, batch_size: int, *, sampler: Sampler[int] | None = None,
                shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                collate_fn: Callable[[Sequence[Any]], Any] | None = None,
                drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` with a ``ResumableBatchSampler``.

    sampler: e.g. fastfn.data's volume-aware distributed sampler (needs
    ``set_epoch``); default an ``EpochShuffleSampler(len(dataset), seed, shuffle)``.
    The loader's own generator (reseeded per iteration from ``seed``) seeds worker
    processes, so the global RNG is not consumed by creating iterators.
    """
    sampler = sampler if sampler is not None else EpochShuffleSampler(len(dataset), seed, shuffle)
    return DataLoader(dataset, batch_sampler=ResumableBatchSampler(sampler, batch_size, drop_last),
                      num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)
