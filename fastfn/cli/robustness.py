"""`fastfn evaluate-robustness`: compare models' clean quality and false negatives."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastfn.evaluation.robustness import AttackSettings
    d = AttackSettings()
    p = sub.add_parser(
        "evaluate-robustness", help="clean metrics and false-negative rates of several models",
        description="For each model and mask: clean NMSE/PSNR/SSIM (fastMRI convention) and the "
                    "false-negative rate (95%% Wilson interval) with the worst masked-NMSE "
                    "distribution under random search and the gradient attack, on the same "
                    "slices and feature draws for every model. Writes robustness.json, "
                    "robustness.md and PNG figures into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, metavar="PATH",
                   help="checkpoint of a model (repeat for several models)")
    p.add_argument("--name", action="append", default=None, metavar="NAME",
                   help="display name per --ckpt, in the same order")
    p.add_argument("--data", default=None,
                   help="folder of fastMRI .h5 files (default: the synthetic validation set)")
    p.add_argument("--masks", default="random:4x@0.08,random:8x@0.04",
                   help="mask settings, each starting with its kind")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--attacks", default="random,pgd", help="attacks to run: random, pgd")
    p.add_argument("--max-slices", type=int, default=64, help="slices per mask (0: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--family", default=d.family, help="feature family of the attack engine")
    p.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("MIN", "MAX"),
                   help="feature size range (random-walk steps)")
    p.add_argument("--restarts", type=int, default=d.random_restarts,
                   help="random search: features per slice")
    p.add_argument("--pgd-restarts", type=int, default=d.pgd_restarts)
    p.add_argument("--pgd-steps", type=int, default=d.pgd_steps)
    p.add_argument("--pgd-screen", type=int, default=d.pgd_screen,
                   help="gradient attack: start from the worst pgd-restarts of pgd-screen x "
                        "pgd-restarts scored random features (1: random starts)")
    p.add_argument("--pgd-step-size", type=float, default=d.pgd_step_size,
                   help="fraction of the intensity range per step")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="false negative when the worst masked NMSE >= this")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every feature draw")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from fastfn.evaluation.robustness import AttackSettings, evaluate_robustness
    if args.name is not None and len(args.name) != len(args.ckpt):
        raise ValueError(f"--name given {len(args.name)} times for {len(args.ckpt)} --ckpt")
    settings = AttackSettings(family=args.family, size=tuple(args.size),
                              random_restarts=args.restarts, pgd_restarts=args.pgd_restarts,
                              pgd_steps=args.pgd_steps, pgd_step_size=args.pgd_step_size,
                              pgd_screen=args.pgd_screen,
                              threshold=args.threshold, seed=args.seed)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    report = evaluate_robustness(
        args.ckpt, args.data, args.masks, args.out, settings=settings,
        attacks=[a.strip() for a in args.attacks.split(",") if a.strip()],
        max_slices=args.max_slices or None, batch_size=args.batch_size, device=device,
        progress=not args.no_progress, names=args.name)
    from pathlib import Path
    print((Path(args.out) / "robustness.md").read_text())
    print(f"wrote {Path(args.out) / 'robustness.json'}, robustness.md and "
          f"{len(report['figures'])} figures")
    return 0
