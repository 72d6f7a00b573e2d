"""Attack evaluation across processes: `fastfn attack` and `fastfn evaluate-robustness` under
two gloo processes (the torchrun environment) write the reports one process writes."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from fastfn.attack import AttackConfig, FeatureConfig, attack_dataset
from fastfn.attack.runner import merge_results
from fastfn.cli import main
from fastfn.data import write_synthetic_dataset
from fastfn.models import build_model
from fastfn.train.checkpoint import save_model
from test_robust import make_batch

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _commands(root: str, out: str) -> list[list[str]]:
    common = ["--data", f"{root}/data", "--no-progress", "--device", "cpu", "--batch-size", "2",
              "--size", "3,5", "--margin", "3"]
    return [["attack", "--ckpt", f"{root}/a.pt", "--method", "pgd", "--pgd-restarts", "2", "--pgd-steps", "2",
             "--panels", "2", "--out", f"{out}/attack", *common],
            ["evaluate-robustness", "--ckpt", f"{root}/a.pt", "--ckpt", f"{root}/b.pt", "--masks", "random:4x@0.08",
             "--random-restarts", "3", "--pgd-restarts", "2", "--pgd-steps", "2", "--out", f"{out}/rob", *common]]


def _worker(rank: int, world: int, port: int, root: str, which: int) -> None:
    """One rank of a torchrun-like launch of command ``which``."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")})
    torch.set_num_threads(1)
    assert main(_commands(root, f"{root}/two")[which]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    write_synthetic_dataset(root / "data", volumes=2, slices=3, size=40, seed=0)   # 6 slices, 3 batches
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        model = build_model("unet", chans=4, num_pool_layers=1)
        save_model(model, root / f"{name}.pt")
    return root


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is unavailable")
def test_two_processes_write_the_single_process_reports(setup):
    root = str(setup)
    for cmd in _commands(root, f"{root}/one"):
        assert main(cmd) == 0
    for which in range(2):   # one launch per command, as torchrun would do
        ctx = mp.start_processes(_worker, args=(2, _free_port(), root, which), nprocs=2, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + 240
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.terminate()
                pytest.fail("the two processes did not finish within 240 s")
    one = json.loads((setup / "one" / "attack" / "attack.json").read_text())
    two = json.loads((setup / "two" / "attack" / "attack.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    for key in ("n_slices", "fn_rate", "fn_rate_ci95", "mean_worst_nmse", "median_worst_nmse", "model_evals"):
        assert one[key] == two[key], key
    assert ((setup / "one" / "attack" / "slices.jsonl").read_text()
            == (setup / "two" / "attack" / "slices.jsonl").read_text())
    r1 = json.loads((setup / "one" / "rob" / "robustness.json").read_text())
    r2 = json.loads((setup / "two" / "rob" / "robustness.json").read_text())
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r1["results"] == r2["results"]          # clean metrics, per-slice worst NMSE, FN rates, intervals
    assert r1["figures"] == r2["figures"]


def test_sharded_parts_merge_to_the_single_run():
    torch.manual_seed(0)
    model = build_model("unet", chans=4, num_pool_layers=1)
    batches = [make_batch(B=2, seed=s) for s in range(3)]
    cfg = AttackConfig(features=FeatureConfig(size=(3, 5), margin=3), random_restarts=3)
    whole = attack_dataset(model, batches, cfg, keep_worst=2, max_slices=5)
    parts = [attack_dataset(model, batches, cfg, keep_worst=2, max_slices=5, rank=r, world_size=2) for r in (0, 1)]
    assert [len(p["records"]) for p in parts] == [3, 2]           # batches 0, 2 (cut at 5 slices) and 1
    merged = merge_results(parts, cfg, "cpu", keep_worst=2)
    assert merged["records"] == whole["records"]
    assert [w["worst_nmse"] for w in merged["worst"]] == [w["worst_nmse"] for w in whole["worst"]]
    for key in ("n_slices", "fn_rate", "fn_rate_ci95", "model_evals", "mean_worst_nmse"):
        assert merged["summary"][key] == whole["summary"][key]
    with pytest.raises(ValueError, match="rank 2"):
        attack_dataset(model, batches, cfg, rank=2, world_size=2)
