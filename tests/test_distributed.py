"""DDP: two CPU processes (gloo, localhost) agree with one process on the same global batch;
device resolution from the torchrun environment; DDP wrapping and unwrapping."""
from __future__ import annotations

import contextlib
import csv
import functools
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Sampler

from fastfn.models import wrap
from fastfn.train import checkpoint as ckpt
from fastfn.train.config import TrainConfig
from fastfn.train.data import make_loader
from fastfn.train.distributed import (DistInfo, cleanup, init_distributed, resolve_device,
                                      unwrap_model, wrap_model)
from fastfn.train.robust import combine_gradients
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


def _mirror_loss(model, batch, step):
    """A deterministic stand-in for the adversarial term, largely against the clean loss:
    L1 to the left-right mirrored target."""
    target = batch["target"]
    pred = model(batch["masked_kspace"], batch["mask"], tuple(target.shape[-2:]))
    return 0.5 * (pred - target.flip(-1)).abs().mean(), {}


_mirror_loss.combine_gradients = functools.partial(combine_gradients, project=True, ratio=0.3)


def _run(rank: int, world: int, out: str, combine: bool = False):
    """One process's training: ToyRecon (no dropout), its shard of every global batch,
    validation over volume-aware shards (fastfn.data's sampler); with ``combine`` an
    extra loss whose gradient is projected and capped (the trainer's own rank average)."""
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
                      out_dir=os.path.join(out, f"rank{info.rank}"), model_config={"chans": 4},
                      extra_loss=_mirror_loss if combine else None)
    result = trainer.fit()
    trainer.close()
    if world > 1:
        cleanup()
    return result


def _worker(rank: int, world: int, port: int, out: str, combine: bool) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")})
    torch.set_num_threads(1)
    _run(rank, world, out, combine)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("combine", [False, True], ids=["one-backward", "combined-gradients"])
def test_two_processes_match_one_process(tmp_path, combine):
    """Also with a gradient combiner (projection and cap are not linear: the ranks must
    combine the globally averaged gradients, as the single process does)."""
    single = _run(0, 1, str(tmp_path / "single"), combine)
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), combine), nprocs=2,
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
    if combine:  # the combiner changed the gradient in this run, on both sides alike
        rows = {run: list(csv.DictReader(open(tmp_path / run / "rank0" / "train.csv")))
                for run in ("single", "ddp")}
        assert any(float(r["extra/projected"]) or float(r["extra/capped"]) for r in rows["ddp"])
        for r, q in zip(rows["single"], rows["ddp"]):
            assert float(q["extra/grad_cos"]) == pytest.approx(float(r["extra/grad_cos"]), rel=1e-4)


# --- device resolution and unwrapping (one process) -----------------------------------


@pytest.mark.parametrize("cuda_available", [False, True])
def test_resolve_device_auto_follows_cuda_availability(monkeypatch, cuda_available):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)
    expected = torch.device("cuda:2") if cuda_available else torch.device("cpu")
    assert resolve_device("auto", local_rank=2) == expected
    assert resolve_device(local_rank=0) == (torch.device("cuda:0") if cuda_available
                                            else torch.device("cpu"))


def test_resolve_device_cuda_takes_the_local_rank_unless_indexed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda:3")
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda:1")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")


def test_resolve_device_refuses_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=f"device '{name}' requested but CUDA is not available"):
            resolve_device(name)
    with pytest.raises(RuntimeError):
        resolve_device("no-such-device")


def test_init_distributed_without_torchrun_is_one_process_on_the_resolved_device(monkeypatch):
    """Without WORLD_SIZE > 1 nothing is joined; "cuda" would be cuda:LOCAL_RANK."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("auto")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"))
    assert info.is_main and not info.distributed
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="MASTER_ADDR is unset"):
        init_distributed("cpu")


def test_init_distributed_passes_local_rank_to_resolve_device(monkeypatch):
    import fastfn.train.distributed as distributed
    seen = []
    monkeypatch.setattr(distributed, "resolve_device",
                        lambda name, local_rank: seen.append((name, local_rank)) or torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "5")
    distributed.init_distributed("cuda")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("RANK", "4")  # LOCAL_RANK defaults to RANK
    distributed.init_distributed("cuda")
    assert seen == [("cuda", 5), ("cuda", 4)]


def test_unwrap_model_strips_ddp_and_data_parallel_only():
    model = ToyRecon(drop_prob=0.0)
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model
    # fastfn.models.wrap keeps the user's network in ``.module``: not a wrapper to strip
    wrapped = wrap(torch.nn.Conv2d(1, 1, 3, padding=1))
    assert hasattr(wrapped, "module") and unwrap_model(wrapped) is wrapped


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_unwrap_model_of_a_ddp_wrapped_model(tmp_path):
    """A one-process gloo group: wrap_model DDP-wraps, unwrap_model gives the module back."""
    assert not torch.distributed.is_initialized()
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}",
                                         rank=0, world_size=1)
    try:
        model = ToyRecon(drop_prob=0.0)
        info = DistInfo(0, 2, 0, torch.device("cpu"))  # "distributed": wrap_model wraps
        ddp = wrap_model(model, info)
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        assert unwrap_model(ddp) is model
        assert unwrap_model(wrap_model(model, DistInfo())) is model
    finally:
        cleanup()
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_cleanup_waits_for_the_peers_only_on_a_normal_exit(tmp_path, monkeypatch):
    """A barrier before leaving on success (no rank tears down under a busy peer); none while
    an exception propagates (the peers may be stuck in a collective this rank won't join)."""
    calls = []
    real_barrier = torch.distributed.barrier
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: calls.append(1) or real_barrier(*a, **k))
    for attempt, fail in enumerate((False, True)):
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{attempt}'}",
                                             rank=0, world_size=1)
        with pytest.raises(ValueError) if fail else contextlib.nullcontext():
            try:
                if fail:
                    raise ValueError("a rank failed")
            finally:
                cleanup()
        assert not torch.distributed.is_initialized()
    assert calls == [1]
