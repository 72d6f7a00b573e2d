"""Data-loading throughput: does the loader keep up with a U-Net training step?

Measures slices per second of ``SliceDataset`` + ``KspaceTransform`` (mask,
zero-filled image) + ``UnetNormalize`` over freshly generated synthetic knee
sets (single-coil and multi-coil, at the default 320 matrix), through a
``DataLoader`` with 0 and 2 workers, and the time of one fastMRI U-Net training
step (default 32 channels, 4 pools, batch 1, forward + L1 loss + backward + Adam)
on the same machine. The figure of merit is ``load_s_per_slice / step_s``: below
1 the loader is not what training waits for.

    python benchmarks/bench_data.py --json bench_data.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_table, run_info, write_json_atomic  # noqa: E402

from fastfn.data import (KspaceTransform, SliceDataset, UnetNormalize, collate,  # noqa: E402
                         parse_mask_spec, write_synthetic_dataset)


class UnetSampleTransform:
    """KspaceTransform followed by the U-Net normalisation of the zero-filled image."""

    def __init__(self, mask_spec: str):
        self.kspace = KspaceTransform(parse_mask_spec(mask_spec))
        self.norm = UnetNormalize()

    def __call__(self, *args):
        sample = self.kspace(*args)
        out = self.norm(sample["zero_filled"], sample["target"])
        sample["image"], sample["mean"], sample["std"] = out["image"], out["mean"], out["std"]
        return sample


def loader_rate(folder: Path, workers: int, mask: str, batch_size: int, passes: int) -> dict:
    """Slices/s over ``passes`` passes of the folder, median of the passes (the first
    batch of a pass, which includes worker start-up, is timed separately)."""
    ds = SliceDataset(folder, UnetSampleTransform(mask), metadata_cache=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate, persistent_workers=False)
    rates, first = [], []
    for _ in range(passes):
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        t1 = time.perf_counter()
        n = sum(len(batch["fname"]) for batch in it)
        t2 = time.perf_counter()
        rates.append(n / (t2 - t1) if n else float("nan"))
        first.append(t1 - t0)
    return {"workers": workers, "slices": len(ds), "first_batch_s": statistics.median(first),
            "slices_per_s": statistics.median(rates), "slices_per_s_passes": rates}


def unet_step_s(size: int, repeats: int) -> tuple[float, str]:
    """Median seconds of one U-Net training step at (size x size), batch 1, single-coil."""
    from fastfn.models import build_model
    model = build_model("unet")
    what = "fastfn.models U-Net (build_model('unet'): 32 chans, 4 pools)"

    def forward(k, m):
        return model(k, m, crop_size=(size, size))

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    k = torch.randn(1, size, size, dtype=torch.complex64)
    m = torch.ones(1, 1, size)
    target = torch.rand(1, size, size)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (forward(k, m) - target).abs().mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times), what


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write results to this JSON file")
    p.add_argument("--size", type=int, default=320, help="matrix size (default: fastMRI's 320)")
    p.add_argument("--volumes", type=int, default=3)
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--coils", type=int, default=8, help="coils of the multi-coil set")
    p.add_argument("--mask", default="random:4x@0.08,8x@0.04")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--passes", type=int, default=2, help="passes over each set per loader")
    p.add_argument("--step-repeats", type=int, default=3)
    args = p.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="fastfn_bench_data_") as tmp:
        gen = {}
        for name, coils in (("singlecoil", None), (f"multicoil{args.coils}", args.coils)):
            t = time.perf_counter()
            write_synthetic_dataset(Path(tmp) / name, args.volumes, args.slices, coils=coils,
                                    size=args.size, annotations=False)
            gen[name] = time.perf_counter() - t
            for workers in (0, 2):
                r = loader_rate(Path(tmp) / name, workers, args.mask, args.batch_size, args.passes)
                r["data"] = name
                rows.append(r)
                print(f"{name} workers={workers}: {r['slices_per_s']:.1f} slices/s", flush=True)
    step, what = unet_step_s(args.size, args.step_repeats)
    for r in rows:
        r["load_s_per_slice"] = 1.0 / r["slices_per_s"]
        r["load_over_unet_step"] = r["load_s_per_slice"] / step
    print_table(rows, ["data", "workers", "slices_per_s", "first_batch_s", "load_over_unet_step"])
    print(f"U-Net training step at {args.size}x{args.size}, batch 1: {step:.3f} s ({what})")
    result = {"benchmark": "data", "info": run_info(torch.device("cpu")),
              "cpu_count": os.cpu_count(), "size": args.size, "volumes": args.volumes,
              "slices": args.slices, "mask": args.mask, "batch_size": args.batch_size,
              "generate_s": gen, "loader": rows, "unet_step_s": step, "unet": what,
              "torch_threads": torch.get_num_threads(),
              "note": "shared, oversubscribed machine; compare the ratio, not absolute times. "
                      "DataLoader workers run with 1 torch thread, the main process with "
                      "torch_threads"}
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
