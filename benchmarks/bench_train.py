"""Training-step throughput of the built-in reconstructors through the Trainer.

    python benchmarks/bench_train.py --json bench_train.json [--size 128] [--batch 2]
        [--steps 5] [--device auto] [--models unet,cascade]

For each model (the model_config of configs/cpu_small_<model>.yaml unless --full), runs
--steps Trainer steps on random single-coil k-space (after one warm-up step) and
reports the median seconds per step and slices per second (CUDA: synchronised).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FULL = {"unet": {"chans": 32, "num_pool_layers": 4},
        "cascade": {"num_cascades": 5, "chans": 32, "num_convs": 5}}


def batches(size: int, batch: int, n: int, seed: int = 0):
    """Random single-coil batches in the fastfn batch layout, 4x-ish column masks."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        k = torch.randn(batch, size, size, dtype=torch.complex64, generator=g)
        mask = (torch.rand(batch, 1, size, generator=g) < 0.25).float()
        c = size // 2
        mask[..., c - 4:c + 4] = 1
        target = torch.rand(batch, size, size, generator=g)
        yield {"kspace": k, "masked_kspace": k * mask, "mask": mask, "target": target,
               "zero_filled": target, "max": target.amax(dim=(-2, -1)),
               "fname": [f"v{i}.h5"] * batch, "slice": torch.arange(batch),
               "num_low_frequencies": torch.full((batch,), 8)}


def bench(name: str, config: dict, size: int, batch: int, steps: int, device: str) -> dict:
    from fastfn.models import build_model
    from fastfn.train.config import TrainConfig
    from fastfn.train.trainer import Trainer
    cfg = TrainConfig().replace({"model": name, "steps": steps + 1, "progress": False,
                                 "tensorboard": False, "device": device})
    model = build_model(name, **config)
    trainer = Trainer(model, cfg, [], None)
    data = list(batches(size, batch, steps + 1))
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    trainer.train_step(data[0])
    times = []
    for b in data[1:]:
        sync()
        t = time.perf_counter()
        trainer.train_step(b)
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"model": name, "config": config, "size": size, "batch": batch,
            "params": sum(p.numel() for p in model.parameters()), "device": str(trainer.device),
            "median_s_per_step": med, "slices_per_s": batch / med, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True, help="output JSON file")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", default="unet,cascade")
    ap.add_argument("--full", action="store_true", help="the standard (large) configs")
    args = ap.parse_args()
    if args.full:
        configs = FULL
    else:
        from fastfn.train.config import load_config
        configs = {m: load_config(CONFIGS / f"cpu_small_{m}.yaml").model_config
                   for m in args.models.split(",")}
    results = [bench(m, configs[m], args.size, args.batch, args.steps, args.device)
               for m in args.models.split(",")]
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}
    args.json.write_text(json.dumps(out, indent=2))
    for r in results:
        print(f"{r['model']:8s} {r['params']:>9d} params  {r['median_s_per_step']:.3f} s/step  "
              f"{r['slices_per_s']:.1f} slices/s")


if __name__ == "__main__":
    main()
