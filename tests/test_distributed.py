"""DDP: two CPU processes (gloo, localhost) agree with one process on the same global batch."""
from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Sampler

from fastfn.train import checkpoint as ckpt
from fastfn.train.config import TrainConfig
from fastfn.train.data import make_loader
from fastfn.train.distributed import DistInfo, init_distributed, cleanup
from fastfn.train.trainer import Trainer, seed_everything
from test_train_support import ToyRecon, ToySlices, collate, one_thread  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

GLOBAL_BATCH = 4
STEPS = 3


class GlobalBatchShard(Sampler[int]):
    """In-order global batches of ``global_batch``; rank r takes the r-th contiguous part
    of each (so the union over ranks of step s is the single process's batch s)."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int) -> None:
        self.n, self.gb, self.rank, self.world = n, global_batch, rank, world

    def __iter__(self):
        per = self.gb // self.world
        for start in range(0, self.n - self.gb + 1, self.gb):
            yield from range(start + self.rank * per, start + (self.rank + 1) * per)

    def __len__(self) -> int:
        return (self.n // self.gb) * (self.gb // self.world)


def _cfg() -> TrainConfig:
    return TrainConfig().replace({"steps": STEPS, "val_every": STEPS, "panels": 0, "progress": False,
                                  "tensorboard": False, "device": "cpu", "grad_clip": 0.5,
                                  "optim.name": "adam", "optim.lr": 1e-2})


def _run(rank: int, world: int, out: str):
    """One process's training: ToyRecon (no dropout), its shard of every global batch,
    validation over volume-aware shards (fastfn.data's sampler)."""
    from fastfn.data import VolumeDistributedSampler
    if world > 1:
        info = init_distributed("cpu")
    else:
        info = DistInfo(device=torch.device("cpu"))
    train_ds = ToySlices(volumes=3, slices=4, seed=1)
    val_ds = ToySlices(volumes=3, slices=2, seed=2, prefix="val")
    vols = {}
    for i, item in enumerate(val_ds.items):
        vols.setdefault(item["fname"], []).append(i)
    train = make_loader(train_ds, GLOBAL_BATCH // world, collate_fn=collate,
                        sampler=GlobalBatchShard(len(train_ds), GLOBAL_BATCH, info.rank, world))
    val = make_loader(val_ds, 1, collate_fn=collate,
                      sampler=VolumeDistributedSampler(vols, world, info.rank, shuffle=False))
    seed_everything(0)
    trainer = Trainer(ToyRecon(drop_prob=0.0), _cfg(), train, val, dist=info,
                      out_dir=os.path.join(out, f"rank{info.rank}"), model_config={"chans": 4})
    result = trainer.fit()
    trainer.close()
    if world > 1:
        cleanup()
    return result


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")})
    torch.set_num_threads(1)
    _run(rank, world, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    single = _run(0, 1, str(tmp_path / "single"))
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail("DDP processes did not finish within 240 s")
    # only rank 0 wrote anything
    assert not (tmp_path / "ddp" / "rank1").exists()
    a = ckpt.load_checkpoint(tmp_path / "single" / "rank0" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "ddp" / "rank0" / "last.pt")
    assert a["step"] == b["step"] == STEPS
    moved = False
    for k, w in a["model"].items():
        torch.testing.assert_close(b["model"][k], w, rtol=1e-5, atol=1e-6, msg=k)
        moved |= not torch.equal(w, ToyRecon(drop_prob=0.0).state_dict()[k])
    assert moved
    # validation gathered over both ranks' volumes equals the single-process one
    for key in ("psnr", "ssim", "nmse", "zf_psnr"):
        assert b["metrics"][key] == pytest.approx(single[key], rel=1e-5), key
