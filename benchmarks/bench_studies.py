"""Throughput of the robustness studies against the bare model on the same number of images.

    python benchmarks/bench_studies.py [--device cpu|cuda] [--size 128] --json PATH

For U-Nets (8 channels / 3 pools; on CUDA also 32 channels / 4 pools), on synthetic
slices under a 4x random mask (the CPU defaults are smaller so that a run takes minutes
on 2 shared cores: 128 px, stride 8, R = 2, 2 PGD steps):

  - the susceptibility map (``fastfn.attack.studies.susceptibility_map``) of one slice
    at stride ``--stride``: locations per second, with one random feature per location
    (R = 1) and with R = ``--restarts``, against the floor: the bare model forward over
    the same number of images (L * R, in the same chunks);
  - the map with the gradient attack (1 start, ``--pgd-steps`` steps per location)
    against ``--pgd-steps`` forward + backward passes and one forward of the same images;
  - the k-space noise attack (``kspace_noise_attack``, ``--noise-steps`` steps) over a
    batch against the same forward + backward floor.

Each ratio is the median over interleaved rounds of (study time / floor time) in the
same round (``_common.time_interleaved_ms``), so load drift on a shared machine
cancels; the target of the map is a ratio of at most 1.15 on the CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import paired_ratio, print_table, run_info, time_interleaved_ms, write_json_atomic  # noqa: E402

from fastfn.attack import AttackConfig, FeatureConfig  # noqa: E402
from fastfn.attack.studies import NoiseConfig, grid_locations, kspace_noise_attack, susceptibility_map  # noqa: E402
from fastfn.data import KspaceTransform, SliceDataset, collate, parse_mask_spec, write_synthetic_dataset  # noqa: E402
from fastfn.models import build_model  # noqa: E402

MODELS = {"unet32x4": dict(chans=32, num_pool_layers=4), "unet8x3": dict(chans=8, num_pool_layers=3)}


def load_batch(folder: str, n: int, device: torch.device) -> dict:
    ds = SliceDataset(folder, KspaceTransform(parse_mask_spec("random:4x@0.08"), use_seed=True), metadata_cache=False)
    mid = len(ds) // 2
    batch = collate([ds[i] for i in range(mid, mid + n)])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def forward_floor(model, k: torch.Tensor, m: torch.Tensor, crop, chunk: int):
    def run():
        with torch.no_grad():
            for s in range(0, k.shape[0], chunk):
                model(k[s:s + chunk], m[s:s + chunk], crop)
    return run


def fwd_bwd_floor(model, k: torch.Tensor, m: torch.Tensor, crop, chunk: int, steps: int):
    def run():
        for s in range(0, k.shape[0], chunk):
            x = k[s:s + chunk].clone().requires_grad_(True)
            for _ in range(steps):
                out = model(x, m[s:s + chunk], crop)
                torch.autograd.grad(out.sum(), x)
            with torch.no_grad():
                model(x, m[s:s + chunk], crop)
    return run


def bench_model(name: str, batch: dict, device: torch.device, args) -> dict:
    model = build_model("unet", **MODELS[name]).to(device).eval()
    one = {k: v[:1] if isinstance(v, torch.Tensor) and v.dim() > 0 else v[:1] if isinstance(v, list) else v
           for k, v in batch.items()}
    crop = tuple(one["target"].shape[-2:])
    base = AttackConfig(features=FeatureConfig(size=(args.walk, args.walk)), chunk=args.chunk)
    L = len(grid_locations(one["target"], base.features, args.stride)[0])
    fns, images = {}, {}
    for R in sorted({1, args.restarts}):
        cfg = base.replace(random_restarts=R)
        fns[f"map_random_R{R}"] = lambda cfg=cfg: susceptibility_map(model, one, cfg, args.stride)
        k = one["masked_kspace"].expand(L * R, *one["masked_kspace"].shape[1:]).contiguous()
        m = one["mask"].expand(L * R, *one["mask"].shape[1:]).contiguous()
        fns[f"floor_fwd_R{R}"] = forward_floor(model, k, m, crop, args.chunk)
        images[R] = L * R
    pgd_cfg = base.replace(method="pgd", pgd_restarts=1, pgd_steps=args.pgd_steps)
    fns["map_pgd"] = lambda: susceptibility_map(model, one, pgd_cfg, args.stride)
    k1 = one["masked_kspace"].expand(L, *one["masked_kspace"].shape[1:]).contiguous()
    m1 = one["mask"].expand(L, *one["mask"].shape[1:]).contiguous()
    fns["floor_fwd_bwd_pgd"] = fwd_bwd_floor(model, k1, m1, crop, args.chunk, args.pgd_steps)
    ncfg = NoiseConfig(steps=args.noise_steps, chunk=args.chunk)
    g = torch.Generator(device=device)

    def noise():
        g.manual_seed(0)
        kspace_noise_attack(model, batch, 0.01, ncfg, generator=g)
    fns["noise"] = noise
    fns["floor_fwd_bwd_noise"] = fwd_bwd_floor(model, batch["masked_kspace"], batch["mask"], crop, args.chunk,
                                               args.noise_steps)
    t = time_interleaved_ms(fns, args.repeats)
    med = {k: statistics.median(v) for k, v in t.items()}
    out = {"model": name, "size": list(crop), "stride": args.stride, "locations": L, "chunk": args.chunk,
           "ms": med}
    for R in images:
        out[f"map_R{R}_locations_per_s"] = L / med[f"map_random_R{R}"] * 1e3
        out[f"floor_R{R}_images_per_s"] = images[R] / med[f"floor_fwd_R{R}"] * 1e3
        out[f"map_R{R}_vs_floor"] = paired_ratio(t[f"map_random_R{R}"], t[f"floor_fwd_R{R}"])
    out["map_pgd_locations_per_s"] = L / med["map_pgd"] * 1e3
    out["map_pgd_vs_floor"] = paired_ratio(t["map_pgd"], t["floor_fwd_bwd_pgd"])
    out["noise_slices"] = int(batch["target"].shape[0])
    out["noise_vs_floor"] = paired_ratio(t["noise"], t["floor_fwd_bwd_noise"])
    out["map_R1_within_15pct"] = out["map_R1_vs_floor"] <= 1.15
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", required=True)
    ap.add_argument("--size", type=int, default=None, help="image size (default 128 on CPU, 320 on CUDA)")
    ap.add_argument("--stride", type=int, default=None, help="map stride (default 8 CPU, 4 CUDA)")
    ap.add_argument("--walk", type=int, default=10, help="random-walk steps of the mapped feature")
    ap.add_argument("--restarts", type=int, default=None,
                    help="random features per location of the second run (default 2 CPU, 4 CUDA)")
    ap.add_argument("--pgd-steps", type=int, default=None, help="PGD steps per location (default 2 CPU, 3 CUDA)")
    ap.add_argument("--noise-steps", type=int, default=5)
    ap.add_argument("--slices", type=int, default=None, help="slices of the noise batch (default 4 CPU, 16 CUDA)")
    ap.add_argument("--chunk", type=int, default=None, help="images per model call (default 32 CPU, 128 CUDA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=None, help="default unet8x3 on the CPU, unet32x4,unet8x3 on CUDA")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (320 if cuda else 128)
    args.chunk = args.chunk or (128 if cuda else 32)
    args.stride = args.stride or (4 if cuda else 8)
    args.restarts = args.restarts or (4 if cuda else 2)
    args.pgd_steps = args.pgd_steps or (3 if cuda else 2)
    args.models = args.models or ("unet32x4,unet8x3" if cuda else "unet8x3")
    slices = args.slices or (16 if cuda else 4)
    result = {"info": run_info(device), "size": size, "settings": {k: getattr(args, k) for k in (
        "stride", "walk", "restarts", "pgd_steps", "noise_steps", "chunk", "repeats")}, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(f"{tmp}/bench", volumes=1, slices=max(2 * slices, 4), size=size, seed=7)
        batch = load_batch(f"{tmp}/bench", slices, device)
        for name in args.models.split(","):
            r = bench_model(name, batch, device, args)
            result["results"].append(r)
            print_table([r], ["model", "locations", "map_R1_locations_per_s", "map_R1_vs_floor",
                              f"map_R{args.restarts}_vs_floor", "map_pgd_vs_floor", "noise_vs_floor"])
    write_json_atomic(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
