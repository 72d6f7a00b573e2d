"""Robust training under DDP: two CPU processes (gloo) draw different features per rank,
and the robust term's gradients are still averaged, so both ranks end with the same weights."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")})
    torch.set_num_threads(1)
    from test_robust import make_batch

    from fastfn.models import build_model
    from fastfn.train.config import TrainConfig
    from fastfn.train.distributed import cleanup, init_distributed
    from fastfn.train.robust import RobustConfig, default_attack, make_robust_loss
    from fastfn.train.trainer import Trainer
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = build_model("unet", chans=4, num_pool_layers=1)
    cfg = TrainConfig(model="unet", model_config={"chans": 4, "num_pool_layers": 1}, steps=STEPS,
                      val_every=STEPS, progress=False, tensorboard=False, panels=0, device="cpu")
    batches = [make_batch(B=2, seed=10 * rank + s) for s in range(STEPS)]  # a shard per rank
    losses = []

    def robust(m, batch, step):
        loss, logs = inner(m, batch, step)
        losses.append(float(loss.detach()))
        return loss, logs

    inner = make_robust_loss(RobustConfig(attack=default_attack(method="pgd", size=(3, 6), pgd_steps=1)),
                             rank=rank)
    trainer = Trainer(model, cfg, batches, None, dist=info, extra_loss=robust)
    trainer.fit()
    torch.save({"params": [p.detach().clone() for p in model.parameters()], "losses": losses},
               os.path.join(out, f"rank{rank}.pt"))
    cleanup()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_ranks_stay_in_sync_under_robust_training(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["losses"] != r1["losses"]          # different data and feature draws per rank
    for p, q in zip(r0["params"], r1["params"]):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    torch.manual_seed(0)
    from fastfn.models import build_model
    init = list(build_model("unet", chans=4, num_pool_layers=1).parameters())
    assert any(float((p - q.detach()).abs().max()) > 1e-4 for p, q in zip(r0["params"], init))
