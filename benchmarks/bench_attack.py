"""Throughput of the FNAF attack: fastfn vs the authors' host-side pipeline vs the bare model.

    python benchmarks/bench_attack.py [--device cpu|cuda] [--size 128] --json PATH

For the standard U-Net (32 channels, 4 pools) and a small one (8 channels, 3
pools), on the same synthetic slices, model and batch size, it measures features
evaluated per second of:

  (a) fastfn random search (``fastfn.attack.run_attack``, everything on the device);
  (b) the baseline: a re-implementation of the authors' pipeline - each feature a
      numpy random walk built per sample on the host, added to the magnitude
      image, acquisition simulated per sample with numpy FFTs (the authors' FFT of
      the perturbed magnitude image), the loss region by scipy binary dilation and
      connected-component labelling, the masked NMSE in numpy; only the model runs
      batched on the device;
  (c) the floor: the bare model forward over the same number of images (for the
      gradient attack: forward + backward w.r.t. the input).

It also times the gradient attack (PGD) against (c)'s forward + backward floor,
measures the scale-out of ``fastfn attack`` (one process vs ``torchrun`` with two,
each with one thread: on a 2-core CPU that is all the machine has, so it shows the
sharding at work, not what N GPUs give),
and runs the strength check: a small U-Net trained briefly on synthetic data,
attacked with PGD and with random search at an equal number of model
evaluations (forward passes); mean worst masked NMSE and FN rate of each.
Ratios are what to compare across machines; absolute rates depend on the load.
The contenders are timed in interleaved rounds (medians), so load drift on a
shared machine hits all of them alike.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_table, run_info, write_json_atomic  # noqa: E402

from fastfn.attack import AttackConfig, run_attack  # noqa: E402
from fastfn.data import KspaceTransform, SliceDataset, collate, parse_mask_spec, write_synthetic_dataset  # noqa: E402
from fastfn.models import build_model  # noqa: E402

MODELS = {"unet32x4": dict(chans=32, num_pool_layers=4), "unet8x3": dict(chans=8, num_pool_layers=3)}


def load_batches(folder: str, mask: str, batch_size: int, seeded_masks: bool = True) -> torch.utils.data.DataLoader:
    ds = SliceDataset(folder, KspaceTransform(parse_mask_spec(mask), use_seed=seeded_masks), metadata_cache=False)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=not seeded_masks, collate_fn=collate)


# ---- (b) the authors' host-side pipeline -----------------------------------------------------

def authors_random_walk(rng: np.random.Generator, image: np.ndarray, steps: int = 10,
                        box: tuple[int, int] = (50, 270)) -> np.ndarray:
    """One feature map, built the authors' way: a 4-connected random walk from a start in
    the margin box, each visited pixel given a value uniform in [min, max] of the image."""
    h, w = image.shape
    lo_r, hi_r = round(box[0] * h / 320), round(box[1] * h / 320)
    lo_c, hi_c = round(box[0] * w / 320), round(box[1] * w / 320)
    feat = np.zeros_like(image)
    r, c = rng.integers(lo_r, hi_r), rng.integers(lo_c, hi_c)
    vmin, vmax = float(image.min()), float(image.max())
    for _ in range(steps + 1):
        feat[r, c] = rng.uniform(vmin, vmax)
        dr, dc = ((0, 1), (0, -1), (1, 0), (-1, 0))[rng.integers(4)]
        r, c = min(max(r + dr, lo_r), hi_r - 1), min(max(c + dc, lo_c), hi_c - 1)
    return feat


def _fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def baseline_attack(model, batch, R: int, rng: np.random.Generator, device: torch.device) -> np.ndarray:
    """The authors' random search over one batch; returns the worst masked NMSE per slice."""
    targets = batch["target"].numpy()
    masks = batch["mask"].numpy()
    worst = []
    inputs, perturbed, regions = [], [], []
    for n in range(targets.shape[0]):
        for _ in range(R):
            feat = authors_random_walk(rng, targets[n])
            y = targets[n] + feat
            k = _fft2c(y.astype(np.complex64)) * masks[n]
            support = feat != 0
            region = ndimage.binary_dilation(support)           # 4-neighbour ring
            labels, count = ndimage.label(region)                # the feature's component(s)
            region = np.isin(labels, np.unique(labels[support]))
            inputs.append(k.astype(np.complex64))
            perturbed.append(y)
            regions.append(region)
    k = torch.from_numpy(np.stack(inputs)).to(device)
    mask = batch["mask"].repeat_interleave(R, 0).to(device)
    with torch.no_grad():
        pred = model(k, mask, targets.shape[-2:]).cpu().numpy()
    for i in range(len(inputs)):
        t, y = regions[i], perturbed[i]
        worst.append(((t * (y - pred[i])) ** 2).sum() / max(((t * y) ** 2).sum(), 1e-12))
    return np.array(worst).reshape(targets.shape[0], R).max(1)


