"""Benchmark of the feature kernels against their pure-PyTorch references and the floor.

    python benchmarks/bench_features.py [--device cpu|cuda] [--quick] --json PATH

Cases: N images of 320x320 (N = 64 by default), R candidate features each, 10-step
random walks (11 pixels):
  insert_features  fastfn.ops vs fastfn.reference (dense scatter + 3x3-cross
                   convolution dilation); floor: the copy of the N images into the
                   N x R output slots plus zeroing the region masks (what any
                   implementation must write);
  feature_step     one fused in-place projected sign step vs the reference's
                   gather / step / clamp / dense scatter (out of place); floor:
                   reading the gathered gradients (a gather of N*R*P values).
Writes {"info", "cases": [{"name", "fastfn_ms", "reference_ms", "floor_ms",
"speedup_vs_reference", "ratio_to_floor"}]}.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import print_table, run_info, time_ms, write_json_atomic  # noqa: E402

from fastfn import ops  # noqa: E402
from fastfn.attack.features import FeatureConfig, draw_supports  # noqa: E402
from fastfn.reference import features as ref  # noqa: E402


def inputs(N: int, R: int, size: int, device: torch.device):
    g = torch.Generator(device=device).manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, device=device), torch.linspace(-1, 1, size, device=device),
                            indexing="ij")
    images = ((yy ** 2 + xx ** 2) < 0.8).float().expand(N, size, size).contiguous()
    images = images * (0.5 + 0.5 * torch.rand(N, size, size, generator=g, device=device))
    index, _ = draw_supports(images, FeatureConfig(size=(10, 10)), R, g)
    values = torch.where(index >= 0, torch.rand(index.shape, generator=g, device=device), 0.0).contiguous()
    return images, index, values


def cases(N: int, R: int, size: int, device: torch.device, repeats: int) -> list[dict]:
    images, index, values = inputs(N, R, size, device)
    rows = []
    out = torch.empty(N, R, size, size, device=device)
    reg = torch.empty_like(out)

    def floor_insert():
        out.copy_(images.unsqueeze(1).expand_as(out))
        reg.zero_()

    t_f = time_ms(lambda: ops.insert_features(images, index, values, 1), repeats)
    t_r = time_ms(lambda: ref.insert_features(images, index, values, 1), repeats)
    t_0 = time_ms(floor_insert, repeats)
    rows.append({"name": f"insert_features N={N} R={R} {size}x{size} walk10", "fastfn_ms": t_f,
                 "reference_ms": t_r, "floor_ms": t_0})

    pert, _ = ops.insert_features(images, index, values, 1)
    grad = torch.randn_like(pert)
    lo = torch.zeros(N, R, device=device)
    hi = torch.ones(N, R, device=device)
    step = torch.full((N, R), 0.05, device=device)
    vals = values.clone()
    flat_grad = grad.view(N, R, -1)
    gidx = index.clamp_min(0)

    t_f = time_ms(lambda: ops.feature_step(pert, vals, index, grad, lo, hi, step), repeats)
    t_r = time_ms(lambda: ref.feature_step(pert, vals, index, grad, lo, hi, step), repeats)
    t_0 = time_ms(lambda: torch.gather(flat_grad, 2, gidx), repeats)
    rows.append({"name": f"feature_step N={N} R={R} {size}x{size} walk10", "fastfn_ms": t_f,
                 "reference_ms": t_r, "floor_ms": t_0})
    for r in rows:
        r["speedup_vs_reference"] = r["reference_ms"] / r["fastfn_ms"]
        r["ratio_to_floor"] = r["fastfn_ms"] / r["floor_ms"]
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true", help="N=8, 2 repeats (smoke run)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    N, reps = (8, 2) if args.quick else (args.images, args.repeats)
    rows = cases(N, args.restarts, args.size, device, reps)
    print_table(rows, ["name", "fastfn_ms", "reference_ms", "floor_ms", "speedup_vs_reference", "ratio_to_floor"])
    result = {"info": run_info(device), "quick": args.quick, "cases": rows}
    write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
