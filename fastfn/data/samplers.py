"""A distributed sampler that keeps each volume's slices on one rank.

Volume-level metrics (SSIM/PSNR over a volume) need all slices of a volume on one
rank, and DDP needs every rank to run the same number of steps: a rank with fewer
batches leaves the others waiting in an all-reduce forever. This sampler assigns
whole volumes to ranks, balancing slice counts greedily, and pads every rank's
list to the longest one by repeating its own indices (padded slices are
duplicates; evaluation code should deduplicate by (fname, slice)).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["VolumeDistributedSampler"]


class VolumeDistributedSampler(Sampler[int]):
    """Whole volumes per rank, the same number of indices on every rank.

    Args:
        dataset: a :class:`fastfn.data.SliceDataset` (anything with ``volumes()``) or a
            mapping ``{volume name: [dataset indices]}``.
        num_replicas, rank: default from ``torch.distributed`` when initialised, else 1 / 0.
        shuffle: shuffle the volume order and the slices within each rank, differently
            per epoch (call :meth:`set_epoch`) but identically on every rank.
        seed: base seed of the shuffle.
        batch_size: if given, every rank's length is also rounded up to a multiple of
            it, so that ``drop_last`` loaders agree too.
    """

    def __init__(self, dataset: Union[Mapping[str, Sequence[int]], object],
                 num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, batch_size: Optional[int] = None):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"VolumeDistributedSampler: rank {rank} not in [0, {num_replicas})")
        groups = dataset if isinstance(dataset, Mapping) else dataset.volumes()
        self.volumes: Dict[str, List[int]] = {str(k): list(v) for k, v in sorted(groups.items()) if len(v)}
        if not self.volumes:
            raise ValueError("VolumeDistributedSampler: the dataset has no slices")
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.batch_size = shuffle, seed, batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _assignment(self) -> List[List[int]]:
        """Every rank's (unpadded) index list for the current epoch."""
        names = list(self.volumes)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            names = [names[i] for i in torch.randperm(len(names), generator=g).tolist()]
        # Largest volumes first onto the least-loaded rank (stable in the shuffled order).
        order = sorted(names, key=lambda n: -len(self.volumes[n]))
        per_rank: List[List[int]] = [[] for _ in range(self.num_replicas)]
        for name in order:
            r = min(range(self.num_replicas), key=lambda i: (len(per_rank[i]), i))
            per_rank[r].extend(self.volumes[name])
        if self.shuffle:
            per_rank = [[idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
                        for idx in per_rank]
        return per_rank

    def _padded_length(self, per_rank: List[List[int]]) -> int:
        n = max(len(idx) for idx in per_rank)
        if self.batch_size:
            n = -(-n // self.batch_size) * self.batch_size
        return n

    def __iter__(self) -> Iterator[int]:
        per_rank = self._assignment()
        n = self._padded_length(per_rank)
        mine = per_rank[self.rank]
        if not mine:  # more ranks than volumes: repeat another rank's slices
            mine = per_rank[self.rank % len([p for p in per_rank if p])]
        padded = [mine[i % len(mine)] for i in range(n)]
        return iter(padded)

    def __len__(self) -> int:
        return self._padded_length(self._assignment())