# ---- measurements -----------------------------------------------------------------------------

def interleaved_ms(fns, repeats: int, device: torch.device) -> list[float]:
    """Median wall time (ms) of each fn, measured in rounds (fn1, fn2, ... per round)
    after one warm-up round, so that a shared machine's changing load hits every
    contender alike (timing them one after the other would put the drift into the ratios)."""
    def once(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 1e3 * (time.perf_counter() - t0)
    for fn in fns:
        once(fn)
    times = [[once(fn) for fn in fns] for _ in range(repeats)]
    return [float(np.median([t[i] for t in times])) for i in range(len(fns))]


def bench_model(name: str, batch, device, R: int, pgd_R: int, pgd_T: int, repeats: int) -> dict:
    model = build_model("unet", **MODELS[name]).to(device).eval()
    bdev = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    N = bdev["target"].shape[0]
    h, w = bdev["target"].shape[-2:]
    cfg = AttackConfig(random_restarts=R, pgd_restarts=pgd_R, pgd_steps=pgd_T, chunk=N * R)
    g = torch.Generator(device=device)

    pgd_cfg = cfg.replace(method="pgd")

    def fastfn_random():
        g.manual_seed(0)
        run_attack(model, bdev, cfg, g)

    def fastfn_pgd():
        g.manual_seed(0)
        run_attack(model, bdev, pgd_cfg, g)

    rng = np.random.default_rng(0)
    k_in = bdev["masked_kspace"].repeat_interleave(R, 0)
    m_in = bdev["mask"].repeat_interleave(R, 0)

    def floor_fwd():
        with torch.no_grad():
            model(k_in, m_in, (h, w))

    k_pgd = bdev["masked_kspace"].repeat_interleave(pgd_R, 0).clone().requires_grad_(True)
    m_pgd = bdev["mask"].repeat_interleave(pgd_R, 0)

    def floor_fwd_bwd():
        for _ in range(pgd_T):
            out = model(k_pgd, m_pgd, (h, w))
            torch.autograd.grad(out.sum(), k_pgd)
        with torch.no_grad():
            model(k_pgd, m_pgd, (h, w))

    t_a, t_b, t_c, t_p, t_pc = interleaved_ms(
        [fastfn_random, lambda: baseline_attack(model, batch, R, rng, device), floor_fwd, fastfn_pgd,
         floor_fwd_bwd], repeats, device)
    feats = N * R
    pgd_evals = N * pgd_R * (pgd_T + 1)
    return {
        "model": name, "slices": N, "size": [h, w], "restarts": R,
        "fastfn_random_features_per_s": feats / t_a * 1e3,
        "baseline_features_per_s": feats / t_b * 1e3,
        "floor_forward_images_per_s": feats / t_c * 1e3,
        "fastfn_vs_baseline": t_b / t_a,
        "fastfn_overhead_vs_floor": t_a / t_c - 1,
        "pgd_restarts": pgd_R, "pgd_steps": pgd_T,
        "fastfn_pgd_evals_per_s": pgd_evals / t_p * 1e3,
        "floor_fwd_bwd_evals_per_s": pgd_evals / t_pc * 1e3,
        "pgd_overhead_vs_floor": t_p / t_pc - 1,
        "ms": {"fastfn_random": t_a, "baseline": t_b, "floor_forward": t_c, "fastfn_pgd": t_p,
               "floor_fwd_bwd": t_pc},
    }


def train_small_unet(folder: str, device, steps: int, lr: float = 1e-3) -> torch.nn.Module:
    """A short L1 training of the small U-Net (8 ch, 3 pools) on random 4x masks."""
    torch.manual_seed(0)
    model = build_model("unet", **MODELS["unet8x3"]).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = load_batches(folder, "random:4x@0.08", 4, seeded_masks=False)
    done = 0
    while done < steps:
        for b in loader:
            pred = model(b["masked_kspace"].to(device), b["mask"].to(device), b["target"].shape[-2:])
            loss = torch.nn.functional.l1_loss(pred, b["target"].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


def strength_check(model, loader, device, pgd_R: int, pgd_T: int, screen: int = 3) -> dict:
    """PGD vs random search at an equal number of model evaluations per slice.

    Contenders, each with at most E = pgd_R * (pgd_T + 1) evaluations per slice: random
    search (E features), PGD from pgd_R random starts, and screened PGD (the worst R'
    of S' * R' scored random features, then T' steps: T' = pgd_T // 2, R' = E //
    (screen + T' + 1), S' = E // R' - T' - 1 >= screen, so R' (S' + T' + 1) <= E).
    """
    from fastfn.attack import attack_dataset
    evals = pgd_R * (pgd_T + 1)
    t_scr = max(1, pgd_T // 2)
    r_scr = max(1, evals // (screen + t_scr + 1))
    screen = max(screen, evals // r_scr - t_scr - 1)
    runs = {"random": ("random", evals, {}), "pgd": ("pgd", pgd_R, {}),
            "pgd_screened": ("pgd", r_scr, {"pgd_screen": screen, "pgd_steps": t_scr})}
    out = {}
    for key, (method, restarts, extra) in runs.items():
        cfg = AttackConfig(**{**dict(method=method, pgd_restarts=pgd_R, pgd_steps=pgd_T,
                                     random_restarts=evals, chunk=64), **extra}).with_restarts(restarts)
        res = attack_dataset(model, loader, cfg, device)
        s = res["summary"]
        out[key] = {k: s[k] for k in ("n_slices", "mean_worst_nmse", "median_worst_nmse", "fn_rate",
                                      "fn_rate_ci95", "info_preserved_rate", "model_evals")}
    out["pgd_screened"]["setting"] = {"starts": r_scr, "screen": screen, "steps": t_scr}
    out["evals_per_slice"] = evals
    for key in ("pgd", "pgd_screened"):
        out[f"{key}_mean_ge_random"] = out[key]["mean_worst_nmse"] >= out["random"]["mean_worst_nmse"]
        out[f"{key}_fn_rate_higher"] = out[key]["fn_rate"] > out["random"]["fn_rate"]
    return out


def scaling(folder: str, model, device, procs: Sequence[int], slices: int, repeats: int) -> dict:
    """Wall time of ``fastfn attack`` (random search) over the same slices with 1 and N
    processes (``python -m torch.distributed.run``, gloo on the CPU, one thread each),
    and whether the reports agree. Start-up (imports, process group) is included."""
    import json
    import subprocess
    from fastfn.train.checkpoint import save_model
    ckpt = f"{folder}/scaling_model.pt"
    save_model(model, ckpt)
    out: dict = {"slices": slices, "runs": {}}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for n in procs:
        times, reports = [], []
        for r in range(repeats):
            dest = f"{folder}/scaling_{n}_{r}"
            launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
                      if n > 1 else [sys.executable])
            cmd = launch + ["-m", "fastfn", "attack", "--ckpt", ckpt, "--data", f"{folder}/scaling_data",
                            "--max-slices", str(slices), "--batch-size", "2", "--panels", "0", "--no-progress",
                            "--device", str(device), "--out", dest]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            reports.append(json.load(open(f"{dest}/attack.json")))
        out["runs"][str(n)] = {"wall_seconds": statistics.median(times), "all": times,
                               "fn_rate": reports[0]["fn_rate"], "mean_worst_nmse": reports[0]["mean_worst_nmse"],
                               "world_size": reports[0]["world_size"]}
    base = out["runs"][str(procs[0])]
    for n in procs[1:]:
        r = out["runs"][str(n)]
        r["speedup_vs_1"] = base["wall_seconds"] / r["wall_seconds"]
        r["same_report"] = (r["fn_rate"], r["mean_worst_nmse"]) == (base["fn_rate"], base["mean_worst_nmse"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", required=True)
    ap.add_argument("--size", type=int, default=None, help="image size (default 128 on CPU, 320 on CUDA)")
    ap.add_argument("--slices", type=int, default=None, help="slices per batch (default 2 CPU, 8 CUDA)")
    ap.add_argument("--restarts", type=int, default=11)
    ap.add_argument("--pgd-restarts", type=int, default=4)
    ap.add_argument("--pgd-steps", type=int, default=3, help="PGD steps in the timing runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="unet32x4,unet8x3")
    ap.add_argument("--train-steps", type=int, default=300, help="steps of the strength check's training (0: skip)")
    ap.add_argument("--strength-slices", type=int, default=24)
    ap.add_argument("--strength-steps", type=int, default=10, help="PGD steps of the strength check")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--scaling-slices", type=int, default=16,
                    help="slices of the 1 vs 2 process scale-out run of `fastfn attack` (0: skip)")
    ap.add_argument("--scaling-procs", default="1,2", help="process counts of the scale-out run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (320 if cuda else 128)
    slices = args.slices or (8 if cuda else 2)
    result = {"info": run_info(device), "size": size, "slices_per_batch": slices, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(f"{tmp}/bench", volumes=1, slices=max(slices, 2), size=size, seed=7)
        batch = next(iter(load_batches(f"{tmp}/bench", "random:4x@0.08", slices)))
        for name in args.models.split(","):
            r = bench_model(name, batch, device, args.restarts, args.pgd_restarts, args.pgd_steps, args.repeats)
            result["results"].append(r)
            print_table([r], ["model", "fastfn_random_features_per_s", "baseline_features_per_s",
                              "floor_forward_images_per_s", "fastfn_vs_baseline", "fastfn_overhead_vs_floor",
                              "pgd_overhead_vs_floor"])
        if args.train_steps > 0:
            write_synthetic_dataset(f"{tmp}/train", volumes=4, slices=8, size=size, seed=0)
            write_synthetic_dataset(f"{tmp}/test", volumes=max(1, args.strength_slices // 8), slices=8,
                                    size=size, seed=2000)
            t0 = time.perf_counter()
            model = train_small_unet(f"{tmp}/train", device, args.train_steps)
            train_s = time.perf_counter() - t0
            loader = load_batches(f"{tmp}/test", "random:4x@0.08", 8)
            st = strength_check(model, loader, device, args.pgd_restarts, args.strength_steps)
            st.update({"model": "unet8x3", "train_steps": args.train_steps, "train_seconds": train_s})
            result["strength"] = st
            print({k: st[k] for k in ("random", "pgd", "pgd_screened", "evals_per_slice")})
        if args.scaling_slices > 0:
            write_synthetic_dataset(f"{tmp}/scaling_data", volumes=max(1, args.scaling_slices // 8), slices=8,
                                    size=size, seed=3000)
            torch.manual_seed(0)
            procs = [int(p) for p in args.scaling_procs.split(",")]
            sc = scaling(tmp, build_model("unet", **MODELS["unet8x3"]), device, procs, args.scaling_slices,
                         max(1, args.repeats // 2))
            result["scaling"] = sc
            print({n: {k: v for k, v in r.items() if k != "all"} for n, r in sc["runs"].items()})
    write_json_atomic(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
