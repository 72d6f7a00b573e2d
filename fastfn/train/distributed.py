"""Distributed data parallel setup from the torchrun environment.

Under ``torchrun --nproc_per_node N`` the variables RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT are set; ``init_distributed`` then joins the process
group (NCCL on CUDA, gloo on CPU) and pins the process to its local GPU. Without
them it returns a single-process ``DistInfo`` and touches nothing.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, on ``device``."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files (checkpoints, logs, panels)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device a ``--device`` / ``device:`` setting names, for the process of ``local_rank``.

    - ``"auto"``: ``cuda:<local_rank>`` when CUDA is available, else ``cpu``;
    - ``"cuda"`` (no index): ``cuda:<local_rank>``, so under torchrun (which sets
      LOCAL_RANK, passed here by ``init_distributed``) each process takes its own GPU;
    - ``"cuda:N"``, ``"cpu"`` and any other torch device string: that device as given.

    Raises ValueError for a CUDA device when CUDA is not available (and torch's
    RuntimeError for a string that names no device).
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Join the process group described by the torchrun environment, if any.

    backend: None picks ``nccl`` for CUDA devices and ``gloo`` otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, dev)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ValueError(f"WORLD_SIZE={world_size} but environment variable {var} is unset "
                             f"(launch with torchrun)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup() -> None:
    """Leave the process group (no-op when not distributed).

    On a normal exit every rank waits at a barrier first: a rank that tears its gloo
    pairs down while a peer is still busy (rank 0 writing the last checkpoint) can abort
    at exit with "terminate called without an active exception". While an exception
    propagates (cleanup runs in ``finally`` blocks) there is no barrier: the peers may be
    blocked in a collective this rank will never join, and the barrier would hang.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if sys.exc_info()[0] is None:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP-wrap ``model`` (already on ``info.device``) when running distributed."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside a DDP (or DataParallel) wrapper, else ``model`` itself.

    Only those wrappers are unwrapped: a model that merely has a submodule called
    ``module`` (``fastfn.models.wrap`` keeps the user's network there) is returned as is.
    """
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return model.module
    return model


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (small, picklable) in rank order; ``[obj]`` when single-process."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging the loss)."""
    if not info.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / info.world_size
